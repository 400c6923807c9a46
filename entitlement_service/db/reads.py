"""What readers of an account's entitlements read: its subscriptions and items, assignments,
bindings and issued funding, and what the gate cache needs."""

from __future__ import annotations

from datetime import datetime

from catalog_rules.model import Cadence
from entitlement_service.db.columns import Column, Shape, window
from entitlement_service.db.derived import (
    ASSIGNMENT_SELECT,
    BINDING_SELECT,
    ITEM,
    SUBSCRIPTION,
    placed_assignment,
    placed_binding,
)
from entitlement_service.db.pool import Conn
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.records import IssuedGrantRecord, SubscriptionRecord
from entitlement_service.domain.timeline import ItemRow

ISSUED = Shape(IssuedGrantRecord, (
    Column("issue_key", "text"), Column("grant_program_code", "text"), Column("cadence", "text", decode=Cadence),
    Column("unit", "text"), Column("amount", "bigint"), Column("subscription_id", "text"),
    Column("invoice_id", "text"), Column("checkout_session_id", "text"),
    window("period", nullable=True), Column("issued_at", "timestamptz"),
))


async def issued_grants(conn: Conn, account_id: str) -> list[IssuedGrantRecord]:
    found = await conn.fetch(f"SELECT {ISSUED.select()} FROM issued_grants WHERE account_id = $1 "
                             "ORDER BY issued_at, issue_key", account_id)
    return [ISSUED.read(r) for r in found]


async def subscription_items(conn: Conn, account_id: str, subscription_ids: list[str]) -> list[ItemRow]:
    """The items the account holds for these subscriptions."""
    found = await conn.fetch(f"SELECT {ITEM.select()} FROM subscription_items WHERE account_id = $1 "
                             "AND subscription_id = ANY($2) ORDER BY subscription_id, price_id",
                             account_id, subscription_ids)
    return [ITEM.read(r) for r in found]


async def subscriptions_of(conn: Conn, account_id: str) -> list[SubscriptionRecord]:
    found = await conn.fetch(f"SELECT {SUBSCRIPTION.select()} FROM subscriptions WHERE account_id = $1 "
                             "ORDER BY subscription_id", account_id)
    return [SUBSCRIPTION.read(r) for r in found]


async def subscription(conn: Conn, subscription_id: str) -> SubscriptionRecord | None:
    row = await conn.fetchrow(f"SELECT {SUBSCRIPTION.select()} FROM subscriptions WHERE subscription_id = $1",
                              subscription_id)
    return SUBSCRIPTION.read(row) if row else None


async def assignments_of(conn: Conn, account_id: str) -> list[PlacedAssignment]:
    found = await conn.fetch(f"SELECT {ASSIGNMENT_SELECT} FROM plan_assignments WHERE account_id = $1 "
                             "ORDER BY lower(effective), id", account_id)
    return [placed_assignment(r) for r in found]


async def bindings_of(conn: Conn, account_id: str) -> list[PlacedBinding]:
    found = await conn.fetch(f"SELECT {BINDING_SELECT} FROM grant_bindings WHERE account_id = $1 "
                             "ORDER BY lower(effective), id", account_id)
    return [placed_binding(r) for r in found]


async def live_subscriptions(conn: Conn, account_id: str, at: datetime) -> list[tuple[str, str]]:
    """(subscription, group) for each subscription holding a plan or grant in a group at `at`
    (winners and losers alike)."""
    found = await conn.fetch(
        """SELECT DISTINCT subscription_id, subscription_group FROM grant_bindings
           WHERE account_id = $1 AND effective @> $2::timestamptz
           UNION
           SELECT DISTINCT subscription_id, subscription_group FROM plan_assignments
           WHERE account_id = $1 AND effective @> $2::timestamptz""", account_id, at)
    return [(r["subscription_id"], r["subscription_group"]) for r in found]


async def effective_assignments(conn: Conn, account_id: str, at: datetime) -> tuple[int, list[PlacedAssignment]]:
    """The account's revision and the assignments holding at `at`, read in one statement so the
    two agree (revision 0 and none for an account never seen)."""
    found = await conn.fetch(
        f"""SELECT a.revision, {", ".join("p." + c for c in ASSIGNMENT_SELECT.split(", "))} FROM accounts a
           LEFT JOIN plan_assignments p ON p.account_id = a.account_id AND p.effective @> $2::timestamptz
           WHERE a.account_id = $1""", account_id, at)
    if not found:
        return 0, []
    return found[0]["revision"], [placed_assignment(r) for r in found if r["id"] is not None]


async def boundary_after(conn: Conn, account_id: str, at: datetime) -> datetime | None:
    """The first instant after `at` where one of the account's windows opens or closes."""
    return await conn.fetchval(
        """SELECT min(t) FROM (
               SELECT lower(effective) AS t FROM plan_assignments WHERE account_id = $1
               UNION ALL SELECT upper(effective) FROM plan_assignments WHERE account_id = $1
               UNION ALL SELECT lower(effective) FROM grant_bindings WHERE account_id = $1
               UNION ALL SELECT upper(effective) FROM grant_bindings WHERE account_id = $1) b
           WHERE t > $2""", account_id, at)
