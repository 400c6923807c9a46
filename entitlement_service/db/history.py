"""What deriving accounts reads, for many accounts at once: one statement per kind of row for
every account of a batch, so a batch's round trips do not grow with its size. (The history rows
are written with the rest of a derivation's rows, db/derived.py.)

An account is read whole, or from an instant on (`since`): then only the part of its history a
derivation from that instant reads (each subscription's snapshots from the last one before it,
and the invoices reaching it) and the assignments and bindings still open then. What is read that
way does not grow with the account's history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from entitlement_service.domain.records import (
    IssuedGrantRecord,
    PurchaseRecord,
    StoredAccount,
    SubscriptionRecord,
)
from entitlement_service.domain.timeline import Earlier, ItemRow

# The accounts asked for, each from its instant on (the earliest instant: whole).
_SINCE = "SELECT * FROM unnest($1::text[], $2::timestamptz[]) AS c(account_id, since)"

HISTORY_WHOLE = "SELECT account_id, snapshot, summarized FROM account_history WHERE account_id = ANY($1)"

# Per subscription of the accounts: the provider time of its last snapshot before `since` (its part
# begins there; none: it is whole), its first snapshot's and its earliest end; then its snapshots
# from that point, and the paid invoices reaching `since`. A row with no snapshot says the account
# holds a row not summarized yet. Every lookup is an index range (`subs` is computed first, so its
# `base` bounds the range rather than filtering every row).
HISTORY_SINCE = f"""
WITH c AS ({_SINCE}), subs AS MATERIALIZED (
    SELECT c.account_id, s.subscription_id,
        (SELECT max(h.provider_at) FROM account_history h WHERE h.account_id = c.account_id
            AND h.subscription_id = s.subscription_id AND NOT h.invoice AND h.provider_at < c.since) AS base,
        (SELECT min(h.provider_at) FROM account_history h WHERE h.account_id = c.account_id
            AND h.subscription_id = s.subscription_id AND NOT h.invoice) AS first_at,
        (SELECT min(h.ended_at) FROM account_history h WHERE h.account_id = c.account_id
            AND h.subscription_id = s.subscription_id AND h.ended_at IS NOT NULL) AS ended_at
    FROM c JOIN subscriptions s ON s.account_id = c.account_id
)
SELECT subs.account_id, subs.subscription_id, subs.base, subs.first_at, subs.ended_at, h.snapshot, h.summarized
FROM subs CROSS JOIN LATERAL (
    SELECT h.snapshot, h.summarized FROM account_history h WHERE h.account_id = subs.account_id
        AND h.subscription_id = subs.subscription_id AND NOT h.invoice
        AND h.provider_at >= coalesce(subs.base, '-infinity')) h
