"""Retention of provider events: `provider_events` is partitioned by the provider's time, and a
retention run folds each month past EVENT_PAYLOAD_RETENTION_DAYS into the compact archive without
the raw payloads, except those of rejected events. Derivation, support traces, replays and
deduplication work on what is kept, exactly as before.

The events are applied with provider times from now on, in this month's partition and the ones
made ahead of it (and, for one, in the default partition past them), and the run is told it is
200 days later: those months are then wholly past the 90 days, as a year-old database's would be.
One more event, from long ago, lands in the archive at once, as an event replayed from the
provider's list would."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY

from entitlement_service.db import retention
from entitlement_service.service.catalog import rederive_queued
from entitlement_service.service.retention import run_once
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Client, Stack, start_checkout, start_service, stop_service
from tests.integration.test_replay import gold_catalog
from tests.integration.test_unreadable_events import replay_unreadable
from tests.support.fake_provider import FakeProvider
from tests.support.pg import execute
from tests.support.provider import example_catalog_request, invoice_event, subscription_event, ts
from tests.support.waiting import eventually

DAY = timedelta(days=1)
RETENTION = timedelta(days=90)
NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW + timedelta(minutes=1)  # in this month's partition, or the next one's
PRUNED_AT = NOW + 200 * DAY  # when the retention run is told it runs
RECENT = PRUNED_AT - DAY  # past the partitions made ahead now: in the default partition until then
ANCIENT = NOW - 400 * DAY  # before every month partition: in the archive at once
APPLIED, REJECTED, IGNORED, DUPLICATE = (pb.EVENT_OUTCOME_APPLIED, pb.EVENT_OUTCOME_REJECTED,
                                         pb.EVENT_OUTCOME_IGNORED, pb.EVENT_OUTCOME_DUPLICATE)


def month_start(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def partition_of(at: datetime) -> str:
    return f"provider_events_{month_start(at):%Y_%m}"


def stripe_subscription(event_id: str, at: datetime, account: str) -> dict[str, Any]:
    """A signed webhook body as the provider sends it: a Pro subscription created at `at`."""
    t, end = int(at.timestamp()), int((at + 30 * DAY).timestamp())
    item = {"id": f"si_{account}", "object": "subscription_item", "quantity": 1, "created": t,
            "current_period_start": t, "current_period_end": end,
            "price": {"id": "price_pro_monthly", "object": "price", "product": "pro", "active": True,
                      "currency": "usd", "unit_amount": 2000, "recurring": {"interval": "month", "interval_count": 1},
                      "lookup_key": "pro_monthly", "metadata": {}}}
    return {"id": event_id, "object": "event", "type": "customer.subscription.created", "created": t,
            "api_version": "2026-08-27", "data": {"object": {
                "id": f"sub_{account}", "object": "subscription", "customer": f"cus_{account}", "status": "active",
                "created": t, "start_date": t, "cancel_at_period_end": False, "metadata": {"account_id": account},
                "items": {"object": "list", "data": [item]}}}}


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    """Both services over one database, the example catalog loaded under the price ids the events
    name; the entitlement service runs no retention of its own (the test runs it)."""
    entitlement = await start_service(database_url, env={"EVENT_RETENTION_INTERVAL_S": "0"})
    catalog = example_catalog_request()
    await entitlement.operator.UpsertCatalog(catalog)
    provider = FakeProvider()
    for product in catalog.products:  # what the checkout service completes a webhook's products from
        await provider.create_product({"id": product.product_id, "name": product.name, "active": True,
                                       "metadata": dict(product.metadata)})
    checkout = await start_checkout(entitlement, provider)
    try:
        async with aiohttp.ClientSession() as http:
            yield Stack(entitlement, checkout, provider, http)
    finally:
        await checkout.stop(0)
        await stop_service(entitlement)


def history() -> list[pb.ProviderEvent]:
    """Account acct_1's events: a Pro subscription paid for two months, a cancellation taken back,
    a renewal long after; and an unpaid invoice from long before (ignored)."""
    start, second, later = OLD, OLD + 30 * DAY, RECENT
    return [
        invoice_event("evt_ancient", "in_0", "sub_1", ANCIENT, paid=False, event_type="invoice.created"),
        subscription_event("evt_created", "sub_1", start, event_type="customer.subscription.created",
                           period_end=second),
        invoice_event("evt_paid_1", "in_1", "sub_1", start, lines=[("pro_monthly", 1, start, second)]),
        subscription_event("evt_cancelling", "sub_1", start + 20 * DAY, start=start, period_end=second,
                           cancel_at_period_end=True),
        subscription_event("evt_resumed", "sub_1", start + 25 * DAY, start=start, period_end=second),
        subscription_event("evt_renewed", "sub_1", second, start=start, period_end=second + 30 * DAY),
        invoice_event("evt_paid_2", "in_2", "sub_1", second, lines=[("pro_monthly", 1, second, second + 30 * DAY)]),
        subscription_event("evt_recent", "sub_1", later, start=start, period_end=later + 30 * DAY),
        invoice_event("evt_paid_recent", "in_3", "sub_1", later, lines=[("pro_monthly", 1, later, later + 30 * DAY)]),
    ]


AS_OF = (OLD + 10 * DAY, OLD + 22 * DAY, OLD + 45 * DAY, RECENT + DAY / 2)


async def account_state(client: Client, account: str = "acct_1") -> list[tuple[pb.Entitlements, Any]]:
    """What GetEntitlements and ExplainAccount answer for the account at each of AS_OF."""
    support = client.as_role(Role.SUPPORT)
    return [(await client.entitlements(account, ts(at)),
             await support.ExplainAccount(pb.ExplainAccountRequest(account_id=account, as_of=ts(at))))
            for at in AS_OF]


def without_revision(state: list[tuple[pb.Entitlements, Any]]) -> list[tuple[bytes, bytes]]:
    found = []
    for entitlements, explained in state:
        e, x = pb.Entitlements(), pb.ExplainAccountResponse()
        e.CopyFrom(entitlements)
        x.CopyFrom(explained)
        e.ClearField("revision")
        x.entitlements.ClearField("revision")
        found.append((e.SerializeToString(deterministic=True), x.SerializeToString(deterministic=True)))
    return found


async def stored(database_url: str) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return {r["provider_event_id"]: r for r in await conn.fetch(
            "SELECT provider_event_id, tableoid::regclass::text AS partition, outcome, deliveries, payload, snapshot "
            "FROM provider_events")}
    finally:
        await conn.close()


async def layout(database_url: str) -> tuple[list[retention.Month], str, int]:
    """The month partitions, the archive's bounds and the rows the default partition holds."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        bounds = await conn.fetchval("SELECT pg_get_expr(relpartbound, oid) FROM pg_class "
                                     "WHERE relname = 'provider_events_archive'")
        return (await retention.months(conn), bounds,
                await conn.fetchval("SELECT count(*) FROM provider_events_default"))
    finally:
        await conn.close()


