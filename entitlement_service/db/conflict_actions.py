"""The decided actions on losing subscriptions of `cancel_and_refund` groups: kept once per
subscription, moved forward as the checkout service reports each step, each change audited."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from entitlement_service.db.columns import Column, Shape
from entitlement_service.db.pool import Conn
from entitlement_service.domain.records import ConflictActionRecord

ACTION = Shape(ConflictActionRecord, (
    Column("account_id", "text"), Column("subscription_id", "text"), Column("subscription_group", "text"),
    Column("winner_subscription_id", "text"), Column("purchase_id", "text"), Column("state", "text"),
    Column("refund_id", "text"), Column("reason", "text"), Column("cause_id", "text"),
    Column("decided_at", "timestamptz"), Column("updated_at", "timestamptz"),
))

# A decision already kept for the subscription (by an earlier event, a replay, another replica)
# is left as it is; only a new one is audited.
DECIDE = f"""
WITH decided AS (
    INSERT INTO conflict_actions ({ACTION.select()})
    SELECT * FROM {ACTION.recordset(1)}
    ON CONFLICT DO NOTHING
    RETURNING account_id, subscription_id, subscription_group, winner_subscription_id, cause_id
)
INSERT INTO audit_log (account_id, cause, cause_id, entity, entity_id, action, detail)
SELECT account_id, ${1 + ACTION.width}, cause_id, 'conflict_action', subscription_id, 'decided',
       jsonb_build_object('subscription_group', subscription_group, 'winner_subscription_id', winner_subscription_id)
FROM decided
RETURNING entity_id"""


async def decide(conn: Conn, cause: str, actions: Sequence[ConflictActionRecord]) -> list[str]:
    """Keeps each decision not kept yet; the subscriptions newly decided."""
    if not actions:
        return []
    return [r["entity_id"] for r in await conn.fetch(DECIDE, *ACTION.parameters(actions), cause)]


async def get_action(conn: Conn, subscription_id: str, lock: bool = False) -> ConflictActionRecord | None:
    row = await conn.fetchrow(f"SELECT {ACTION.select()} FROM conflict_actions WHERE subscription_id = $1"
                              f"{' FOR UPDATE' if lock else ''}", subscription_id)
    return ACTION.read(row) if row else None


async def to_do(conn: Conn, limit: int = 100) -> list[ConflictActionRecord]:
    """The actions the checkout service has still to carry out, oldest first."""
    found = await conn.fetch(f"SELECT {ACTION.select()} FROM conflict_actions WHERE state IN ('decided', 'canceled') "
                             "ORDER BY decided_at LIMIT $1", limit)
    return [ACTION.read(r) for r in found]


async def of_subscriptions(conn: Conn, subscription_ids: Sequence[str]) -> list[ConflictActionRecord]:
    found = await conn.fetch(f"SELECT {ACTION.select()} FROM conflict_actions WHERE subscription_id = ANY($1) "
                             "ORDER BY decided_at", list(subscription_ids))
    return [ACTION.read(r) for r in found]


async def move(conn: Conn, action: ConflictActionRecord, state: str, refund_id: str | None, reason: str,
               at: datetime, cause_id: str) -> None:
    """Moves the action (its row locked by the caller) and audits the step."""
    await conn.execute("UPDATE conflict_actions SET state = $2, refund_id = coalesce($3, refund_id), reason = $4, "
                       "updated_at = $5 WHERE subscription_id = $1", action.subscription_id, state, refund_id,
                       reason, at)
    await conn.execute(
        "INSERT INTO audit_log (account_id, cause, cause_id, entity, entity_id, action, detail) "
        "VALUES ($1, 'reconciliation', $2, 'conflict_action', $3, $4, $5::jsonb)",
        action.account_id, cause_id, action.subscription_id, state,
        {"from": action.state, "refund_id": refund_id, "reason": reason})
