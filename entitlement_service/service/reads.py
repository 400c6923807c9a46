"""Reading an account's entitlements, now or as of any instant, with the reasons behind them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from catalog_rules.model import CatalogConfig
from entitlement_service.db import queries as q
from entitlement_service.db import rows
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.entitlements import GateDecision, bindings_at, decide_gates, effective_at, next_change
from entitlement_service.domain.model import Status
from entitlement_service.domain.windows import Window
from entitlement_service.service.changes import Watchers
from entitlement_service.service.deps import Deps


@dataclass(frozen=True)
class ItemView:
    item_id: str
    price_id: str
    product_id: str
    quantity: int
    window: Window
    current_period_start: datetime | None
    current_period_end: datetime | None


@dataclass(frozen=True)
class SubscriptionView:
    subscription_id: str
    account_id: str
    provider_customer_id: str
    subscription_group: str | None
    status: Status
    provider_updated_at: datetime
    started_at: datetime | None
    trial_end: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at: datetime | None
    cancel_at_period_end: bool
    ended_at: datetime | None
    purchase_id: str | None
    items: tuple[ItemView, ...]


@dataclass(frozen=True)
class IssuedView:
    issue_key: str
    grant_program_code: str
    unit: str
    amount: int
    cadence: str
    invoice_id: str | None
    checkout_session_id: str | None
    subscription_id: str | None
    period: Window | None
    issued_at: datetime


@dataclass(frozen=True)
class AccountRows:
    """Everything stored for an account, before choosing an instant."""

    account_id: str
    revision: int
    config: CatalogConfig
    assignments: tuple[PlacedAssignment, ...]
    bindings: tuple[PlacedBinding, ...]
    funding: tuple[IssuedView, ...]
    subscriptions: tuple[SubscriptionView, ...]


@dataclass(frozen=True)
class EntitlementsView:
    account_id: str
    as_of: datetime
    revision: int
    config: CatalogConfig
    plans: tuple[PlacedAssignment, ...]
    bindings: tuple[PlacedBinding, ...]
    funding: tuple[IssuedView, ...]
    decision: GateDecision
    subscriptions: tuple[SubscriptionView, ...]
    next_change: datetime | None

    def signature(self) -> tuple[object, ...]:
        """What a watcher sees change: revision aside, the plans, bindings and gates in force."""
        return (tuple((p.row.subscription_id, p.row.price_id, p.conflict_with) for p in self.plans),
                tuple((b.row.subscription_id, b.row.price_id, b.row.grant_program_code, b.row.quantity)
                      for b in self.bindings), self.decision.gate_bundle, self.decision.gates)


async def account_rows(conn: q.Conn, account_id: str) -> AccountRows:
    account = await q.get_account(conn, account_id)
    subs = list((await q.subscription_heads(conn, account_id)).values())
    items: dict[str, list[ItemView]] = {}
    for r in await q.subscription_items(conn, [s["subscription_id"] for s in subs]):
        items.setdefault(r["subscription_id"], []).append(ItemView(
            r["item_id"], r["price_id"], r["product_id"], r["quantity"], rows.to_window(r["effective"]),
            r["current_period_start"], r["current_period_end"]))
    return AccountRows(
        account_id=account_id,
        revision=account["revision"] if account else 0,
        config=await q.load_config(conn),
        assignments=tuple(rows.placed_assignment(r) for r in await q.stored_assignments(conn, account_id)),
        bindings=tuple(rows.placed_binding(r) for r in await q.stored_bindings(conn, account_id)),
        funding=tuple(IssuedView(
            r["issue_key"], r["grant_program_code"], r["unit"], r["amount"], r["cadence"], r["invoice_id"],
            r["checkout_session_id"], r["subscription_id"], rows.to_window(r["period"]) if r["period"] else None,
            r["issued_at"]) for r in await q.issued_grants(conn, account_id)),
        subscriptions=tuple(SubscriptionView(
            s["subscription_id"], s["account_id"], s["provider_customer_id"], s["subscription_group"],
            Status(s["status"]), s["provider_updated_at"], s["started_at"], s["trial_end"],
            s["current_period_start"], s["current_period_end"], s["cancel_at"], s["cancel_at_period_end"],
            s["ended_at"], s["purchase_id"], tuple(items.get(s["subscription_id"], ())))
            for s in sorted(subs, key=lambda s: s["subscription_id"])),
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
    async with watchers.subscribe(account_id) as changes:
        view = await entitlements(deps, account_id, None)
        yield view, True
        while True:
            wait_s = (view.next_change - deps.clock()).total_seconds() if view.next_change else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changes.get(), timeout=max(wait_s, 0.0) if wait_s is not None else None)
            while not changes.empty():
                changes.get_nowait()
            latest = await entitlements(deps, account_id, None)
            if (latest.revision, latest.signature()) != (view.revision, view.signature()):
                yield latest, False
            view = latest
