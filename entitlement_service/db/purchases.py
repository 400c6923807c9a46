"""Purchase sessions and the transitions of their state machine."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from entitlement_service.db.columns import Column, Shape, optional
from entitlement_service.db.pool import Conn
from entitlement_service.domain.model import Mode, PurchaseState
from entitlement_service.domain.records import OverduePurchase, PurchaseRecord, TransitionRecord


def _items_in(stored: list[dict[str, Any]]) -> tuple[tuple[str, int], ...]:
    return tuple((i["price"], i["quantity"]) for i in stored)


def _items_out(items: tuple[tuple[str, int], ...]) -> list[dict[str, Any]]:
    return [{"price": price, "quantity": quantity} for price, quantity in items]


PURCHASE = Shape(PurchaseRecord, (
    Column("purchase_id", "text"), Column("account_id", "text"), Column("state", "text", decode=PurchaseState),
    Column("mode", "text", decode=Mode), Column("items", "jsonb", decode=_items_in, encode=_items_out),
    Column("subscription_group", "text"), Column("checkout_session_id", "text"), Column("subscription_id", "text"),
    Column("provider_customer_id", "text"), Column("success_url", "text"), Column("cancel_url", "text"),
    Column("reason", "text"), Column("created_at", "timestamptz"), Column("returned_at", "timestamptz"),
    Column("finalized_at", "timestamptz"), Column("expired_at", "timestamptz"), Column("failed_at", "timestamptz"),
    Column("conflict_at", "timestamptz"), Column("expires_at", "timestamptz"), Column("timeout_at", "timestamptz"),
    Column("checkout_url", "text"),
))

TRANSITION = Shape(TransitionRecord, (
    Column("purchase_id", "text"), Column("from_state", "text", decode=optional(PurchaseState)),
    Column("to_state", "text", decode=PurchaseState), Column("at", "timestamptz"),
    Column("provider_event_id", "text"), Column("reason", "text"),
))

INSERT_PURCHASE = f"""
INSERT INTO purchases ({PURCHASE.select()}) VALUES ({PURCHASE.placeholders()})
ON CONFLICT (purchase_id) DO NOTHING
RETURNING purchase_id"""


async def insert_purchase(conn: Conn, purchase: PurchaseRecord) -> bool:
    """False when a purchase with that id is already recorded (it is left as it is)."""
    return await conn.fetchval(INSERT_PURCHASE, *PURCHASE.encoded(purchase)) is not None


async def get_purchase(conn: Conn, *, purchase_id: str | None = None, checkout_session_id: str | None = None,
                       lock: bool = False) -> PurchaseRecord | None:
    clause = "purchase_id = $1" if purchase_id else "checkout_session_id = $1"
    row = await conn.fetchrow(f"SELECT {PURCHASE.select()} FROM purchases WHERE {clause}"
                              f"{' FOR UPDATE' if lock else ''}", purchase_id or checkout_session_id)
    return PURCHASE.read(row) if row else None


async def purchases_in_group(conn: Conn, account_id: str, subscription_group: str) -> list[PurchaseRecord]:
    """The account's purchases in the group that are pending or returned (the index holds only those)."""
    found = await conn.fetch(f"SELECT {PURCHASE.select()} FROM purchases WHERE account_id = $1 "
                             "AND subscription_group = $2 AND state IN ('pending', 'returned') ORDER BY created_at",
                             account_id, subscription_group)
    return [PURCHASE.read(r) for r in found]


async def purchase_for_subscription(conn: Conn, subscription_id: str) -> PurchaseRecord | None:
    row = await conn.fetchrow(
        f"SELECT {PURCHASE.select()} FROM purchases WHERE subscription_id = $1 OR purchase_id = "
        "(SELECT purchase_id FROM subscriptions WHERE subscription_id = $1) ORDER BY created_at LIMIT 1",
        subscription_id)
    return PURCHASE.read(row) if row else None


async def subscription_purchases_of(conn: Conn, account_ids: Sequence[str]) -> list[PurchaseRecord]:
    found = await conn.fetch(f"SELECT {PURCHASE.select()} FROM purchases WHERE account_id = ANY($1) "
                             "AND mode = 'subscription' ORDER BY created_at", list(account_ids))
    return [PURCHASE.read(r) for r in found]


