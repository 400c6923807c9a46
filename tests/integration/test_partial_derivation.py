"""Property: an account derived after each event from the instant that event can change on
(domain/partial.py) holds exactly the rows a derivation of its whole history gives, whatever the
delivery order, duplicates and late events; and one more event on a long history reads only
what it can change."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlement_service.service.metrics import DERIVATIONS
from entitlement_service.service.rebuild import rebuild_accounts
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client
from tests.support.provider import MONTH, T0, invoice_event, subscription_event, ts

HOUR = timedelta(hours=1)
_accounts = itertools.count()

# What an account's derivation writes, read back in an order of its own.
ROWS = {
    "subscriptions": "SELECT subscription_id, status, provider_event_id, subscription_group, group_mismatch "
                     "FROM subscriptions WHERE account_id = $1 ORDER BY 1",
    "items": "SELECT i.subscription_id, price_id, quantity, effective FROM subscription_items i "
             "JOIN subscriptions s USING (subscription_id) WHERE s.account_id = $1 ORDER BY 1, 2",
    "assignments": "SELECT subscription_id, price_id, billing_plan_code, effective, conflict_with_subscription_id "
                   "FROM plan_assignments WHERE account_id = $1 ORDER BY 1, 2, 4",
    "bindings": "SELECT subscription_id, price_id, grant_program_code, quantity, effective, "
                "conflict_with_subscription_id FROM grant_bindings WHERE account_id = $1 ORDER BY 1, 2, 3, 5",
    "issued": "SELECT issue_key, amount, period FROM issued_grants WHERE account_id = $1 ORDER BY 1",
    "mismatches": "SELECT fingerprint FROM mismatches WHERE account_id = $1 AND closed_at IS NULL ORDER BY 1",
}


async def rows(db: asyncpg.Connection, account_id: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(r.values()) for r in await db.fetch(query, account_id)] for name, query in ROWS.items()}


async def derived_whole_changes_nothing(service: Client, database_url: str, account_id: str) -> None:
    """Derives the account from its whole history, in the running service's own way, and checks
    that nothing changes."""
    db = await asyncpg.connect(database_url)
    try:
        before = await rows(db, account_id)
        deps = service.running.runtime.deps
        async with deps.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", account_id)
            changed = await rebuild_accounts(conn, deps, {account_id: "whole"}, "reconciliation")
        assert await rows(db, account_id) == before
        assert changed == []
    finally:
        await db.close()


# One subscription's life: (hours after T0, price, quantity, status), then invoices for periods.
Step = tuple[int, str, int, str]
steps = st.lists(st.tuples(st.integers(1, 24 * 90), st.sampled_from(["starter_monthly", "pro_monthly"]),
                           st.integers(1, 5), st.sampled_from(["active", "active", "past_due"])),
                 min_size=1, max_size=12)


def life(n: int, base: list[Step], addon: list[Step], ended: int | None) -> list[pb.ProviderEvent]:
    acct, cus = f"acct_q{n}", f"cus_q{n}"
    events = []
    for sub, plan in (("core", base), ("seats", addon)):
        sub_id = f"sub_q{n}_{sub}"
        if not plan:
            continue
        first = [(0, "team_seats_monthly" if sub == "seats" else "starter_monthly", 1, "active")]
        for i, (hours, price, quantity, status) in enumerate(first + sorted(plan)):
            key = "team_seats_monthly" if sub == "seats" else price
            events.append(subscription_event(
                f"evt_q{n}_{sub}_{i}", sub_id, T0 + hours * HOUR, status=status, items=[(key, quantity)],
                account_id=acct, customer_id=cus, start=T0, period_end=T0 + MONTH,
                event_type="customer.subscription.created" if i == 0 else "customer.subscription.updated"))
        for month in range(3):
            start, end = T0 + month * MONTH, T0 + (month + 1) * MONTH
            key = "team_seats_monthly" if sub == "seats" else "pro_monthly"
            events.append(invoice_event(f"evt_q{n}_{sub}_inv{month}", f"in_q{n}_{sub}_{month}", sub_id, start,
                                        customer_id=cus, lines=[(key, 1 + month, start, end)]))
        if ended is not None and sub == "core":
            at = T0 + ended * HOUR
            events.append(subscription_event(
                f"evt_q{n}_{sub}_end", sub_id, at, status="canceled", ended_at=at, items=[("pro_monthly", 1)],
                account_id=acct, customer_id=cus, start=T0, event_type="customer.subscription.deleted"))
    return events


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=steps, addon=st.just([]) | steps, ended=st.none() | st.integers(24, 24 * 100), data=st.data())
async def test_each_event_derived_from_its_instant_on_ends_as_the_whole_history_derives(
    service: Client, database_url: str, base: list[Step], addon: list[Step], ended: int | None,
    data: st.DataObject,
) -> None:
    n = next(_accounts)
    events = life(n, base, addon, ended)
    delivery = data.draw(st.permutations(events))
    for _ in range(data.draw(st.integers(0, 4))):
        delivery.insert(data.draw(st.integers(0, len(delivery))), data.draw(st.sampled_from(events)))
    for event in delivery:
        await service.apply(event)
    await derived_whole_changes_nothing(service, database_url, f"acct_q{n}")


async def test_a_late_event_landing_before_everything_derived_since_is_applied_exactly(
        service: Client, database_url: str) -> None:
    n = next(_accounts)
    acct, cus, sub = f"acct_q{n}", f"cus_q{n}", f"sub_q{n}"

    def seats(i: int, at: datetime, quantity: int, **kw: Any) -> pb.ProviderEvent:
        return subscription_event(f"evt_q{n}_{i}", sub, at, items=[("team_seats_monthly", quantity)],
                                  account_id=acct, customer_id=cus, start=T0, **kw)

    late_first = seats(0, T0, 1, event_type="customer.subscription.created")
    late_middle = seats(1000, T0 + 30 * 24 * HOUR + HOUR / 2, 77)
    part = DERIVATIONS.labels("part")._value.get()
    for i in range(1, 61):  # two months of daily seat counts, in order
        await service.apply(seats(i, T0 + i * 24 * HOUR, i))
    assert DERIVATIONS.labels("part")._value.get() - part == 59  # all but the subscription's first
    await derived_whole_changes_nothing(service, database_url, acct)
    await service.apply(late_middle)  # lands between day 30 and day 31: before the last 30 snapshots
    await derived_whole_changes_nothing(service, database_url, acct)
    await service.apply(late_first)  # the subscription's first snapshot: its start reaches back to T0
    await derived_whole_changes_nothing(service, database_url, acct)
    at_middle = await service.entitlements(acct, ts(T0 + 30 * 24 * HOUR + HOUR))
    assert [b.quantity for b in at_middle.grant_bindings] == [77]
    at_start = await service.entitlements(acct, ts(T0 + HOUR))
    assert [b.quantity for b in at_start.grant_bindings] == [1]
