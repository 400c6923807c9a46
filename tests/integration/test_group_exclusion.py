"""The database's own guard on non-stackable groups, against a reference model: any sequence of
plan assignments, each inserted on its own, is refused exactly when an assignment already kept
holds an overlapping window of the same account and group for another subscription, neither row
stackable nor marked as a conflict loser."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.pg import server_url_for

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNTS = ("acct_a", "acct_b")
GROUPS = ("core", "addon")


@dataclass(frozen=True)
class Assignment:
    account_id: str
    group: str
    subscription: int
    start: int  # days after DAY0
    days: int | None  # open when None
    stackable: bool
    conflict: bool

    @property
    def subscription_id(self) -> str:
        return f"sub_{self.account_id}_{self.subscription}"

    @property
    def end(self) -> float:
        return float("inf") if self.days is None else self.start + self.days


def refused(kept: list[Assignment], new: Assignment) -> bool:
    """The reference: what the rule refuses, written out."""
    if new.stackable or new.conflict:
        return False
    return any(a.account_id == new.account_id and a.group == new.group and a.subscription_id != new.subscription_id
               and a.start < new.end and new.start < a.end and not a.stackable and not a.conflict for a in kept)


assignments = st.builds(Assignment, st.sampled_from(ACCOUNTS), st.sampled_from(GROUPS), st.integers(1, 3),
                        st.integers(0, 8), st.none() | st.integers(1, 4), st.booleans(), st.booleans())


async def _insert(conn: asyncpg.Connection, a: Assignment) -> None:
    start = DAY0 + timedelta(days=a.start)
    end = None if a.days is None else start + timedelta(days=a.days)
    await conn.execute(
        """INSERT INTO plan_assignments (account_id, subscription_group, stackable, subscription_id, price_id,
               billing_plan_code, priority, started_at, effective, conflict, conflict_with_subscription_id)
           VALUES ($1, $2, $3, $4, 'price_1', 'pro', 20, $5, tstzrange($5, $6, '[)'), $7, $8)""",
        a.account_id, a.group, a.stackable, a.subscription_id, start, end, a.conflict,
        "sub_other" if a.conflict else None)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(assignments, max_size=14))
async def test_overlapping_assignments_are_refused_exactly_as_the_rule_says(
        pg_admin_url: str, shared_database: str, sequence: list[Assignment]) -> None:
    conn = await asyncpg.connect(server_url_for(pg_admin_url, shared_database))
    transaction = conn.transaction()
    await transaction.start()
    try:
        for account_id in ACCOUNTS:
            await conn.execute("INSERT INTO accounts (account_id) VALUES ($1)", account_id)
            for n in (1, 2, 3):
                await conn.execute(
                    """INSERT INTO subscriptions (subscription_id, account_id, provider_customer_id, status,
                           provider_updated_at) VALUES ($1, $2, 'cus_1', 'active', $3)""",
                    f"sub_{account_id}_{n}", account_id, DAY0)
        kept: list[Assignment] = []
        for a in sequence:
            expected = refused(kept, a)
            try:
                async with conn.transaction():
                    await _insert(conn, a)
            except asyncpg.ExclusionViolationError:
                assert expected, f"{a} was refused after {kept}"
                continue
            assert not expected, f"{a} was kept after {kept}"
            kept.append(a)
    finally:
        await transaction.rollback()
        await conn.close()
