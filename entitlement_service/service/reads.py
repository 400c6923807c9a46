"""Reading an account's entitlements, now or as of any instant, with the reasons behind them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from catalog_rules.model import CatalogConfig
from entitlement_service.db import accounts, catalog, reads
from entitlement_service.db.pool import Conn
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.entitlements import GateDecision, bindings_at, decide_gates, effective_at, next_change
from entitlement_service.domain.records import IssuedGrantRecord, SubscriptionRecord
from entitlement_service.domain.timeline import ItemRow
from entitlement_service.domain.windows import Window
from entitlement_service.service.changes import Watchers
from entitlement_service.service.deps import Deps


@dataclass(frozen=True)
class SubscriptionView:
    subscription: SubscriptionRecord
    items: tuple[ItemRow, ...]


@dataclass(frozen=True)
class AccountRows:
    """Everything stored for an account, before choosing an instant."""

    account_id: str
    revision: int
    config: CatalogConfig
    assignments: tuple[PlacedAssignment, ...]
    bindings: tuple[PlacedBinding, ...]
    funding: tuple[IssuedGrantRecord, ...]
    subscriptions: tuple[SubscriptionView, ...]


@dataclass(frozen=True)
class EntitlementsView:
    account_id: str
    as_of: datetime
    revision: int
    config: CatalogConfig
    plans: tuple[PlacedAssignment, ...]
    bindings: tuple[PlacedBinding, ...]
    funding: tuple[IssuedGrantRecord, ...]
    decision: GateDecision
    subscriptions: tuple[SubscriptionView, ...]
    next_change: datetime | None

    def signature(self) -> tuple[object, ...]:
        """What a watcher sees change: revision aside, the plans, bindings and gates in force."""
        return (tuple((p.row.subscription_id, p.row.price_id, p.conflict_with) for p in self.plans),
                tuple((b.row.subscription_id, b.row.price_id, b.row.grant_program_code, b.row.quantity)
                      for b in self.bindings), self.decision.gate_bundle, self.decision.gates)


async def account_rows(conn: Conn, account_id: str) -> AccountRows:
    account = await accounts.get_account(conn, account_id)
    subscriptions = await reads.subscriptions_of(conn, account_id)
    items: dict[str, list[ItemRow]] = {}
    for item in await reads.subscription_items(conn, account_id, [s.subscription_id for s in subscriptions]):
        items.setdefault(item.subscription_id, []).append(item)
    return AccountRows(
        account_id=account_id,
        revision=account.revision if account else 0,
        config=await catalog.load_config(conn),
        assignments=tuple(await reads.assignments_of(conn, account_id)),
        bindings=tuple(await reads.bindings_of(conn, account_id)),
        funding=tuple(await reads.issued_grants(conn, account_id)),
        subscriptions=tuple(SubscriptionView(s, tuple(items.get(s.subscription_id, ()))) for s in subscriptions),
    )


def view_at(stored: AccountRows, as_of: datetime) -> EntitlementsView:
    plans = effective_at(stored.assignments, as_of)
    return EntitlementsView(
        account_id=stored.account_id, as_of=as_of, revision=stored.revision, config=stored.config,
        plans=tuple(plans), bindings=tuple(bindings_at(stored.bindings, as_of)),
        funding=tuple(f for f in stored.funding if f.issued_at <= as_of),
        decision=decide_gates(plans, stored.config.gate_bundles),
        subscriptions=stored.subscriptions,
        next_change=next_change([*stored.assignments, *stored.bindings], as_of),
    )


async def entitlements(deps: Deps, account_id: str, as_of: datetime | None) -> EntitlementsView:
    async with deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        stored = await account_rows(conn, account_id)
    return view_at(stored, as_of or deps.clock())


@dataclass(frozen=True)
class Explanation:
    kind: str
    assignment: PlacedAssignment | None
    binding: PlacedBinding | None
    effective: bool
    reason: str


def _window_text(window: Window) -> str:
    end = window.end.isoformat() if window.end else "open"
    return f"[{window.start.isoformat()}, {end})"


def _why(placed: PlacedAssignment | PlacedBinding, as_of: datetime) -> tuple[bool, str]:
    window = _window_text(placed.window)
    if not placed.window.contains(as_of):
        return False, f"window {window} does not contain as_of"
    if placed.conflict_with is not None:
        return False, (f"lost group {placed.row.subscription_group} to {placed.conflict_with} during {window} "
                       "(higher plan priority, then later start, then smaller subscription id wins)")
    return True, f"window {window} contains as_of"


def explain(stored: AccountRows, as_of: datetime) -> tuple[EntitlementsView, list[Explanation]]:
    """Every assignment and binding the account ever had, each with whether it holds at `as_of`
    and why."""
    found = [Explanation("plan_assignment", a, None, *_why(a, as_of)) for a in stored.assignments]
    found += [Explanation("grant_binding", None, b, *_why(b, as_of)) for b in stored.bindings]
    return view_at(stored, as_of), found


async def explain_account(deps: Deps, account_id: str, as_of: datetime | None) -> tuple[EntitlementsView,
                                                                                         list[Explanation]]:
    async with deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        stored = await account_rows(conn, account_id)
    return explain(stored, as_of or deps.clock())


async def watch(deps: Deps, watchers: Watchers, account_id: str) -> AsyncIterator[tuple[EntitlementsView, bool]]:
    """The account's entitlements now, then again after each change: a committed change anywhere
    (heard through the change notifications) or a window boundary passing."""
    async with watchers.subscribe(account_id) as wake:
        async with watchers.reading():
            view = await entitlements(deps, account_id, None)
        yield view, True
        while True:
            wait_s = (view.next_change - deps.clock()).total_seconds() if view.next_change else None
            await wake.wait(max(wait_s, 0.0) if wait_s is not None else None, watchers.spread_s)
            async with watchers.reading():
                latest = await entitlements(deps, account_id, None)
            if (latest.revision, latest.signature()) != (view.revision, view.signature()):
                yield latest, False
            view = latest