UNION ALL
SELECT c.account_id, NULL, NULL, NULL, NULL, h.snapshot, h.summarized
FROM c JOIN account_history h ON h.account_id = c.account_id AND h.invoice AND h.reaches >= c.since
UNION ALL
SELECT c.account_id, NULL, NULL, NULL, NULL, NULL, false
FROM c WHERE EXISTS (SELECT 1 FROM account_history h WHERE h.account_id = c.account_id AND NOT h.summarized)"""


@dataclass
class _Loading:
    since: datetime | None
    history: list[bytes] = field(default_factory=list)
    subscriptions: dict[str, SubscriptionRecord] = field(default_factory=dict)
    items: list[ItemRow] = field(default_factory=list)
    assignments: dict[int, PlacedAssignment] = field(default_factory=dict)
    bindings: dict[int, PlacedBinding] = field(default_factory=dict)
    purchases: list[PurchaseRecord] = field(default_factory=list)
    issued: list[IssuedGrantRecord] = field(default_factory=list)
    open_mismatches: dict[str, str] = field(default_factory=dict)
    earlier: dict[str, Earlier] = field(default_factory=dict)
    unsummarized: set[bytes] = field(default_factory=set)

    def add(self, snapshot: bytes, summarized: bool) -> None:
        self.history.append(snapshot)
        if not summarized:
            self.unsummarized.add(snapshot)

    def stored(self) -> StoredAccount:
        return StoredAccount(tuple(self.history), self.subscriptions, tuple(self.items), self.assignments,
                             self.bindings, tuple(self.purchases), tuple(self.issued), self.open_mismatches,
                             self.since, self.earlier, frozenset(self.unsummarized))


async def load_accounts(conn: Conn, since: Mapping[str, datetime | None], subscription_ids: Sequence[str] = ()
                        ) -> tuple[dict[str, StoredAccount], dict[str, SubscriptionRecord]]:
    """Each account's stored state, whole or from its `since` instant on (None: whole), and every
    subscription by id (the accounts' own and the ones named, wherever they are held). An account
    asked from an instant whose history holds a row not summarized yet is read whole."""
    loading = {account_id: _Loading(at) for account_id, at in since.items()}
    # Two index scans: an OR of the two conditions would read the whole table.
    heads = {r["subscription_id"]: SUBSCRIPTION.read(r) for r in await conn.fetch(
        f"SELECT {SUBSCRIPTION.select()} FROM subscriptions WHERE account_id = ANY($1) "
        f"UNION ALL SELECT {SUBSCRIPTION.select()} FROM subscriptions WHERE subscription_id = ANY($2)",
        list(since), list(subscription_ids))}
    if not since:
        return {}, heads
    partial = [a for a, found in loading.items() if found.since is not None]
    for r in await conn.fetch(HISTORY_SINCE, partial, [loading[a].since for a in partial]) if partial else ():
        found = loading[r["account_id"]]
        if r["snapshot"] is None:  # read whole instead
            loading[r["account_id"]] = _Loading(None)
        elif found.since is not None:
            found.add(r["snapshot"], r["summarized"])
            if r["base"] is not None:
                found.earlier[r["subscription_id"]] = Earlier(r["first_at"], r["ended_at"])
    whole = [a for a, found in loading.items() if found.since is None]
    for r in await conn.fetch(HISTORY_WHOLE, whole) if whole else ():
        loading[r["account_id"]].add(r["snapshot"], r["summarized"])
    accounts = list(loading)
    instants = [found.since or EARLIEST for found in loading.values()]
    for sub_id, head in heads.items():
        if head.account_id in loading:
            loading[head.account_id].subscriptions[sub_id] = head
    for r in await conn.fetch(f"SELECT account_id, {ITEM.select()} FROM subscription_items WHERE account_id = ANY($1)",
                              accounts):
        loading[r["account_id"]].items.append(ITEM.read(r, 1))
    for r in await conn.fetch(f"WITH c AS ({_SINCE}) SELECT p.account_id, {_prefixed('p', ASSIGNMENT_SELECT)} "
                              "FROM c JOIN plan_assignments p ON p.account_id = c.account_id "
                              "AND coalesce(upper(p.effective), 'infinity') >= c.since "
                              "ORDER BY p.account_id, lower(p.effective), p.id", accounts, instants):
        loading[r["account_id"]].assignments[r["id"]] = placed_assignment(r)
    for r in await conn.fetch(f"WITH c AS ({_SINCE}) SELECT b.account_id, {_prefixed('b', BINDING_SELECT)} "
                              "FROM c JOIN grant_bindings b ON b.account_id = c.account_id "
                              "AND coalesce(upper(b.effective), 'infinity') >= c.since "
                              "ORDER BY b.account_id, lower(b.effective), b.id", accounts, instants):
        loading[r["account_id"]].bindings[r["id"]] = placed_binding(r)
    for purchase in await subscription_purchases_of(conn, accounts):
        loading[purchase.account_id].purchases.append(purchase)
    for r in await conn.fetch(f"WITH c AS ({_SINCE}) SELECT g.account_id, {ISSUED.select('g')} "
                              "FROM c JOIN issued_grants g ON g.account_id = c.account_id "
                              "AND coalesce(upper(g.period), 'infinity') >= c.since", accounts, instants):
        loading[r["account_id"]].issued.append(ISSUED.read(r, 1))
    for r in await conn.fetch("SELECT account_id, kind, fingerprint FROM mismatches "
                              "WHERE account_id = ANY($1) AND closed_at IS NULL", accounts):
        loading[r["account_id"]].open_mismatches[r["fingerprint"]] = r["kind"]
    return {account_id: found.stored() for account_id, found in loading.items()}, heads


# Read as '-infinity': every row is at or after it.
EARLIEST = datetime.min.replace(tzinfo=UTC)


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns.split(", "))
