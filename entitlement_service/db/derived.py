"""The rows derived from an account's history: subscriptions, their items, plan assignments,
grant bindings, issued funding, the audit trail, and the account's revision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from catalog_rules.model import Source
from entitlement_service.db.columns import Column, Parameters, Shape, to_window, window
from entitlement_service.db.listener import CHANGES_CHANNEL
from entitlement_service.db.pool import Conn
from entitlement_service.domain.account import Placed, PlacedAssignment, PlacedBinding
from entitlement_service.domain.model import Status
from entitlement_service.domain.records import (
    AccountAssignment,
    AccountBinding,
    AccountItem,
    AuditEntry,
    HistoryEntry,
    Issuance,
    SubscriptionRecord,
)
from entitlement_service.domain.timeline import AssignmentRow, BindingRow, ItemRow

SUBSCRIPTION = Shape(SubscriptionRecord, (
    Column("subscription_id", "text"), Column("account_id", "text"), Column("provider_customer_id", "text"),
    Column("subscription_group", "text"), Column("status", "text", decode=Status),
    Column("provider_updated_at", "timestamptz"), Column("provider_refetched", "bool"),
    Column("provider_event_id", "text"), Column("started_at", "timestamptz"), Column("trial_end", "timestamptz"),
    Column("current_period_start", "timestamptz"), Column("current_period_end", "timestamptz"),
    Column("cancel_at", "timestamptz"), Column("cancel_at_period_end", "bool"), Column("canceled_at", "timestamptz"),
    Column("ended_at", "timestamptz"), Column("purchase_id", "text"), Column("metadata", "jsonb"),
    Column("group_mismatch", "text"),
))

ITEM = Shape(ItemRow, (
    Column("subscription_id", "text"), Column("price_id", "text"), Column("item_id", "text"),
    Column("product_id", "text"), Column("quantity", "bigint"),
    window("effective", field="window"),
    Column("current_period_start", "timestamptz"), Column("current_period_end", "timestamptz"),
))


def _item_values(a: AccountItem) -> tuple[Any, ...]:
    i = a.item
    return (a.account_id, i.subscription_id, i.price_id, i.item_id, i.product_id, i.quantity, i.window,
            i.current_period_start, i.current_period_end)


ACCOUNT_ITEM = Shape(AccountItem, (Column("account_id", "text"), *ITEM.columns), values=_item_values)


def _assignment_values(a: AccountAssignment) -> tuple[Any, ...]:
    p, r = a.placed, a.placed.row
    return (a.account_id, r.subscription_group, a.stackable, r.subscription_id, r.price_id, r.billing_plan_code,
            r.priority, r.gate_bundle, r.started_at, p.window, p.conflict, p.conflict_with)


ASSIGNMENT = Shape(AccountAssignment, (
    Column("account_id", "text"), Column("subscription_group", "text"), Column("stackable", "bool"),
    Column("subscription_id", "text"), Column("price_id", "text"), Column("billing_plan_code", "text"),
    Column("priority", "int"), Column("gate_bundle", "text"), Column("started_at", "timestamptz"),
    window("effective"), Column("conflict", "bool"),
    Column("conflict_with_subscription_id", "text"),
), values=_assignment_values)


def _binding_values(b: AccountBinding) -> tuple[Any, ...]:
    p, r = b.placed, b.placed.row
    return (b.account_id, r.subscription_id, r.subscription_group, r.price_id, r.product_id, r.grant_program_code,
            r.amount, r.scale_by_quantity, r.quantity, r.source, p.window, p.conflict_with)


BINDING = Shape(AccountBinding, (
    Column("account_id", "text"), Column("subscription_id", "text"), Column("subscription_group", "text"),
    Column("price_id", "text"), Column("product_id", "text"), Column("grant_program_code", "text"),
    Column("amount", "bigint"), Column("scale_by_quantity", "bool"), Column("quantity", "bigint"),
    Column("source", "text"), window("effective"),
    Column("conflict_with_subscription_id", "text"),
), values=_binding_values)


def stored_account(account_id: str | None) -> str:
    """How an audit entry's or a finding's account is stored: '' for none."""
    return account_id or ""


def _read_account(stored: str) -> str | None:
    return stored or None


# An entry about no account is stored under account '' (its key leads with the account) and read
# back as None.
AUDIT = Shape(AuditEntry, (
    Column("account_id", "text", decode=_read_account, encode=stored_account), Column("cause", "text"),
    Column("cause_id", "text"), Column("entity", "text"), Column("entity_id", "text"), Column("action", "text"),
    Column("detail", "jsonb"), Column("at", "timestamptz"),
))


def _issuance_values(i: Issuance) -> tuple[Any, ...]:
    issue = i.issue
    return (issue.issue_key, i.account_id, issue.grant_program_code, issue.cadence, issue.unit, issue.amount,
            issue.source, issue.price_id, issue.subscription_id, issue.invoice_id, issue.checkout_session_id,
            issue.period, issue.issued_at, i.provider_event_id, issue.basis, issue.funded_to)


ISSUANCE = Shape(Issuance, (
    Column("issue_key", "text"), Column("account_id", "text"), Column("grant_program_code", "text"),
    Column("cadence", "text"), Column("unit", "text"), Column("amount", "bigint"), Column("source", "text"),
    Column("price_id", "text"), Column("subscription_id", "text"), Column("invoice_id", "text"),
    Column("checkout_session_id", "text"), window("period", nullable=True),
    Column("issued_at", "timestamptz"), Column("provider_event_id", "text"), Column("basis", "text"),
    Column("funded_to", "bigint"),
), values=_issuance_values)

# The snapshots an account is derived from (db/history.py reads them).
HISTORY = Shape(HistoryEntry, (
    Column("account_id", "text"), Column("provider_event_id", "text"), Column("subscription_id", "text"),
    Column("invoice", "bool"), Column("provider_at", "timestamptz"), Column("ended_at", "timestamptz"),
    Column("reaches", "timestamptz"), Column("snapshot", "bytea"),
))

# Assignments and bindings are read back as the domain places them; `id` is the row's, for removal.
PLACED_COLUMNS = "id, subscription_id, subscription_group, price_id, effective, conflict_with_subscription_id"
ASSIGNMENT_SELECT = f"{PLACED_COLUMNS}, billing_plan_code, priority, gate_bundle, started_at"
BINDING_SELECT = f"{PLACED_COLUMNS}, product_id, grant_program_code, amount, scale_by_quantity, quantity, source"


def placed_assignment(r: asyncpg.Record) -> PlacedAssignment:
    placed = to_window(r["effective"])
    row = AssignmentRow(r["subscription_id"], r["subscription_group"], r["price_id"], r["billing_plan_code"],
                        r["priority"], r["gate_bundle"], r["started_at"], placed)
    return Placed(row, placed, r["conflict_with_subscription_id"])


def placed_binding(r: asyncpg.Record) -> PlacedBinding:
    placed = to_window(r["effective"])
    row = BindingRow(r["subscription_id"], r["subscription_group"], r["price_id"], r["product_id"],
                     r["grant_program_code"], r["amount"], r["scale_by_quantity"], r["quantity"], Source(r["source"]),
                     placed)
    return Placed(row, placed, r["conflict_with_subscription_id"])


_params = Parameters()

# The rows a batch of derivations writes, after its removals, the snapshots joining the accounts'
# histories, and a new revision for each changed account told to every replica (delivered on
# commit): one statement, so one round trip. Every sub-statement runs with no rows when it has
# nothing to write; foreign keys are checked at the end of the statement, when the subscriptions
# written beside their children are there. A history row written again (one copied from
# provider_events before that table existed) is summarized. The parameters are each shape's rows
# (`Shape.parameters`) in this order, then the changed accounts and the notification channel.
WRITE_ROWS = f"""
WITH subscriptions_written AS (
    INSERT INTO subscriptions ({SUBSCRIPTION.select()}) SELECT * FROM {_params.recordset(SUBSCRIPTION)}
    ON CONFLICT (subscription_id) DO UPDATE SET {SUBSCRIPTION.updates("subscription_id", "account_id")},
        updated_at = now()
    WHERE subscriptions.provider_event_id IS DISTINCT FROM excluded.provider_event_id
       OR subscriptions.subscription_group IS DISTINCT FROM excluded.subscription_group
       OR subscriptions.group_mismatch IS DISTINCT FROM excluded.group_mismatch
), items_written AS (
    INSERT INTO subscription_items ({ACCOUNT_ITEM.select()}) SELECT * FROM {_params.recordset(ACCOUNT_ITEM)}
    ON CONFLICT (account_id, subscription_id, price_id) DO UPDATE SET {ITEM.updates("subscription_id", "price_id")},
        updated_at = now()
), assignments_written AS (
    INSERT INTO plan_assignments ({ASSIGNMENT.select()}) SELECT * FROM {_params.recordset(ASSIGNMENT)}
), bindings_written AS (
    INSERT INTO grant_bindings ({BINDING.select()}) SELECT * FROM {_params.recordset(BINDING)}
), audited AS (
    INSERT INTO audit_log ({AUDIT.select()})
    SELECT {", ".join("coalesce(v.at, now())" if name == "at" else f"v.{name}" for name in AUDIT.names)}
    FROM {_params.recordset(AUDIT)}
), history_written AS (
    INSERT INTO account_history ({HISTORY.select()}) SELECT * FROM {_params.recordset(HISTORY)}
    ON CONFLICT (account_id, provider_event_id) DO UPDATE SET ended_at = excluded.ended_at,
        reaches = excluded.reaches, summarized = true
), bumped AS (
    UPDATE accounts SET revision = revision + 1, updated_at = now() WHERE account_id = ANY({_params.next()})
    RETURNING account_id, revision
)
SELECT account_id, revision, pg_notify({_params.next()}, revision || ':' || account_id) FROM bumped"""


async def write_rows(conn: Conn, subscriptions: Sequence[SubscriptionRecord] = (),
                     items: Sequence[AccountItem] = (), assignments: Sequence[AccountAssignment] = (),
                     bindings: Sequence[AccountBinding] = (), audit: Sequence[AuditEntry] = (),
                     changed_accounts: Sequence[str] = (), history: Sequence[HistoryEntry] = ()
                     ) -> list[tuple[str, int]]:
    """WRITE_ROWS: the last of each subscription, and of each account's item of a subscription for a price, wins.
    Returns each changed account with its new revision."""
    if not (subscriptions or items or assignments or bindings or audit or changed_accounts or history):
        return []
    latest_subscriptions = {s.subscription_id: s for s in subscriptions}
    latest_items = {(i.account_id, i.item.subscription_id, i.item.price_id): i for i in items}
    bumped = await conn.fetch(
        WRITE_ROWS, *SUBSCRIPTION.parameters(latest_subscriptions.values()),
        *ACCOUNT_ITEM.parameters(latest_items.values()), *ASSIGNMENT.parameters(assignments),
        *BINDING.parameters(bindings), *AUDIT.parameters(audit), *HISTORY.parameters(history), list(changed_accounts),
        CHANGES_CHANNEL)
    return [(row["account_id"], row["revision"]) for row in bumped]


async def delete_assignments(conn: Conn, keys: Sequence[tuple[str, int]]) -> None:
    """Entries of (account id, row id): the row's key."""
    if keys:
        await conn.execute("DELETE FROM plan_assignments p USING unnest($1::text[], $2::bigint[]) AS k(a, id) "
                           "WHERE p.account_id = k.a AND p.id = k.id", [a for a, _ in keys], [i for _, i in keys])


