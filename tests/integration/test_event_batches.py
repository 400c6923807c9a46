"""Many provider events in one ApplyProviderEvents call: one transaction, the same outcomes and
the same state as the events sent one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client, catalog_service
from tests.support.provider import (
    MONTH,
    T0,
    invoice_event,
    session_event,
    subscription_event,
    ts,
)
from tests.support.waiting import eventually

HOUR = timedelta(hours=1)
ACCOUNTS = ("acct_1", "acct_2", "acct_9")


def mixed_events() -> list[pb.ProviderEvent]:
    """Repeats of one account and one subscription, a duplicate, an invoice found by its customer,
    an event that waits for its customer and the one that links it, a stale snapshot, a checkout
    session and a type not used."""
    return [
        subscription_event("evt_1", "sub_1", T0, event_type="customer.subscription.created"),
        subscription_event("evt_2", "sub_1", T0 + HOUR, start=T0, cancel_at_period_end=True),
        subscription_event("evt_3", "sub_2", T0, account_id="acct_2", customer_id="cus_2",
                           items=[("starter_monthly", 1)], event_type="customer.subscription.created"),
        subscription_event("evt_1", "sub_1", T0, event_type="customer.subscription.created"),
        invoice_event("evt_4", "in_1", "sub_1", T0, lines=[("pro_monthly", 1, T0, T0 + MONTH)]),
        subscription_event("evt_5", "sub_9a", T0, account_id=None, customer_id="cus_9"),
        subscription_event("evt_6", "sub_9b", T0, account_id="acct_9", customer_id="cus_9",
                           items=[("team_seats_monthly", 3)]),
        subscription_event("evt_7", "sub_2", T0 - HOUR, account_id="acct_2", customer_id="cus_2",
                           items=[("starter_monthly", 1)], status="trialing"),
        session_event("evt_8", "cs_1", T0, account_id="acct_2", customer_id="cus_2"),
        pb.ProviderEvent(provider_event_id="evt_9", type="charge.refunded", created=ts(T0), raw_payload=b"{}"),
    ]


@pytest.fixture
async def second_service(fresh_database_url: str) -> AsyncIterator[Client]:
    """A service over a database of its own (migrated at start-up), with the example catalog."""
    async with catalog_service(fresh_database_url) as client:
        yield client


def _outcomes(results: list[pb.EventResult]) -> list[tuple[str, str, str, str]]:
    return [(r.provider_event_id, pb.EventOutcome.Name(r.outcome), r.reason, r.account_id) for r in results]


async def _state(client: Client, account_id: str) -> pb.Entitlements:
    found = await client.entitlements(account_id, as_of=ts(T0 + 2 * HOUR))
    found.ClearField("revision")
    return found


async def test_a_batch_gives_the_outcomes_and_state_of_the_same_events_sent_one_by_one(
    service: Client, second_service: Client,
) -> None:
    together = await service.apply(*mixed_events())
    one_by_one = [result for event in mixed_events() for result in await second_service.apply(event)]
    assert _outcomes(together) == _outcomes(one_by_one)
    assert [pb.EventOutcome.Name(r.outcome) for r in together] == [
        "EVENT_OUTCOME_APPLIED", "EVENT_OUTCOME_APPLIED", "EVENT_OUTCOME_APPLIED", "EVENT_OUTCOME_DUPLICATE",
        "EVENT_OUTCOME_APPLIED", "EVENT_OUTCOME_REJECTED", "EVENT_OUTCOME_APPLIED", "EVENT_OUTCOME_STALE",
        "EVENT_OUTCOME_APPLIED", "EVENT_OUTCOME_IGNORED"]
    for account_id in ACCOUNTS:
        assert await _state(service, account_id) == await _state(second_service, account_id), account_id
    acct_9 = await _state(service, "acct_9")
    assert sorted(s.subscription_id for s in acct_9.subscriptions) == ["sub_9a", "sub_9b"]  # evt_5 adopted
    assert [f.grant_program_code for f in (await _state(service, "acct_1")).funding]  # the invoice funded


async def test_events_of_one_account_named_by_metadata_and_by_customer_apply_one_after_the_other(
    service: Client, second_service: Client,
) -> None:
    linked = subscription_event("evt_0", "sub_0", T0, customer_id="cus_z")
    batch = [subscription_event("evt_1", "sub_1", T0 + HOUR, customer_id="cus_y", items=[("team_seats_monthly", 2)]),
             subscription_event("evt_2", "sub_0", T0 + 2 * HOUR, account_id=None, customer_id="cus_z", start=T0,
                                cancel_at_period_end=True)]
    for client in (service, second_service):
        await client.apply(linked)
    together = await service.apply(*batch)
    one_by_one = [result for event in batch for result in await second_service.apply(event)]
    assert _outcomes(together) == _outcomes(one_by_one)
    assert [r.account_id for r in together] == ["acct_1", "acct_1"]
    state = await _state(service, "acct_1")
    assert state == await _state(second_service, "acct_1")
    assert sorted((p.subscription_id, p.billing_plan_code) for p in state.plans) == [("sub_0", "pro"),
                                                                                     ("sub_1", "team_seats")]


async def test_an_event_for_a_new_account_is_ordered_against_its_subscription_held_by_another(
    service: Client,
) -> None:
    """A batch of new accounts reads no account rows; the subscription an event names is still
    found wherever it is held."""
    await service.apply(subscription_event("evt_1", "sub_1", T0 + HOUR))
    older = subscription_event("evt_2", "sub_1", T0, account_id="acct_2", customer_id="cus_2")
    newer = subscription_event("evt_3", "sub_1", T0 + 2 * HOUR, account_id="acct_3", customer_id="cus_3")
    unrelated = subscription_event("evt_4", "sub_4", T0, account_id="acct_4", customer_id="cus_4")
    stale, unrelated_result = await service.apply(older, unrelated)
    assert (stale.outcome, stale.reason) == (pb.EVENT_OUTCOME_STALE, "older than the state held (from evt_1)")
    assert unrelated_result.outcome == pb.EVENT_OUTCOME_APPLIED
    [applied] = await service.apply(newer)
    assert applied.outcome == pb.EVENT_OUTCOME_APPLIED


async def test_each_event_of_a_batch_is_audited_under_its_own_id(service: Client, database_url: str) -> None:
    await service.apply(*mixed_events()[:3])
    conn = await asyncpg.connect(database_url)
    try:
        causes = {(r["cause_id"], r["entity"], r["action"]) for r in await conn.fetch(
            "SELECT cause_id, entity, action FROM audit_log WHERE entity = 'subscription'")}
    finally:
        await conn.close()
    assert causes == {("evt_1", "subscription", "upsert"), ("evt_2", "subscription", "upsert"),
                      ("evt_3", "subscription", "upsert")}


async def test_an_event_whose_customer_is_linked_to_another_account_is_rejected_naming_both(
    service: Client, database_url: str,
) -> None:
    await service.apply(subscription_event("evt_x", "sub_x", T0, account_id="acct_x", customer_id="cus_shared"))
    good_a = subscription_event("evt_a", "sub_a", T0, account_id="acct_a", customer_id="cus_a")
    # metadata.account_id names acct_y, but the customer paying is acct_x's: a typo, or worse.
    misnamed = subscription_event("evt_y", "sub_y", T0, account_id="acct_y", customer_id="cus_shared")
    good_b = subscription_event("evt_b", "sub_b", T0, account_id="acct_b", customer_id="cus_b")
    results = await service.apply(good_a, misnamed, good_b)
    assert _outcomes(results) == [
        ("evt_a", "EVENT_OUTCOME_APPLIED", "", "acct_a"),
        ("evt_y", "EVENT_OUTCOME_REJECTED",
         "customer_linked_elsewhere: customer cus_shared is linked to account acct_x, not acct_y", ""),
        ("evt_b", "EVENT_OUTCOME_APPLIED", "", "acct_b")]
    assert not (await service.entitlements("acct_y")).plans
    assert [p.subscription_id for p in (await service.entitlements("acct_x")).plans] == ["sub_x"]
    [again] = await service.apply(misnamed)  # kept: a redelivery is a duplicate
    assert again.outcome == pb.EVENT_OUTCOME_DUPLICATE
    conn = await asyncpg.connect(database_url)
    try:  # the event is kept under the account it named; no account was made for it
        named = await conn.fetchval("SELECT account_id FROM provider_events WHERE provider_event_id = 'evt_y'")
        assert named == "acct_y"
        assert await conn.fetchval("SELECT count(*) FROM accounts WHERE account_id = 'acct_y'") == 0
    finally:
        await conn.close()


async def _waiting_on_a_lock(database_url: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND wait_event_type = 'Lock'"))
    finally:
        await conn.close()


async def test_when_a_batch_cannot_commit_every_other_event_still_applies(service: Client, database_url: str) -> None:
    good_a = subscription_event("evt_a", "sub_a", T0, account_id="acct_a", customer_id="cus_a")
    raced = subscription_event("evt_y", "sub_y", T0, account_id="acct_y", customer_id="cus_shared")
    good_b = subscription_event("evt_b", "sub_b", T0, account_id="acct_b", customer_id="cus_b")
    other = await asyncpg.connect(database_url)
    try:
        # Another transaction links the customer to another account and commits only once the
        # batch waits on it: the batch's own link then meets the unique constraint.
        linking = other.transaction()
        await linking.start()
        await other.execute("INSERT INTO accounts (account_id, provider_customer_id) VALUES ('acct_x', 'cus_shared')")
        applying = asyncio.create_task(service.apply(good_a, raced, good_b))
        await eventually(lambda: _waiting_on_a_lock(database_url), what="the batch to wait for the other link")
        await linking.commit()
        results = await applying
    finally:
        await other.close()
    assert [pb.EventOutcome.Name(r.outcome) for r in results] == [
        "EVENT_OUTCOME_APPLIED", "EVENT_OUTCOME_REJECTED", "EVENT_OUTCOME_APPLIED"]
    assert results[1].reason.startswith("customer_linked_elsewhere: customer cus_shared is linked to account acct_x")
    for account_id in ("acct_a", "acct_b"):
        assert [p.billing_plan_code for p in (await service.entitlements(account_id)).plans] == ["pro"]
    again = await service.apply(good_a, good_b)
    assert [r.outcome for r in again] == [pb.EVENT_OUTCOME_DUPLICATE, pb.EVENT_OUTCOME_DUPLICATE]


async def test_a_catalog_change_through_one_replica_is_used_by_the_others_next_event(
    two_replicas: tuple[Client, Client],
) -> None:
    first, second = two_replicas
    [warm] = await first.apply(subscription_event("evt_1", "sub_1", T0))  # the first replica holds the catalog
    assert warm.outcome == pb.EVENT_OUTCOME_APPLIED
    new_price = pb.PriceSnapshot(price_id="price_pro_v2", product_id="pro", active=True, currency="usd",
                                 unit_amount=2500, interval="month", interval_count=1, provider_updated_at=ts(T0))
    await second.operator.UpsertCatalog(pb.UpsertCatalogRequest(prices=[new_price]))
    [result] = await first.apply(subscription_event("evt_2", "sub_2", T0, account_id="acct_2", customer_id="cus_2",
                                                    price_ids={"pro_monthly": "price_pro_v2"}))
    assert result.outcome == pb.EVENT_OUTCOME_APPLIED, result.reason
    assert [p.billing_plan_code for p in (await first.entitlements("acct_2")).plans] == ["pro"]


async def test_first_events_of_one_new_account_racing_on_two_connections_all_apply(service: Client) -> None:
    pairs = [(subscription_event(f"evt_{n}_a", f"sub_{n}_a", T0, account_id=f"acct_r{n}", customer_id=f"cus_r{n}"),
              subscription_event(f"evt_{n}_b", f"sub_{n}_b", T0, account_id=f"acct_r{n}", customer_id=f"cus_r{n}",
                                 items=[("team_seats_monthly", 1)]))
             for n in range(150)]
    results = await asyncio.gather(*(service.apply(event) for pair in pairs for event in pair))
    assert {r.outcome for [r] in results} == {pb.EVENT_OUTCOME_APPLIED}
    for n in range(150):
        subscriptions = (await service.entitlements(f"acct_r{n}")).subscriptions
        assert sorted(s.subscription_id for s in subscriptions) == [f"sub_{n}_a", f"sub_{n}_b"]
