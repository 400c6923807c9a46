"""Concurrency and coherence: duplicates racing, two subscriptions racing for one group, two
replicas sharing one database, watchers, and a database that drops connections."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import asyncpg
import grpc
import pytest

from entitlement_service.service.events import ATTEMPTS
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client
from tests.support.provider import T0, subscription_event
from tests.support.waiting import eventually


async def test_two_concurrent_applies_of_one_event_id_give_one_applied_and_one_duplicate(service: Client) -> None:
    event = subscription_event("evt_race", "sub_1", T0)
    first, second = await asyncio.gather(service.apply(event), service.apply(event))
    assert sorted([first[0].outcome, second[0].outcome]) == [pb.EVENT_OUTCOME_APPLIED, pb.EVENT_OUTCOME_DUPLICATE]
    assert len((await service.entitlements()).plans) == 1


@pytest.mark.parametrize("round_", range(3))
async def test_two_subscriptions_racing_into_one_non_stackable_group_leave_exactly_one_effective(
    service: Client, database_url: str, round_: int
) -> None:
    starter = subscription_event("evt_a", "sub_a", T0, items=[("starter_monthly", 1)])
    pro = subscription_event("evt_b", "sub_b", T0, items=[("pro_monthly", 1)])
    await asyncio.gather(service.apply(starter), service.apply(pro))
    plans = (await service.entitlements()).plans
    winners = [p for p in plans if not p.conflict]
    losers = [p for p in plans if p.conflict]
    assert [p.subscription_id for p in winners] == ["sub_b"]  # pro outranks starter
    assert [(p.subscription_id, p.conflict_with_subscription_id) for p in losers] == [("sub_a", "sub_b")]
    conn = await asyncpg.connect(database_url)
    try:
        overlapping = await conn.fetchval(
            """SELECT count(*) FROM plan_assignments a JOIN plan_assignments b
               ON a.account_id = b.account_id AND a.subscription_group = b.subscription_group
              AND a.subscription_id < b.subscription_id AND a.effective && b.effective
               WHERE NOT a.stackable AND NOT a.conflict AND NOT b.conflict""")
        mismatches = await conn.fetch("SELECT kind, subscription_id FROM mismatches WHERE closed_at IS NULL")
    finally:
        await conn.close()
    assert overlapping == 0
    # The precedence conflict, and (both live, both paying) the duplicate the group's conflict policy acts on.
    assert sorted((m["kind"], m["subscription_id"]) for m in mismatches) == [
        ("duplicate_subscription_in_group", "sub_a"), ("group_conflict", "sub_a")]


async def test_a_change_applied_through_one_replica_reaches_the_others_gate_cache(
    two_replicas: tuple[Client, Client],
) -> None:
    first, second = two_replicas
    check = pb.CheckGateRequest(account_id="acct_1", gate="api_access")
    assert not (await second.product.CheckGate(check)).allowed  # now cached as denied on the second replica
    started = time.perf_counter()
    await first.apply(subscription_event("evt_1", "sub_1", T0))
    applied = time.perf_counter()

    async def allowed_on_second() -> bool:
        return bool((await second.product.CheckGate(check)).allowed)

    await eventually(allowed_on_second, timeout_s=5, what="the second replica to see the change")
    seen = time.perf_counter()
    print(f"propagation: apply {1000 * (applied - started):.1f} ms, seen {1000 * (seen - applied):.1f} ms later")
    ended = T0 + timedelta(hours=1)
    await first.apply(subscription_event("evt_2", "sub_1", ended, start=T0, status="canceled", ended_at=ended))

    async def denied_on_second() -> bool:
        return not (await second.product.CheckGate(check)).allowed

    await eventually(denied_on_second, timeout_s=5, what="the second replica to see the cancellation")


async def test_a_watcher_gets_the_state_now_then_each_change(two_replicas: tuple[Client, Client]) -> None:
    first, second = two_replicas
    stream = second.product.WatchEntitlements(pb.WatchEntitlementsRequest(account_id="acct_1"))
    initial = await asyncio.wait_for(stream.read(), 5)
    assert initial.initial and not initial.entitlements.plans
    await first.apply(subscription_event("evt_1", "sub_1", T0))
    changed = await asyncio.wait_for(stream.read(), 5)
    assert not changed.initial and [p.billing_plan_code for p in changed.entitlements.plans] == ["pro"]
    assert changed.entitlements.revision > initial.entitlements.revision
    stream.cancel()


async def test_many_watchers_each_hear_a_change(two_replicas: tuple[Client, Client]) -> None:
    first, second = two_replicas
    streams = [second.product.WatchEntitlements(pb.WatchEntitlementsRequest(account_id="acct_1")) for _ in range(50)]
    await asyncio.gather(*(asyncio.wait_for(s.read(), 10) for s in streams))
    await first.apply(subscription_event("evt_1", "sub_1", T0))
    updates = await asyncio.gather(*(asyncio.wait_for(s.read(), 10) for s in streams))
    assert all(u.entitlements.gate_bundle == "pro" for u in updates)
    for s in streams:
        s.cancel()


async def test_a_connection_dropped_on_every_attempt_answers_unavailable_and_the_retry_applies_it(
    service: Client, database_url: str
) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0))
    blocker = await asyncpg.connect(database_url)
    admin = await asyncpg.connect(database_url)  # outside the blocker's transaction, which freezes pg_stat_activity
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM accounts WHERE account_id = 'acct_1' FOR UPDATE")
        upgrade = subscription_event("evt_2", "sub_1", T0 + timedelta(hours=1), items=[("pro_yearly", 1)])
        call = asyncio.ensure_future(service.apply(upgrade))
        dropped: set[int] = set()

        async def blocked_backend() -> int | None:
            return await admin.fetchval("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                        "AND datname = current_database() AND NOT pid = ANY($1::int[])",
                                        list(dropped))

        for _ in range(ATTEMPTS):  # the service retries a dropped transaction; drop every attempt
            pid = await eventually(blocked_backend, what="the event's transaction to wait on the account lock")
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            dropped.add(pid)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        await holding.rollback()
    finally:
        await blocker.close()
        await admin.close()
    [retried] = await service.apply(upgrade)
    assert retried.outcome == pb.EVENT_OUTCOME_APPLIED  # nothing was half-written by the dropped attempts
    assert [p.price_id for p in (await service.entitlements()).grant_bindings] == ["price_pro_yearly"]


async def test_watchers_read_through_their_own_share_of_connections(service: Client) -> None:
    watchers = service.running.runtime.watchers
    share = watchers.reading()
    held = 0
    while not share.locked():  # the test holds the whole share
        await share.acquire()
        held += 1
    try:
        stream = service.product.WatchEntitlements(pb.WatchEntitlementsRequest(account_id="acct_1"))
        first = asyncio.ensure_future(stream.read())

        async def watching() -> bool:
            return len(watchers) == 1

        await eventually(watching, what="the stream to start")
        assert not first.done()  # its first read waits for the share...
        assert (await service.product.CheckGate(pb.CheckGateRequest(account_id="acct_1", gate="api_access"))
                ).revision == 0  # ...while other calls still get connections
    finally:
        for _ in range(held):
            share.release()
    initial = await asyncio.wait_for(first, 5)
    assert initial.initial
    stream.cancel()
