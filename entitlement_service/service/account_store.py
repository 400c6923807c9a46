"""What deriving an account reads and writes, for many accounts at a time: reads are fetched in
one statement per kind of row for every account of a batch, and writes are collected and sent
in one statement per kind of row, so the database round trips of a batch do not grow with its
size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from entitlement_service.db import queries as q
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.funding import Issue
from entitlement_service.domain.timeline import ItemRow

Audit = list[tuple[str | None, str, str, str, str, str, dict[str, Any]]]


@dataclass
class StoredAccount:
    """One account's stored state, as its derivation needs it."""

    history: list[bytes] = field(default_factory=list)
    subscriptions: dict[str, asyncpg.Record] = field(default_factory=dict)
    items: list[asyncpg.Record] = field(default_factory=list)
    assignments: list[asyncpg.Record] = field(default_factory=list)
    bindings: list[asyncpg.Record] = field(default_factory=list)
    purchases: list[asyncpg.Record] = field(default_factory=list)
    issue_keys: set[str] = field(default_factory=set)
    open_mismatches: dict[str, str] = field(default_factory=dict)  # fingerprint -> kind


async def load_accounts(conn: q.Conn, account_ids: Sequence[str], subscription_ids: Sequence[str] = ()
                        ) -> tuple[dict[str, StoredAccount], dict[str, asyncpg.Record]]:
    """Each account's rows, and every subscription row by id (the accounts' own and the ones named,
    wherever they are held)."""
    loaded = {account_id: StoredAccount() for account_id in account_ids}
    heads = {r["subscription_id"]: r for r in await q.subscriptions_of(conn, account_ids, subscription_ids)}
    if not account_ids:
        return loaded, heads
    for r in await q.account_histories(conn, account_ids):
        loaded[r["account_id"]].history.append(r["snapshot"])
    for head in heads.values():
        if head["account_id"] in loaded:
            loaded[head["account_id"]].subscriptions[head["subscription_id"]] = head
    account_of = {sub_id: head["account_id"] for sub_id, head in heads.items() if head["account_id"] in loaded}
    for r in await q.items_of_subscriptions(conn, list(account_of)):
        loaded[account_of[r["subscription_id"]]].items.append(r)
    for r in await q.assignments_of(conn, account_ids):
        loaded[r["account_id"]].assignments.append(r)
    for r in await q.bindings_of(conn, account_ids):
        loaded[r["account_id"]].bindings.append(r)
    for r in await q.subscription_purchases_of(conn, account_ids):
        loaded[r["account_id"]].purchases.append(r)
    for r in await q.issue_keys_of(conn, account_ids):
        loaded[r["account_id"]].issue_keys.add(r["issue_key"])
    for r in await q.open_mismatches_of(conn, account_ids):
        loaded[r["account_id"]].open_mismatches[r["fingerprint"]] = r["kind"]
    return loaded, heads


@dataclass
class Writes:
    """Changes collected from any number of accounts' derivations, sent by `flush` in an order
    the constraints accept (removals before the rows replacing them; parents and children
    together, in one statement whose foreign keys are checked at its end)."""

    subscriptions: list[tuple[Any, ...]] = field(default_factory=list)
    items: list[ItemRow] = field(default_factory=list)
    removed_items: list[tuple[str, str]] = field(default_factory=list)
    removed_assignments: list[int] = field(default_factory=list)
    assignments: list[tuple[str, bool, PlacedAssignment]] = field(default_factory=list)
    removed_bindings: list[int] = field(default_factory=list)
    bindings: list[tuple[str, PlacedBinding]] = field(default_factory=list)
    issues: list[tuple[str, Issue, str]] = field(default_factory=list)
    purchase_subscriptions: list[tuple[str, str]] = field(default_factory=list)
    transitions: list[tuple[str, str | None, str, datetime, str | None, str]] = field(default_factory=list)
    opened_mismatches: list[tuple[str, str, str | None, str, dict[str, Any]]] = field(default_factory=list)
    closed_mismatches: list[tuple[str, str]] = field(default_factory=list)
    audit: Audit = field(default_factory=list)
    outcomes: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    changed_accounts: list[str] = field(default_factory=list)

    async def flush(self, conn: q.Conn) -> None:
        # Removals first, so the rows replacing them meet no conflict; each is skipped when empty.
        await q.delete_items(conn, self.removed_items)
        await q.delete_rows(conn, "plan_assignments", self.removed_assignments)
        await q.delete_rows(conn, "grant_bindings", self.removed_bindings)
        await q.write_rows(conn, self.subscriptions, self.items, self.assignments, self.bindings, self.audit,
                           self.changed_accounts)
        await q.insert_issues(conn, self.issues)
        await q.set_purchase_subscriptions(conn, self.purchase_subscriptions)
        await q.record_transitions(conn, self.transitions)
        await q.close_mismatches(conn, self.closed_mismatches)
        await q.open_mismatches(conn, self.opened_mismatches)
        await q.set_event_outcomes(conn, self.outcomes)
