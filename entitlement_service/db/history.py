"""What deriving accounts reads, for many accounts at once: one statement per kind of row for
every account of a batch, so a batch's round trips do not grow with its size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from entitlement_service.db.derived import (
    ASSIGNMENT_SELECT,
    BINDING_SELECT,
    ITEM,
    SUBSCRIPTION,
    placed_assignment,
    placed_binding,
)
from entitlement_service.db.pool import Conn
from entitlement_service.db.purchases import subscription_purchases_of
from entitlement_service.db.reads import ISSUED
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.records import IssuedGrantRecord, PurchaseRecord, StoredAccount, SubscriptionRecord
from entitlement_service.domain.timeline import ItemRow


@dataclass
class _Loading:
    history: list[bytes] = field(default_factory=list)
    subscriptions: dict[str, SubscriptionRecord] = field(default_factory=dict)
    items: list[ItemRow] = field(default_factory=list)
    assignments: dict[int, PlacedAssignment] = field(default_factory=dict)
    bindings: dict[int, PlacedBinding] = field(default_factory=dict)
    purchases: list[PurchaseRecord] = field(default_factory=list)
    issued: list[IssuedGrantRecord] = field(default_factory=list)
    open_mismatches: dict[str, str] = field(default_factory=dict)

    def stored(self) -> StoredAccount:
        return StoredAccount(tuple(self.history), self.subscriptions, tuple(self.items), self.assignments,
                             self.bindings, tuple(self.purchases), tuple(self.issued), self.open_mismatches)


async def load_accounts(conn: Conn, account_ids: Sequence[str], history_types: Sequence[str],
                        history_outcomes: Sequence[str], subscription_ids: Sequence[str] = ()
                        ) -> tuple[dict[str, StoredAccount], dict[str, SubscriptionRecord]]:
    """Each account's stored state, its history being its events with one of `history_outcomes`
    and a type matching a `history_types` pattern, in provider order; and every subscription by
    id (the accounts' own and the ones named, wherever they are held)."""
    loading = {account_id: _Loading() for account_id in account_ids}
    # Two index scans: an OR of the two conditions would read the whole table.
    heads = {r["subscription_id"]: SUBSCRIPTION.read(r) for r in await conn.fetch(
        f"SELECT {SUBSCRIPTION.select()} FROM subscriptions WHERE account_id = ANY($1) "
        f"UNION ALL SELECT {SUBSCRIPTION.select()} FROM subscriptions WHERE subscription_id = ANY($2)",
        list(account_ids), list(subscription_ids))}
    if not account_ids:
        return {}, heads
    accounts = list(account_ids)
    for r in await conn.fetch(
            "SELECT account_id, snapshot FROM provider_events WHERE account_id = ANY($1) "
            "AND outcome = ANY($2::text[]) AND snapshot IS NOT NULL AND type LIKE ANY($3::text[]) "
            "ORDER BY account_id, created, provider_event_id", accounts, list(history_outcomes), list(history_types)):
        loading[r["account_id"]].history.append(r["snapshot"])
    for sub_id, head in heads.items():
        if head.account_id in loading:
            loading[head.account_id].subscriptions[sub_id] = head
    for r in await conn.fetch(f"SELECT account_id, {ITEM.select()} FROM subscription_items WHERE account_id = ANY($1)",
                              accounts):
        loading[r["account_id"]].items.append(ITEM.read(r, 1))
    for r in await conn.fetch(f"SELECT account_id, {ASSIGNMENT_SELECT} FROM plan_assignments "
                              "WHERE account_id = ANY($1) ORDER BY account_id, lower(effective), id", accounts):
        loading[r["account_id"]].assignments[r["id"]] = placed_assignment(r)
    for r in await conn.fetch(f"SELECT account_id, {BINDING_SELECT} FROM grant_bindings "
                              "WHERE account_id = ANY($1) ORDER BY account_id, lower(effective), id", accounts):
        loading[r["account_id"]].bindings[r["id"]] = placed_binding(r)
    for purchase in await subscription_purchases_of(conn, accounts):
        loading[purchase.account_id].purchases.append(purchase)
    for r in await conn.fetch(f"SELECT account_id, {ISSUED.select()} FROM issued_grants WHERE account_id = ANY($1)",
                              accounts):
        loading[r["account_id"]].issued.append(ISSUED.read(r, 1))
    for r in await conn.fetch("SELECT account_id, kind, fingerprint FROM mismatches "
                              "WHERE account_id = ANY($1) AND closed_at IS NULL", accounts):
        loading[r["account_id"]].open_mismatches[r["fingerprint"]] = r["kind"]
    return {account_id: found.stored() for account_id, found in loading.items()}, heads
