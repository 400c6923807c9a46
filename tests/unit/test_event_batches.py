"""The checkout service's event batcher, against a stand-in for ApplyProviderEvents that the test
holds open and releases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest
import structlog

from checkout_service.errors import InvalidRequest, Unavailable
from checkout_service.event_batches import EventBatcher
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.support.waiting import eventually


class HeldCalls:
    """Records each call's event ids and answers it when the test releases it: refused as the
    entitlement service refuses a call with an event in `refuse`, or failing with `shared_failure`
    when it carries more than one event."""

    def __init__(self, refuse: set[str] | None = None, shared_failure: Exception | None = None) -> None:
        self.calls: list[list[str]] = []
        self.request_ids: list[object] = []
        self.release = asyncio.Event()
        self.refuse = refuse or set()
        self.shared_failure = shared_failure

    def started(self, count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(self.calls) >= count
        return check

    async def send(self, events: Sequence[pb.ProviderEvent]) -> list[pb.EventResult]:
        ids = [e.provider_event_id for e in events]
        self.calls.append(ids)
        self.request_ids.append(structlog.contextvars.get_contextvars().get("request_id"))
        await self.release.wait()
        if self.refuse & set(ids):
            bad = next(i for i, event_id in enumerate(ids) if event_id in self.refuse)
            raise InvalidRequest(f"events[{bad}].created is required")
        if self.shared_failure is not None and len(ids) > 1:
            raise self.shared_failure
        return [pb.EventResult(provider_event_id=i, outcome=pb.EVENT_OUTCOME_APPLIED, reason=f"for {i}") for i in ids]


def event(n: int) -> pb.ProviderEvent:
    return pb.ProviderEvent(provider_event_id=f"evt_{n}")


async def test_an_event_goes_at_once_on_its_own_call_carrying_its_callers_request_id() -> None:
    held = HeldCalls()
    held.release.set()
    batcher = EventBatcher(held.send, max_in_flight=2)
    structlog.contextvars.bind_contextvars(request_id="req_1")
    try:
        result = await batcher.apply(event(1))
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    assert result.reason == "for evt_1"
    assert held.calls == [["evt_1"]] and held.request_ids == ["req_1"]


async def busy_then(batcher: EventBatcher, held: HeldCalls, more: int) -> list[asyncio.Task[pb.EventResult]]:
    """evt_0's call in flight on its own, then evt_1 to evt_<more> arriving while it is."""
    first = asyncio.create_task(batcher.apply(event(0)))
    await eventually(held.started(1), what="the first event to go alone")
    return [first, *(asyncio.create_task(batcher.apply(event(n))) for n in range(1, more + 1))]


async def test_events_arriving_while_the_calls_are_busy_share_the_next_call_and_each_gets_its_own_result() -> None:
    held = HeldCalls()
    batcher = EventBatcher(held.send, max_in_flight=1, max_batch=3)
    waiting = await busy_then(batcher, held, 5)
    assert held.calls == [["evt_0"]]
    held.release.set()
    results = await asyncio.gather(*waiting)
    assert [r.reason for r in results] == [f"for evt_{n}" for n in range(6)]
    assert held.calls == [["evt_0"], ["evt_1", "evt_2", "evt_3"], ["evt_4", "evt_5"]]
    assert held.request_ids[1:] == [None, None]  # a shared call carries no one caller's request id


async def test_a_shared_call_refused_for_one_event_is_sent_again_one_event_per_call() -> None:
    held = HeldCalls(refuse={"evt_2"})
    batcher = EventBatcher(held.send, max_in_flight=1)
    waiting = await busy_then(batcher, held, 3)
    held.release.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert [o.reason if isinstance(o, pb.EventResult) else str(o) for o in outcomes] == [
        "for evt_0", "for evt_1", "events[0].created is required", "for evt_3"]
    assert held.calls[1] == ["evt_1", "evt_2", "evt_3"]
    assert sorted(held.calls[2:]) == [["evt_1"], ["evt_2"], ["evt_3"]]


@pytest.mark.parametrize("failure", [
    Unavailable("the entitlement service is unavailable; retry shortly"),  # down, slow or overloaded
    ConnectionError("connection reset"),  # a failure that names no event
])
async def test_a_shared_call_that_fails_otherwise_fails_every_caller_at_once_and_sends_nothing_more(
    failure: Exception,
) -> None:
    held = HeldCalls(shared_failure=failure)
    batcher = EventBatcher(held.send, max_in_flight=1, max_batch=3)
    waiting = await busy_then(batcher, held, 5)
    held.release.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(outcomes[0], pb.EventResult) and outcomes[0].reason == "for evt_0"
    assert all(o is failure for o in outcomes[1:])  # the same error, so each webhook answers alike
    # One call per batch, as before the failure: none of its events was sent again on its own.
    assert held.calls == [["evt_0"], ["evt_1", "evt_2", "evt_3"], ["evt_4", "evt_5"]]


