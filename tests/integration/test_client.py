"""selfserve.client against the real entitlement service over a real socket: the cache filled on
first use and kept fresh by one multiplexed watch stream, window boundaries honoured locally,
the LRU bound, resuming after a reconnect, and never an answer older than max_staleness_s when
the stream is cut."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from selfserve.client import BlockingEntitlementsClient, EntitlementsClient
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Client
from tests.support.provider import subscription_event
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import TOKENS
from tests.support.waiting import eventually

TOKEN = TOKENS[Role.PRODUCT]
WATCH_PATH = b"/selfserve.entitlement.v1.EntitlementService/WatchEntitlements"


class _Counter:
    def __init__(self, calls: dict[str, int]) -> None:
        self.calls = calls

    def count(self, details: Any) -> None:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.calls[method] = self.calls.get(method, 0) + 1


class _UnaryCounter(_Counter, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Callable[..., Awaitable[Any]], details: Any,
                                    request: Any) -> Any:
        self.count(details)
        return await continuation(details, request)


class _StreamCounter(_Counter, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Callable[..., Awaitable[Any]], details: Any,
                                     request: Any) -> Any:
        self.count(details)
        return await continuation(details, request)


@dataclass
class Counting:
    """Counts the client's calls by method (grpc.aio takes one interceptor per kind of call)."""

    calls: dict[str, int] = field(default_factory=dict)

    @property
    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        return [_UnaryCounter(self.calls), _StreamCounter(self.calls)]

    def unary(self) -> int:
        return sum(n for method, n in self.calls.items() if not method.endswith("/WatchEntitlements"))


def now() -> datetime:
    return datetime.now(UTC)


async def subscribe(service: Client, account_id: str, event_id: str, *, subscription: str | None = None,
                    items: tuple[tuple[str, int], ...] = (("pro_monthly", 1),), cancel_at: datetime | None = None,
                    status: str = "active", ended_at: datetime | None = None, at: datetime | None = None) -> None:
    """Gives the account a subscription, or changes it (through the service, as the checkout
    service would)."""
    at = at or now() - timedelta(minutes=30)
    event = subscription_event(event_id, subscription or f"sub_{account_id}", at, items=items,
                               account_id=account_id, customer_id=f"cus_{account_id}",
                               start=now() - timedelta(hours=1), cancel_at=cancel_at, status=status,
                               ended_at=ended_at)
    results = await service.apply(event)
    assert results[0].outcome == pb.EVENT_OUTCOME_APPLIED, results


async def cancel(service: Client, account_id: str, event_id: str, *, subscription: str | None = None,
                 at: datetime | None = None) -> None:
    ended = at or now() - timedelta(minutes=1)
    await subscribe(service, account_id, event_id, subscription=subscription, status="canceled", ended_at=ended,
                    at=ended)


@pytest.fixture
async def counting() -> Counting:
    return Counting()


@pytest.fixture
async def client(service: Client, counting: Counting) -> AsyncIterator[EntitlementsClient]:
    async with EntitlementsClient(f"127.0.0.1:{service.running.port}", TOKEN, max_staleness_s=2.0,
                                  interceptors=counting.interceptors) as c:
        yield c


async def held(client: EntitlementsClient, account_id: str, gate: str, expected: bool | None = None) -> None:
    async def answered() -> bool:
        answer = client.cached(account_id, gate)
        return answer is not None and (expected is None or answer == expected)

    await eventually(answered, what=f"{account_id} held in-process")


async def test_the_first_check_asks_checkgate_and_the_stream_then_fills_the_cache(
        service: Client, client: EntitlementsClient, counting: Counting) -> None:
    await subscribe(service, "acct_1", "evt_1")
    assert client.cached("acct_1", "api_access") is None
    assert await client.check("acct_1", "api_access") is True
    assert counting.unary() == 1
    await held(client, "acct_1", "api_access", True)
    assert counting.calls == {"/selfserve.entitlement.v1.EntitlementService/CheckGate": 1,
                              "/selfserve.entitlement.v1.EntitlementService/WatchEntitlements": 1}
    for _ in range(100):
        assert await client.check("acct_1", "api_access") is True
        assert await client.check("acct_1", "no_such_gate") is False
    assert counting.unary() == 1  # every later answer came from the process
    entitlements = await client.entitlements("acct_1")
    assert entitlements.gate_bundle == "pro" and counting.unary() == 1