async def transitions(conn: Conn, purchase_id: str) -> list[TransitionRecord]:
    found = await conn.fetch(f"SELECT {TRANSITION.select()} FROM purchase_transitions WHERE purchase_id = $1 "
                             "ORDER BY id", purchase_id)
    return [TRANSITION.read(r) for r in found]


# Each state's time is kept on the purchase itself; a failure or a conflict also keeps its reason.
# A transition that keeps the state (its subscription changed group) leaves those alone.
# A transition is recorded under its purchase's account (none found: the NOT NULL refuses it).
MOVE_PURCHASES = f"""
WITH moved AS (
    SELECT * FROM {TRANSITION.recordset(1)}
), updated AS (
    UPDATE purchases p SET state = m.to_state,
        returned_at = CASE WHEN m.to_state = 'returned' AND p.state <> m.to_state THEN m.at ELSE p.returned_at END,
        finalized_at = CASE WHEN m.to_state = 'finalized' AND p.state <> m.to_state THEN m.at
                            ELSE p.finalized_at END,
        expired_at = CASE WHEN m.to_state = 'expired' AND p.state <> m.to_state THEN m.at ELSE p.expired_at END,
        failed_at = CASE WHEN m.to_state = 'failed' AND p.state <> m.to_state THEN m.at ELSE p.failed_at END,
        conflict_at = CASE WHEN m.to_state = 'conflict' AND p.state <> m.to_state THEN m.at ELSE p.conflict_at END,
        reason = CASE WHEN p.state = m.to_state THEN p.reason
                      WHEN m.to_state IN ('failed', 'conflict') THEN m.reason END
    FROM moved m WHERE p.purchase_id = m.purchase_id
    RETURNING p.account_id, p.purchase_id
)
INSERT INTO purchase_transitions (account_id, {TRANSITION.select()})
SELECT u.account_id, {TRANSITION.select("m")} FROM moved m LEFT JOIN updated u ON u.purchase_id = m.purchase_id"""


async def record_transitions(conn: Conn, moves: Sequence[TransitionRecord]) -> None:
    """Moves each purchase (at most one move per purchase) and records the transition."""
    if moves:
        await conn.execute(MOVE_PURCHASES, *TRANSITION.parameters(moves))


async def set_purchase_groups(conn: Conn, pairs: Sequence[tuple[str, str]]) -> None:
    """Entries of (purchase id, the group its subscription is in now), each recorded with its own
    transition."""
    if pairs:
        await conn.execute(
            "UPDATE purchases p SET subscription_group = v.g FROM unnest($1::text[], $2::text[]) AS v(p, g) "
            "WHERE p.purchase_id = v.p", [p for p, _ in pairs], [g for _, g in pairs])


async def set_purchase_timeout(conn: Conn, purchase_id: str, timeout_at: datetime) -> None:
    await conn.execute("UPDATE purchases SET timeout_at = $2 WHERE purchase_id = $1", purchase_id, timeout_at)


async def set_purchase_subscriptions(conn: Conn, pairs: Sequence[tuple[str, str]]) -> None:
    """Entries of (purchase id, subscription id); a purchase keeps the first subscription it got."""
    if pairs:
        await conn.execute(
            "UPDATE purchases p SET subscription_id = v.s FROM unnest($1::text[], $2::text[]) AS v(p, s) "
            "WHERE p.purchase_id = v.p AND p.subscription_id IS NULL", [p for p, _ in pairs], [s for _, s in pairs])


async def overdue_purchases(conn: Conn, account_id: str | None, now: datetime) -> list[OverduePurchase]:
    found = await conn.fetch(
        "SELECT purchase_id, checkout_session_id, account_id FROM purchases "
        "WHERE state IN ('pending', 'returned') AND timeout_at < $2 AND ($1::text IS NULL OR account_id = $1) "
        "ORDER BY timeout_at LIMIT 500", account_id, now)
    return [OverduePurchase(*r) for r in found]
