"""The statements that carry rules, against real PostgreSQL, each test in a transaction that is
rolled back: linking accounts (and adopting the events that waited for them), recording events
once, writing derived rows and reading them back as the same typed values."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from catalog_rules.model import Cadence, Source
from entitlement_service.db import accounts, derived, events, history, purchases, support
from entitlement_service.db.pool import init_connection
from entitlement_service.domain import event_policy as policy
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.funding import DIFFERENCE, PERIOD, Issue
from entitlement_service.domain.model import Mode, Outcome, PurchaseState, Status
from entitlement_service.domain.records import (
    AccountAssignment,
    AccountBinding,
    AccountItem,
    AuditEntry,
    EventResult,
    HistoryEntry,
    Issuance,
    PurchaseRecord,
    RecordedEvent,
    SubscriptionRecord,
    TransitionRecord,
)
from entitlement_service.domain.timeline import AssignmentRow, BindingRow, Earlier, ItemRow
from entitlement_service.domain.windows import Window

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
async def db(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    await init_connection(conn)
    yield conn


def recorded(event_id: str, *, type_: str = "customer.subscription.updated", account: str | None = "acct_1",
             customer: str | None = "cus_1", subscription: str | None = "sub_1") -> RecordedEvent:
    return RecordedEvent(event_id, type_, T0, T0, "2026-08-27", subscription or "", subscription, None, account,
                         customer, Outcome.APPLIED, "", b'{"id": "x"}', b"snapshot-" + event_id.encode())


def snapshot_entry(event_id: str, at: datetime, *, ended_at: datetime | None = None, invoice: bool = False,
                   reaches: datetime | None = None) -> HistoryEntry:
    return HistoryEntry("acct_1", event_id, "sub_1", invoice, at, ended_at, reaches, b"snapshot-" + event_id.encode())


def subscription_row(account: str = "acct_1", *, event_id: str = "evt_1", status: Status = Status.ACTIVE
                     ) -> SubscriptionRecord:
    return SubscriptionRecord("sub_1", account, "cus_1", "core", status, T0, False, event_id, T0, None, T0,
                              T0 + 30 * DAY, None, False, None, None, "pur_1", {"account_id": account}, None)


async def hold(db: asyncpg.Connection, *wanted: tuple[str, str | None]) -> dict[str, accounts.HeldAccount]:
    return await accounts.hold_accounts(db, list(wanted), policy.UNKNOWN_ACCOUNT, policy.ACCOUNT_EVENT_TYPES)


async def test_holding_an_account_creates_it_once_and_links_its_customer(db: asyncpg.Connection) -> None:
    first = (await hold(db, ("acct_1", "cus_1")))["acct_1"]
    again = (await hold(db, ("acct_1", "cus_2")))["acct_1"]
    assert (first.created, again.created) == (True, False)
    assert again.account.provider_customer_id == "cus_1"  # linked once; a later customer does not replace it
    assert await accounts.account_for_customer(db, "cus_1") == "acct_1"


async def test_a_customer_linked_to_another_account_is_not_linked_and_names_its_holder(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", "cus_1"))
    other = (await hold(db, ("acct_2", "cus_1")))["acct_2"]
    assert (other.customer_holder, other.account.provider_customer_id) == ("acct_1", None)


async def test_linking_a_customer_adopts_only_the_events_that_waited_for_an_account(db: asyncpg.Connection) -> None:
    waiting = [recorded("evt_sub", account=None), recorded("evt_inv", type_="invoice.paid", account=None),
               recorded("evt_session", type_="checkout.session.completed", account=None),
               recorded("evt_bad", account=None), recorded("evt_other_customer", account=None, customer="cus_9")]
    await events.insert_events(db, waiting)
    await events.set_event_outcomes(db, [
        (T0, EventResult("evt_sub", Outcome.REJECTED, policy.UNKNOWN_ACCOUNT)),
        (T0, EventResult("evt_inv", Outcome.REJECTED, policy.UNKNOWN_ACCOUNT)),
        (T0, EventResult("evt_session", Outcome.REJECTED, policy.UNKNOWN_ACCOUNT)),
        (T0, EventResult("evt_bad", Outcome.REJECTED, "malformed subscription: status is required")),
        (T0, EventResult("evt_other_customer", Outcome.REJECTED, policy.UNKNOWN_ACCOUNT))])
    held = (await hold(db, ("acct_1", "cus_1")))["acct_1"]
    assert held.adopted == 2
    found = {r["provider_event_id"]: (r["outcome"], r["account_id"]) for r in await db.fetch(
        "SELECT provider_event_id, outcome, account_id FROM provider_events")}
    assert found == {"evt_sub": ("applied", "acct_1"), "evt_inv": ("applied", "acct_1"),
                     "evt_session": ("rejected", None), "evt_bad": ("rejected", None),
                     "evt_other_customer": ("rejected", None)}


async def test_an_event_is_recorded_once_with_the_subscription_row_it_names(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", "cus_1"))
    await derived.write_rows(db, [subscription_row()], [], [], [], [], [])
    fresh = await events.insert_events(db, [recorded("evt_2"), recorded("evt_3", subscription="sub_new")])
    assert fresh == {"evt_2": subscription_row(), "evt_3": None}
    again = await events.insert_events(db, [recorded("evt_2"), recorded("evt_4")])
    assert set(again) == {"evt_4"}
    await events.count_deliveries(db, [("evt_2", T0), ("evt_2", T0), ("evt_3", T0)])
    deliveries = {r["provider_event_id"]: r["deliveries"] for r in await db.fetch(
        "SELECT provider_event_id, deliveries FROM provider_events")}
    assert deliveries == {"evt_2": 3, "evt_3": 2, "evt_4": 1}


async def test_an_outcome_keeps_the_account_recorded_when_it_names_none(db: asyncpg.Connection) -> None:
    await events.insert_events(db, [recorded("evt_1"), recorded("evt_2", account=None)])
    await events.set_event_outcomes(db, [(T0, EventResult("evt_1", Outcome.STALE, "older", None)),
                                         (T0, EventResult("evt_2", Outcome.APPLIED, "", "acct_2"))])
    found = {r["provider_event_id"]: tuple(r.values())[1:] for r in await db.fetch(
        "SELECT provider_event_id, outcome, reason, account_id FROM provider_events ORDER BY 1")}
    assert found == {"evt_1": ("stale", "older", "acct_1"), "evt_2": ("applied", "", "acct_2")}


ASSIGNED = PlacedAssignment(AssignmentRow("sub_1", "core", "price_pro", "pro", 20, "pro", T0, Window(T0, T0 + DAY)),
                            Window(T0, T0 + DAY))
BOUND = PlacedBinding(BindingRow("sub_1", "core", "price_pro", "pro", "ai_credits", 1000, False, 2, Source.PRICE,
                                 Window(T0, None)), Window(T0, None), "sub_0")
ITEM = ItemRow("sub_1", "price_pro", "si_1", "pro", 2, Window(T0, None), T0, T0 + 30 * DAY)


async def test_derived_rows_written_together_read_back_as_the_same_values(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", "cus_1"))
    await events.insert_events(db, [recorded("evt_1")])
    await derived.write_rows(db, history=[snapshot_entry("evt_1", T0)])
    audit = AuditEntry("acct_1", "provider_event", "evt_1", "subscription", "sub_1", "upsert", {"status": "active"})
    await derived.write_rows(db, [subscription_row()], [AccountItem("acct_1", ITEM)],
                             [AccountAssignment("acct_1", False, ASSIGNED)],
                             [AccountBinding("acct_1", BOUND)], [audit], ["acct_1"])
    stored, heads = await history.load_accounts(db, {"acct_1": None})
    account = stored["acct_1"]
    assert heads == {"sub_1": subscription_row()} and account.subscriptions == heads
    assert account.items == (ITEM,)
    assert list(account.assignments.values()) == [ASSIGNED]
    assert [(p.row, p.window, p.conflict_with) for p in account.bindings.values()] == [
        (replace(BOUND.row, window=BOUND.window), BOUND.window, "sub_0")]
    assert account.history == (b"snapshot-evt_1",)
    assert (await accounts.get_account(db, "acct_1")).revision == 1  # type: ignore[union-attr]
    written = await db.fetchrow("SELECT cause, entity, action, detail, at FROM audit_log")
    assert (written["cause"], written["action"], written["detail"]) == ("provider_event", "upsert",
                                                                         {"status": "active"})
    assert written["at"] == await db.fetchval("SELECT now()")  # stamped when written


async def audit(db: asyncpg.Connection, *entries: AuditEntry) -> None:
    await derived.write_rows(db, audit=list(entries))


async def test_a_traces_audit_rows_are_its_accounts_rows_caused_by_its_events_or_about_its_objects(
        db: asyncpg.Connection) -> None:
    await audit(db,
                AuditEntry("acct_1", "provider_event", "evt_1", "subscription", "sub_1", "upsert", {}),
                AuditEntry("acct_2", "provider_event", "evt_1", "subscription", "sub_1", "upsert", {}),
                AuditEntry("acct_1", "purchase", "pur_1", "purchase", "pur_1", "finalized", {}),
                AuditEntry(None, "provider_event", "evt_2", "provider_event", "evt_2", "replayed", {}),
                AuditEntry("acct_1", "provider_event", "evt_3", "subscription", "sub_3", "upsert", {}))
    mine = await support.audit_for(db, ["acct_1"], ["evt_1", "evt_2"], ["pur_1", "sub_1"])
    assert [(a.account_id, a.cause_id, a.entity_id) for a in mine] == [("acct_1", "evt_1", "sub_1"),
                                                                       ("acct_1", "pur_1", "pur_1")]
    with_none = await support.audit_for(db, ["acct_1", None], ["evt_1", "evt_2"], [])
    assert [(a.account_id, a.cause_id) for a in with_none] == [("acct_1", "evt_1"), (None, "evt_2")]  # oldest first


async def test_a_traces_audit_rows_are_read_along_its_accounts_keys_not_across_the_whole_log(
        db: asyncpg.Connection) -> None:
    await db.execute("""INSERT INTO audit_log (account_id, cause, cause_id, entity, entity_id, action)
        SELECT 'acct_other_' || i / 4, 'provider_event', 'evt_other_' || i / 4, 'subscription', 'sub_other_' || i / 4,
            'upsert' FROM generate_series(1, 20000) AS i""")
    await audit(db, AuditEntry("acct_1", "provider_event", "evt_1", "subscription", "sub_1", "upsert", {}))
    await db.execute("ANALYZE audit_log")
    plan = json.loads(await db.fetchval(f"EXPLAIN (FORMAT JSON) {support.AUDIT_FOR}", ["acct_1"], ["evt_1"],
                                        ["sub_1"]))

    def nodes(node: dict[str, object]) -> list[dict[str, object]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]  # type: ignore[attr-defined]

    read = nodes(plan[0]["Plan"])
    assert "Seq Scan" not in {n["Node Type"] for n in read}, read
    assert {n["Index Name"] for n in read if "Index Name" in n} == {"audit_log_pkey"}, read


async def test_an_account_read_from_an_instant_holds_only_what_a_derivation_from_there_reads(
        db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", "cus_1"))
    await derived.write_rows(db, [subscription_row()], [], [], [], [], [])
    await derived.write_rows(db, history=[
        *(snapshot_entry(f"evt_{day}", T0 + day * DAY) for day in range(10)),
        snapshot_entry("evt_end", T0 + 3 * DAY, ended_at=T0 + 2 * DAY),
        snapshot_entry("inv_old", T0, invoice=True, reaches=T0 + 5 * DAY),
        snapshot_entry("inv_new", T0 + 5 * DAY, invoice=True, reaches=T0 + 35 * DAY)])
    closed = PlacedAssignment(replace(ASSIGNED.row, window=Window(T0, T0 + 2 * DAY)), Window(T0, T0 + 2 * DAY))
    still = PlacedAssignment(replace(ASSIGNED.row, window=Window(T0 + 2 * DAY, None)), Window(T0 + 2 * DAY, None))
    await derived.write_rows(db, [], [], [AccountAssignment("acct_1", False, closed),
                                         AccountAssignment("acct_1", False, still)], [], [], [])
    stored, _ = await history.load_accounts(db, {"acct_1": T0 + 7 * DAY + timedelta(hours=1)})
    account = stored["acct_1"]
    assert sorted(account.history) == sorted([b"snapshot-evt_7", b"snapshot-evt_8", b"snapshot-evt_9",
                                              b"snapshot-inv_new"])
    assert account.earlier == {"sub_1": Earlier(T0, T0 + 2 * DAY)}
    assert [p.window for p in account.assignments.values()] == [still.window]
    whole, _ = await history.load_accounts(db, {"acct_1": None})
    assert len(whole["acct_1"].history) == 13 and whole["acct_1"].since is None
    assert len(whole["acct_1"].assignments) == 2


async def test_an_account_with_a_history_row_not_summarized_is_read_whole(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", "cus_1"))
    await derived.write_rows(db, [subscription_row()], [], [], [], [], [])
    await derived.write_rows(db, history=[snapshot_entry(f"evt_{day}", T0 + day * DAY) for day in range(3)])
    await db.execute("UPDATE account_history SET summarized = false WHERE provider_event_id = 'evt_0'")
    stored, _ = await history.load_accounts(db, {"acct_1": T0 + 2 * DAY})
    assert stored["acct_1"].since is None and len(stored["acct_1"].history) == 3
    assert stored["acct_1"].unsummarized == {b"snapshot-evt_0"}
    await derived.write_rows(db, history=[snapshot_entry("evt_0", T0)])  # summarized by writing it again
    stored, _ = await history.load_accounts(db, {"acct_1": T0 + 2 * DAY})
    assert stored["acct_1"].since == T0 + 2 * DAY and not stored["acct_1"].unsummarized


async def test_a_subscription_row_is_replaced_by_a_later_state_but_never_moves_account(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", "cus_1"), ("acct_2", None))
    await derived.write_rows(db, [subscription_row()], [], [], [], [], [])
    later = subscription_row("acct_2", event_id="evt_2", status=Status.CANCELED)
    await derived.write_rows(db, [later], [], [], [], [], [])
    _, heads = await history.load_accounts(db, {}, ["sub_1"])
    assert heads["sub_1"] == replace(later, account_id="acct_1")


async def test_two_subscriptions_never_hold_one_non_stackable_group_at_once(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", "cus_1"))
    other = replace(subscription_row(), subscription_id="sub_2")
    await derived.write_rows(db, [subscription_row(), other], [], [], [], [], [])
    overlapping = PlacedAssignment(replace(ASSIGNED.row, subscription_id="sub_2"), ASSIGNED.window)
    with pytest.raises(asyncpg.ExclusionViolationError):
        await derived.write_rows(db, [], [], [AccountAssignment("acct_1", False, ASSIGNED),
                                              AccountAssignment("acct_1", False, overlapping)], [], [], [])


def pending(purchase_id: str = "pur_1") -> PurchaseRecord:
    return PurchaseRecord(purchase_id, "acct_1", PurchaseState.PENDING, Mode.SUBSCRIPTION, (("pro_monthly", 1),),
                          "core", f"cs_{purchase_id}", None, None, "https://s", "https://c", None, T0, None, None, None,
                          None, None, T0 + DAY, T0 + DAY)


async def test_a_purchase_reads_back_as_recorded_and_each_move_stamps_its_state(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", None))
    assert await purchases.insert_purchase(db, pending())
    assert not await purchases.insert_purchase(db, replace(pending(), success_url="https://other"))
    assert await purchases.get_purchase(db, purchase_id="pur_1") == pending()
    await purchases.record_transitions(db, [TransitionRecord("pur_1", PurchaseState.PENDING, PurchaseState.RETURNED,
                                                             T0 + DAY / 4, None, "browser returned")])
    await purchases.record_transitions(db, [TransitionRecord("pur_1", PurchaseState.RETURNED, PurchaseState.CONFLICT,
                                                             T0 + DAY / 2, "evt_9", "lost its group to sub_0")])
    moved = await purchases.get_purchase(db, checkout_session_id="cs_pur_1")
    assert moved == replace(pending(), state=PurchaseState.CONFLICT, returned_at=T0 + DAY / 4,
                            conflict_at=T0 + DAY / 2, reason="lost its group to sub_0")
    assert [(t.from_state, t.to_state, t.provider_event_id) for t in await purchases.transitions(db, "pur_1")] == [
        (PurchaseState.PENDING, PurchaseState.RETURNED, None),
        (PurchaseState.RETURNED, PurchaseState.CONFLICT, "evt_9")]


async def test_a_group_move_is_recorded_without_restamping_the_state_it_keeps(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", None))
    await purchases.insert_purchase(db, pending())
    await purchases.record_transitions(db, [TransitionRecord("pur_1", PurchaseState.PENDING, PurchaseState.CONFLICT,
                                                             T0 + DAY / 4, "evt_1", "lost its group to sub_0")])
    await purchases.record_transitions(db, [TransitionRecord("pur_1", PurchaseState.CONFLICT, PurchaseState.CONFLICT,
                                                             T0 + DAY / 2, "evt_2", "sub_1 moved from group core to "
                                                             "group addons")])
    await purchases.set_purchase_groups(db, [("pur_1", "addons")])
    moved = await purchases.get_purchase(db, purchase_id="pur_1")
    assert moved == replace(pending(), state=PurchaseState.CONFLICT, conflict_at=T0 + DAY / 4,
                            reason="lost its group to sub_0", subscription_group="addons")
    assert [(t.from_state, t.to_state, t.reason) for t in await purchases.transitions(db, "pur_1")] == [
        (PurchaseState.PENDING, PurchaseState.CONFLICT, "lost its group to sub_0"),
        (PurchaseState.CONFLICT, PurchaseState.CONFLICT, "sub_1 moved from group core to group addons")]


async def test_the_database_funds_a_period_once_whatever_the_code_asks(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", "cus_1"))
    period = Window(T0, T0 + 30 * DAY)
    first = Issue("sub_1:ai_credits:one", "ai_credits", Cadence.PER_PERIOD, "credit", 1200, Source.PRICE, "price_pro",
                  T0, subscription_id="sub_1", invoice_id="in_1", period=period, basis=PERIOD)
    await derived.insert_issues(db, [Issuance("acct_1", first, "evt_1")])
    await derived.insert_issues(db, [Issuance("acct_1", first, "evt_again")])  # the same key: left as it is
    again = replace(first, issue_key="sub_1:ai_credits:other", invoice_id="in_2",
                    period=Window(T0 + 10 * DAY, period.end))
    with pytest.raises(asyncpg.UniqueViolationError, match="issued_grants_once_per_period"):
        await derived.insert_issues(db, [Issuance("acct_1", again, "evt_2")])


async def test_a_difference_tops_a_period_up_once_per_level(db: asyncpg.Connection) -> None:
    await hold(db, ("acct_1", "cus_1"))
    period = Window(T0 + 10 * DAY, T0 + 30 * DAY)
    top = Issue("sub_1:seats:to:1000", "seats", Cadence.PER_PERIOD, "credit", 500, Source.PRICE, "price_seat", T0,
                subscription_id="sub_1", invoice_id="in_1", period=period, basis=DIFFERENCE, funded_to=1000)
    await derived.insert_issues(db, [Issuance("acct_1", top, "evt_1")])
    with pytest.raises(asyncpg.UniqueViolationError, match="issued_grants_once_per_level"):
        await derived.insert_issues(db, [Issuance("acct_1", replace(top, issue_key="sub_1:seats:again"), "evt_2")])


@pytest.mark.parametrize("value", [
    {"status": "active", "event": "evt_1", "effective_until": None, "conflict": False, "amount": 2**63 - 1},
    {"note": "café \u2603 \U0001f600", "quote": "a \"b\" \\ c", "control": "\n\t\x01"},
    {},
    {"big": 2**70, "negative": -2**63 - 1},
    {"ratio": 0.5, "nested": {"a": [1, "b", None]}, "list": [1, 2]},
    {1: "a key that is not text", "status": Status.ACTIVE},
    ["a", 1, None],
    "text",
])
async def test_a_jsonb_value_is_stored_as_the_standard_librarys_text_of_it_would_store_it(
    db: asyncpg.Connection, value: object,
) -> None:
    written = await db.fetchval("SELECT $1::jsonb::text", value)
    assert written == await db.fetchval("SELECT $1::text::jsonb::text", json.dumps(value))


@pytest.mark.parametrize("value", [{"ratio": float("nan")}, {"text": "lone \ud800 surrogate"}])
async def test_a_jsonb_value_postgresql_refuses_from_the_standard_library_is_refused_still(
    db: asyncpg.Connection, value: object,
) -> None:
    with pytest.raises(asyncpg.PostgresError) as through_codec:
        async with db.transaction():  # a savepoint, so the test's transaction goes on
            await db.fetchval("SELECT $1::jsonb::text", value)
    with pytest.raises(asyncpg.PostgresError) as from_text:
        async with db.transaction():
            await db.fetchval("SELECT $1::text::jsonb::text", json.dumps(value))
    assert type(through_codec.value) is type(from_text.value)