async def test_a_committed_change_reaches_every_connected_client_quickly(service: Client) -> None:
    clients = [EntitlementsClient(f"127.0.0.1:{service.running.port}", TOKEN) for _ in range(3)]
    try:
        for c in clients:
            assert await c.check("acct_1", "api_access") is False
        for c in clients:
            await held(c, "acct_1", "api_access", False)
        delays = []
        for round_ in range(5):
            expected = round_ % 2 == 0
            started = time.monotonic()
            at = now() - timedelta(minutes=20 - round_)  # each event later than the one before
            if expected:
                await subscribe(service, "acct_1", f"evt_{round_}", subscription=f"sub_{round_}", at=at)
            else:
                await cancel(service, "acct_1", f"evt_{round_}", subscription=f"sub_{round_ - 1}", at=at)

            async def everywhere(want: bool = expected) -> bool:
                return all(c.cached("acct_1", "api_access") is want for c in clients)

            await eventually(everywhere, timeout_s=5, what="the change to reach every client")
            delays.append(time.monotonic() - started)
        print(f"commit to every client: worst {1000 * max(delays):.1f} ms")
        assert max(delays) < 1.0
    finally:
        for c in clients:
            await c.close()


async def test_a_plan_ending_at_a_boundary_flips_the_local_answer_then_without_a_call(
        service: Client, client: EntitlementsClient, counting: Counting) -> None:
    boundary = now() + timedelta(seconds=1.5)
    await subscribe(service, "acct_1", "evt_1", cancel_at=boundary)
    assert await client.check("acct_1", "api_access") is True
    await held(client, "acct_1", "api_access", True)
    calls = counting.unary()
    edge = boundary.timestamp()
    seen: list[tuple[float, float, bool | None]] = []

    async def past_the_boundary() -> bool:
        before = time.time()
        answer = client.cached("acct_1", "api_access")
        seen.append((before, time.time(), answer))
        return before > edge + 0.1

    await eventually(past_the_boundary, timeout_s=5, what="the boundary to pass")
    for before, after, answer in seen:
        if after < edge:
            assert answer is True
        if before >= edge:
            assert answer is False  # given locally from the schedule: no call was made
    assert any(before >= edge for before, _, _ in seen)
    assert counting.unary() == calls


async def test_the_cache_holds_at_most_max_accounts_least_recently_used_evicted(
        service: Client, counting: Counting) -> None:
    async with EntitlementsClient(f"127.0.0.1:{service.running.port}", TOKEN, max_accounts=3,
                                  interceptors=counting.interceptors) as client:
        for n in range(5):
            await client.check(f"acct_{n}", "export")

        async def last_three() -> bool:
            return client.watched == {"acct_2", "acct_3", "acct_4"}

        await eventually(last_three, what="the stream to cover the three most recently used accounts")
        await held(client, "acct_4", "export")
        assert client.cached("acct_0", "export") is None
        await client.check("acct_2", "export")  # used again: acct_3 is now the least recently used
        await client.check("acct_5", "export")

        async def moved_on() -> bool:
            return client.watched == {"acct_4", "acct_2", "acct_5"}

        await eventually(moved_on, what="acct_3 to be evicted")


async def test_many_accounts_share_one_stream(service: Client, client: EntitlementsClient,
                                              counting: Counting) -> None:
    watchers = service.running.runtime.watchers
    accounts = [f"acct_{n}" for n in range(40)]
    await subscribe(service, "acct_7", "evt_1")
    await asyncio.gather(*(client.check(a, "api_access") for a in accounts))

    async def all_covered() -> bool:
        return client.watched == set(accounts) and watchers.streams == 1

    await eventually(all_covered, what="one stream to cover every account")
    assert len(watchers) == len(accounts)  # the one stream watches each account once
    for a in accounts:
        await held(client, a, "api_access")
    assert client.cached("acct_7", "api_access") is True and client.cached("acct_8", "api_access") is False
    assert watchers.streams == 1


@pytest.fixture
async def proxy(service: Client) -> AsyncIterator[TcpProxy]:
    relay = await TcpProxy(f"grpc://client@127.0.0.1:{service.running.port}").start()
    yield relay
    await relay.close()


def through(proxy: TcpProxy) -> str:
    return f"127.0.0.1:{urlsplit(proxy.url).port}"