async def test_events_read_in_the_same_turn_of_the_loop_share_the_call_that_is_leaving() -> None:
    held = HeldCalls()
    held.release.set()
    batcher = EventBatcher(held.send, max_in_flight=2, max_batch=3)
    structlog.contextvars.bind_contextvars(request_id="req_1")
    try:
        results = await asyncio.gather(*(batcher.apply(event(n)) for n in range(5)))
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    assert [r.reason for r in results] == [f"for evt_{n}" for n in range(5)]
    # Three in the first call (its batch is full), the other two in the second free call.
    assert held.calls == [["evt_0", "evt_1", "evt_2"], ["evt_3", "evt_4"]]
    assert held.request_ids == [None, None]  # shared: no one caller's request id


async def test_a_caller_that_goes_away_while_others_join_its_call_still_has_their_events_sent() -> None:
    held = HeldCalls()
    held.release.set()
    batcher = EventBatcher(held.send, max_in_flight=1)
    leaving = asyncio.create_task(batcher.apply(event(0)))
    joined = [asyncio.create_task(batcher.apply(event(n))) for n in (1, 2)]
    await asyncio.sleep(0)  # the first caller is letting the loop turn; the others have joined
    leaving.cancel()
    results = await asyncio.gather(*joined)
    assert [r.reason for r in results] == ["for evt_1", "for evt_2"]
    assert held.calls == [["evt_1", "evt_2"]]
    after = await batcher.apply(event(3))  # the call it counted was given back
    assert after.reason == "for evt_3" and held.calls[-1] == ["evt_3"]


class StartedCalls:
    """A stand-in that, as the service's channel does, starts each call when it is called; each is
    answered when the test releases it. `order` records each start and each answer its caller got."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.release: list[asyncio.Event] = []

    def send(self, events: Sequence[pb.ProviderEvent]) -> Awaitable[list[pb.EventResult]]:
        self.order.append("sent " + " ".join(e.provider_event_id for e in events))
        released = asyncio.Event()
        self.release.append(released)

        async def answer() -> list[pb.EventResult]:
            await released.wait()
            return [pb.EventResult(provider_event_id=e.provider_event_id) for e in events]
        return answer()


async def test_the_next_call_is_sent_before_the_answered_callers_go_on() -> None:
    calls = StartedCalls()
    batcher = EventBatcher(calls.send, max_in_flight=1)

    async def caller(n: int) -> None:
        result = await batcher.apply(event(n))
        calls.order.append(f"answered {result.provider_event_id}")

    alone = asyncio.create_task(caller(0))
    await eventually(lambda: _true(len(calls.release) == 1), what="evt_0 sent alone")
    shared = [asyncio.create_task(caller(n)) for n in (1, 2)]
    await asyncio.sleep(0)  # one turn of the loop: both wait for the call in flight
    calls.release[0].set()
    await eventually(lambda: _true(len(calls.release) == 2), what="the waiting events sent")
    later = asyncio.create_task(caller(3))
    await asyncio.sleep(0)  # evt_3 waits for the call in flight
    calls.release[1].set()
    await eventually(lambda: _true(len(calls.release) == 3), what="evt_3 sent")
    calls.release[2].set()
    await asyncio.gather(alone, *shared, later)
    assert calls.order == ["sent evt_0", "sent evt_1 evt_2", "answered evt_0",
                           "sent evt_3", "answered evt_1", "answered evt_2", "answered evt_3"]


async def test_a_shared_call_that_cannot_start_fails_its_callers_and_frees_its_slot() -> None:
    calls = StartedCalls()
    refusing = True

    def send(events: Sequence[pb.ProviderEvent]) -> Awaitable[list[pb.EventResult]]:
        if len(events) > 1 and refusing:
            raise Unavailable("the channel is closed")
        return calls.send(events)

    batcher = EventBatcher(send, max_in_flight=1)
    first = asyncio.create_task(batcher.apply(event(0)))
    await eventually(lambda: _true(len(calls.release) == 1), what="evt_0 sent alone")
    shared = [asyncio.create_task(batcher.apply(event(n))) for n in (1, 2)]
    await asyncio.sleep(0)  # one turn of the loop: both wait for the call in flight
    calls.release[0].set()
    outcomes = await asyncio.gather(first, *shared, return_exceptions=True)
    assert [o.provider_event_id if isinstance(o, pb.EventResult) else str(o) for o in outcomes] == [
        "evt_0", "the channel is closed", "the channel is closed"]
    refusing = False
    after = asyncio.create_task(batcher.apply(event(3)))
    await eventually(lambda: _true(len(calls.release) == 2), what="evt_3 sent on the freed slot")
    calls.release[1].set()
    assert (await after).provider_event_id == "evt_3"


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("in_flight", [1, 2, 3, None])
async def test_no_more_calls_than_allowed_are_ever_in_flight(in_flight: int | None) -> None:
    """None: the service's own limit, two calls (docs/architecture.md)."""
    busy = peak = 0

    async def send(events: Sequence[pb.ProviderEvent]) -> list[pb.EventResult]:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        await asyncio.sleep(0)
        busy -= 1
        return [pb.EventResult(provider_event_id=e.provider_event_id) for e in events]

    batcher = EventBatcher(send) if in_flight is None else EventBatcher(send, max_in_flight=in_flight)
    results = await asyncio.gather(*(batcher.apply(event(n)) for n in range(50)))
    assert [r.provider_event_id for r in results] == [f"evt_{n}" for n in range(50)]
    assert peak == (2 if in_flight is None else in_flight)