async def test_pruning_drops_old_raw_payloads_and_derivation_tracing_replay_and_deduplication_still_work(
    stack: Stack, database_url: str
) -> None:
    service, operator = stack.entitlement, stack.entitlement.operator
    applied = await service.apply(*history())
    assert [r.outcome for r in applied] == [IGNORED, *[APPLIED] * 8]
    # Rejected, and old: unknown price; and a webhook that could not be read (its raw body kept).
    [gold] = await service.apply(subscription_event("evt_gold", "sub_gold", OLD + 2 * DAY, items=[("gold_monthly", 1)],
                                                    account_id="acct_2", customer_id="cus_2"))
    assert gold.outcome == REJECTED and gold.reason.startswith("unknown_price")
    unreadable_body = json.dumps(stripe_subscription("evt_unreadable", OLD + 3 * DAY, "acct_u")).encode()
    unreadable = pb.ProviderEvent(provider_event_id="evt_unreadable", type="customer.subscription.created",
                                  created=ts(OLD + 3 * DAY), raw_payload=unreadable_body,
                                  unreadable_reason="as the normalizer of then saw it")
    assert (await service.apply(unreadable))[0].outcome == REJECTED
    # Through the checkout service, as the provider delivers it.
    hook = stripe_subscription("evt_hook", OLD + 4 * DAY, "acct_h")
    assert (await stack.webhook(hook))[1]["outcome"] == "applied"

    before = await stored(database_url)
    assert before["evt_recent"]["partition"] == "provider_events_default"
    state = await account_state(service)
    support = service.as_role(Role.SUPPORT)
    trace = await support.TracePurchase(pb.TracePurchaseRequest(subscription_id="sub_1"))
    pruned_before = REGISTRY.get_sample_value("provider_event_payloads_pruned_total") or 0

    done = await run_once(database_url, 5, RETENTION, PRUNED_AT)

    # The layout: every month wholly past the 90 days folded into the archive; the months from the
    # one holding the horizon on, made ahead past the run; nothing left in the default partition.
    assert done is not None
    horizon = PRUNED_AT - RETENTION
    months, archive_bounds, in_default = await layout(database_url)
    assert months[0].start == month_start(horizon) and months[-1].start == month_start(PRUNED_AT + 62 * DAY)
    assert all(m.end == n.start for m, n in itertools.pairwise(months))
    assert 4 <= len(months) <= 6
    assert archive_bounds == f"FOR VALUES FROM (MINVALUE) TO ('{month_start(horizon):%Y-%m-%d} 00:00:00+00')"
    assert in_default == 0
    folded, start = 0, month_start(NOW)
    while start < month_start(horizon):
        folded, start = folded + 1, next_month(start)
    old_ids = {"evt_created", "evt_paid_1", "evt_cancelling", "evt_resumed", "evt_renewed", "evt_paid_2", "evt_hook"}
    assert (done.partitions_folded, done.events_archived, done.payloads_kept) == (folded, len(old_ids) + 2, 2)
    assert done.payloads_dropped == len(old_ids) + 1  # and evt_ancient's, in the archive
    assert (REGISTRY.get_sample_value("provider_event_payloads_pruned_total") or 0) - pruned_before == (
        done.payloads_dropped)

    # What was dropped and what was kept.
    after = await stored(database_url)
    assert set(after) == set(before)
    for event_id in [*old_ids, "evt_ancient"]:
        assert (after[event_id]["partition"], after[event_id]["payload"]) == ("provider_events_archive", None)
    for event_id in ("evt_gold", "evt_unreadable"):  # rejected: kept whatever their age
        assert after[event_id]["partition"] == "provider_events_archive"
        assert after[event_id]["payload"] == before[event_id]["payload"]
    assert bytes(after["evt_unreadable"]["payload"]) == unreadable_body
    for event_id in ("evt_recent", "evt_paid_recent"):
        assert after[event_id]["partition"] == partition_of(RECENT)
        assert after[event_id]["payload"] == before[event_id]["payload"] is not None
    for event_id, row in after.items():
        assert (row["outcome"], row["deliveries"], row["snapshot"]) == (
            before[event_id]["outcome"], before[event_id]["deliveries"], before[event_id]["snapshot"]), event_id

    # Reads answer exactly as before, and the support trace lists every event with its outcome.
    assert await account_state(service) == state
    assert await support.TracePurchase(pb.TracePurchaseRequest(subscription_id="sub_1")) == trace
    assert sorted((e.provider_event_id, e.outcome) for e in trace.events) == sorted(
        (e.provider_event_id, r.outcome) for e, r in zip(history(), applied, strict=True))

    # Duplicates of pruned events are still duplicates, counted where the event lies.
    again = await service.apply(*history()[:3])
    assert [r.outcome for r in again] == [DUPLICATE] * 3
    assert (await stack.webhook(hook))[1]["outcome"] == "duplicate"
    rows = await stored(database_url)
    assert set(rows) == set(before)
    assert [rows[i]["deliveries"] for i in ("evt_ancient", "evt_created", "evt_paid_1", "evt_hook")] == [2, 2, 2, 2]
    assert await account_state(service) == state

    # Derived again from its stored snapshots alone (its assignments and bindings dropped first, as
    # the rebuild a catalog change queues): the same state.
    await execute(database_url, "DELETE FROM plan_assignments WHERE account_id = 'acct_1'",
                  "DELETE FROM grant_bindings WHERE account_id = 'acct_1'",
                  "INSERT INTO catalog_rederive (account_id, cause_id) VALUES ('acct_1', 'catalog@test')")
    assert await rederive_queued(service.running.runtime.deps) == 1
    rederived = await account_state(service)
    assert rederived[0][0].plans and rederived[0][0].revision > state[0][0].revision
    assert without_revision(rederived) == without_revision(state)

    # The old rejected events apply once what rejected them is fixed, from what was kept.
    await operator.UpsertCatalog(gold_catalog())
    replayed = await operator.ReplayEvents(pb.ReplayEventsRequest(provider_event_ids=["evt_gold"]))
    assert [(e.provider_event_id, e.outcome) for e in replayed.events] == [("evt_gold", APPLIED)]
    assert [p.billing_plan_code for p in (await service.entitlements("acct_2", ts(OLD + 10 * DAY))).plans] == ["gold"]
    renormalized = await replay_unreadable(stack, provider_event_ids=["evt_unreadable"])
    assert [(e.provider_event_id, e.outcome) for e in renormalized.events] == [("evt_unreadable", APPLIED)]
    assert [p.billing_plan_code for p in (await service.entitlements("acct_u", ts(OLD + 10 * DAY))).plans] == ["pro"]