async def delete_bindings(conn: Conn, keys: Sequence[tuple[str, int]]) -> None:
    """Entries of (account id, row id): the row's key."""
    if keys:
        await conn.execute("DELETE FROM grant_bindings b USING unnest($1::text[], $2::bigint[]) AS k(a, id) "
                           "WHERE b.account_id = k.a AND b.id = k.id", [a for a, _ in keys], [i for _, i in keys])


async def delete_items(conn: Conn, keys: Sequence[tuple[str, str, str]]) -> None:
    """Entries of (account id, subscription id, price id): the row's key."""
    if keys:
        await conn.execute(
            "DELETE FROM subscription_items i USING unnest($1::text[], $2::text[], $3::text[]) AS k(a, s, p) "
            "WHERE i.account_id = k.a AND i.subscription_id = k.s AND i.price_id = k.p",
            [a for a, _, _ in keys], [s for _, s, _ in keys], [p for _, _, p in keys])


INSERT_ISSUES = f"""
INSERT INTO issued_grants ({ISSUANCE.select()}) SELECT * FROM {ISSUANCE.recordset(1)}
ON CONFLICT (issue_key) DO NOTHING"""


async def insert_issues(conn: Conn, issuances: Sequence[Issuance]) -> None:
    """Records each issue once: a key issued before is left as it is (never issued twice)."""
    if issuances:
        await conn.execute(INSERT_ISSUES, *ISSUANCE.parameters(issuances))