async def test_a_change_made_while_the_stream_was_down_arrives_once_after_it_resumes(
        service: Client, proxy: TcpProxy, counting: Counting) -> None:
    await subscribe(service, "acct_1", "evt_1")
    await subscribe(service, "acct_2", "evt_2")
    async with EntitlementsClient(through(proxy), TOKEN, max_staleness_s=1.0,
                                  interceptors=counting.interceptors) as client:
        changing, steady = client.watch("acct_1"), client.watch("acct_2")
        first = await asyncio.wait_for(anext(changing), 5)
        steady_first = await asyncio.wait_for(anext(steady), 5)
        opened = client.stats.streams_opened
        assert proxy.black_hole(WATCH_PATH) == 1  # the stream's connection goes silent, nothing else
        await cancel(service, "acct_1", "evt_3")
        revision = (await service.entitlements("acct_1")).revision
        proxy.restore()
        received = await asyncio.wait_for(anext(changing), 10)  # after the client reconnected on its own
        assert client.stats.streams_opened > opened
        assert received.revision == revision > first.revision and received.gate_bundle == ""
        await held(client, "acct_1", "api_access", False)
        assert client.cached("acct_2", "api_access") is True
        # Nothing more: the change is not received twice, and the unchanged account is not sent again.
        more = asyncio.ensure_future(anext(changing))
        again = asyncio.ensure_future(anext(steady))
        await subscribe(service, "acct_3", "evt_4")  # a later change elsewhere, to give the stream a chance
        await held(client, "acct_2", "api_access", True)
        assert not more.done() and not again.done()
        more.cancel()
        again.cancel()
        assert steady_first.revision == (await service.entitlements("acct_2")).revision


async def test_a_cut_stream_never_gives_an_answer_older_than_max_staleness(
        service: Client, proxy: TcpProxy, counting: Counting) -> None:
    max_staleness_s = 1.0
    await subscribe(service, "acct_1", "evt_1")
    async with EntitlementsClient(through(proxy), TOKEN, max_staleness_s=max_staleness_s,
                                  interceptors=counting.interceptors) as client:
        assert await client.check("acct_1", "api_access") is True
        await held(client, "acct_1", "api_access", True)
        calls = counting.unary()
        assert proxy.black_hole(WATCH_PATH) == 1  # and every watch stream opened again stays silent
        cut_at = time.monotonic()
        await cancel(service, "acct_1", "evt_2")  # the truth changes while the stream is cut
        changed_at = time.monotonic()
        answers: list[tuple[float, bool, bool]] = []  # (when, answer, from the process)

        async def long_enough() -> bool:
            local = client.cached("acct_1", "api_access")
            answers.append((time.monotonic(), await client.check("acct_1", "api_access"), local is not None))
            return time.monotonic() > changed_at + 3 * max_staleness_s

        await eventually(long_enough, timeout_s=10, what="three times max_staleness_s to pass")
        for when, answer, local in answers:
            if when > changed_at + max_staleness_s:
                assert answer is False  # never the old answer once it is older than max_staleness_s
            if local:
                assert when <= cut_at + max_staleness_s + 0.05
        assert any(not local for _, _, local in answers)
        assert counting.unary() > calls  # answered by CheckGate meanwhile
        assert client.stats.stream_failures > 0
        proxy.restore()
        await held(client, "acct_1", "api_access", False)  # the stream is back
        calls = counting.unary()
        assert await client.check("acct_1", "api_access") is False
        assert counting.unary() == calls


async def test_the_blocking_client_answers_from_its_own_thread(service: Client) -> None:
    await subscribe(service, "acct_1", "evt_1")

    def use() -> tuple[bool, bool, str]:
        with BlockingEntitlementsClient(f"127.0.0.1:{service.running.port}", TOKEN) as blocking:
            first = blocking.check("acct_1", "api_access")
            deadline = time.monotonic() + 10
            while blocking.client.cached("acct_1", "api_access") is None and time.monotonic() < deadline:
                blocking.check("acct_1", "api_access")
            return first, blocking.check("acct_1", "priority_support"), blocking.entitlements("acct_1").gate_bundle

    assert await asyncio.to_thread(use) == (True, True, "pro")


async def test_preview_is_a_thin_call(client: EntitlementsClient) -> None:
    preview = await client.preview("acct_1", items=[("pro_monthly", 1)])
    assert not preview.problems and preview.entitlements.gate_bundle == "pro"
    with pytest.raises(ValueError, match="exactly one"):
        await client.preview("acct_1")