async def test_the_service_prunes_on_its_own_every_interval(database_url: str) -> None:
    service = await start_service(database_url, env={"EVENT_RETENTION_INTERVAL_S": "0.2"})
    try:
        long_ago = NOW - 120 * DAY
        await service.operator.UpsertCatalog(example_catalog_request())
        results = await service.apply(
            invoice_event("evt_unpaid", "in_1", "sub_1", long_ago, paid=False, event_type="invoice.created"),
            subscription_event("evt_gold", "sub_gold", long_ago, items=[("gold_monthly", 1)]))
        assert [r.outcome for r in results] == [IGNORED, REJECTED]

        async def pruned() -> bool:
            rows = await stored(database_url)
            return rows["evt_unpaid"]["payload"] is None

        await eventually(pruned, what="the service's own retention run to prune the old payload")
        rows = await stored(database_url)
        assert rows["evt_gold"]["payload"] is not None and rows["evt_unpaid"]["snapshot"] is not None
    finally:
        await stop_service(service)


async def test_one_replica_runs_the_retention_at_a_time(database_url: str) -> None:
    skipped = REGISTRY.get_sample_value("event_retention_runs_total", {"result": "skipped"}) or 0
    async with retention.maintenance_connection(database_url, 5) as running:
        assert await retention.try_lock(running)
        assert await run_once(database_url, 5, RETENTION, NOW) is None
    assert REGISTRY.get_sample_value("event_retention_runs_total", {"result": "skipped"}) == skipped + 1
    assert await run_once(database_url, 5, RETENTION, NOW) is not None  # its connection closed: released


async def test_a_reconciliation_event_read_again_later_is_the_same_event(service: Client, database_url: str) -> None:
    """Its id hashes the state read and its time is the read's: the same state read again comes
    with a later time, and is still recorded once."""
    first = subscription_event("recon_sub_1_abc", "sub_1", NOW - 5 * DAY, event_type="reconciliation.subscription")
    [recorded] = await service.apply(first)
    assert recorded.outcome == APPLIED
    read_again = pb.ProviderEvent()
    read_again.CopyFrom(first)
    read_again.created.CopyFrom(ts(NOW))
    read_again.received_at.CopyFrom(ts(NOW))
    [again] = await service.apply(read_again)
    assert again.outcome == DUPLICATE
    rows = await stored(database_url)
    assert rows["recon_sub_1_abc"]["deliveries"] == 2 and len(rows) == 1
