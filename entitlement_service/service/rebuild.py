"""Re-derives an account's subscriptions, assignments, bindings, funding and purchase outcomes
from every provider snapshot it holds, and collects only the difference, audited."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from entitlement_service.db import queries as q
from entitlement_service.db import rows
from entitlement_service.domain import account as account_rules
from entitlement_service.domain.account import AccountState, PlacedAssignment, PlacedBinding
from entitlement_service.domain.funding import invoice_issues
from entitlement_service.domain.model import PurchaseState, Status
from entitlement_service.domain.provider import InvoiceSnapshot, ProviderEvent, SubscriptionSnapshot
from entitlement_service.domain.purchases import next_state
from entitlement_service.domain.timeline import EFFECTIVE, Derived
from entitlement_service.service.account_store import StoredAccount, Writes, load_accounts
from entitlement_service.service.catalog_cache import CatalogView
from entitlement_service.service.deps import Deps
from entitlement_service.service.metrics import FINALIZE_SECONDS


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _assignment_key(p: PlacedAssignment) -> tuple[object, ...]:
    r = p.row
    return (r.subscription_id, r.subscription_group, r.price_id, r.billing_plan_code, r.priority, r.gate_bundle,
            r.started_at, p.window.start, p.window.end, p.conflict_with)


def _binding_key(p: PlacedBinding) -> tuple[object, ...]:
    r = p.row
    return (r.subscription_id, r.subscription_group, r.price_id, r.product_id, r.grant_program_code, r.amount,
            r.scale_by_quantity, r.quantity, r.source.value, p.window.start, p.window.end, p.conflict_with)


class Rebuild:
    """One account's derivation from its stored rows (read with its row locked); what changed goes
    to `writes`, for the caller to flush inside the same transaction."""

    def __init__(self, deps: Deps, catalog: CatalogView, stored: StoredAccount, writes: Writes, account_id: str,
                 cause: str, cause_id: str, provider_at: datetime | None = None,
                 decoded: Mapping[bytes, ProviderEvent] | None = None) -> None:
        self.deps, self.catalog, self.stored, self.writes = deps, catalog, stored, writes
        self.account_id, self.cause, self.cause_id, self.provider_at = account_id, cause, cause_id, provider_at
        # Events the caller already holds in domain form, by their stored snapshot: not decoded again.
        self.decoded = decoded or {}

    def note(self, entity: str, entity_id: str, action: str, detail: dict[str, Any]) -> None:
        self.writes.audit.append((self.account_id, self.cause, self.cause_id, entity, entity_id, action, detail))

    def run(self) -> bool:
        """True when anything the account is entitled to, or any of its rows, changed; the account
        then moves to a new revision when the writes are flushed."""
        subscriptions: dict[str, list[SubscriptionSnapshot]] = {}
        invoices: list[InvoiceSnapshot] = []
        for stored in self.stored.history:
            event = self.decoded.get(stored)
            obj = (event or self.deps.decode_event(stored)).object
            if isinstance(obj, SubscriptionSnapshot):
                subscriptions.setdefault(obj.subscription_id, []).append(obj)
            elif isinstance(obj, InvoiceSnapshot):
                invoices.append(obj)
        config = self.catalog.config
        prices = self.catalog.prices_for({i.price.price_id for snaps in subscriptions.values() for s in snaps
                                          for i in s.items})
        state = account_rules.rebuild(subscriptions, prices, config)
        stackable = {code: g.stackable for code, g in config.groups.items()}
        changed = self._subscriptions(state)
        changed = self._items(state) or changed
        changed = self._assignments(state, stackable) or changed
        changed = self._bindings(state) or changed
        changed = self._funding(state, invoices, config.grant_programs) or changed
        self._purchases(state)
        self._mismatches(state)
        if changed:
            self.writes.changed_accounts.append(self.account_id)
        return changed

    def _subscriptions(self, state: AccountState) -> bool:
        changed = False
        for d in state.subscriptions:
            s = d.latest
            held = self.stored.subscriptions.get(s.subscription_id)
            if held is not None and (held["provider_event_id"], held["subscription_group"], held["group_mismatch"]) == (
                    s.event_id, d.subscription_group, d.group_mismatch):
                continue
            self.writes.subscriptions.append((
                s.subscription_id, self.account_id, s.provider_customer_id, d.subscription_group, s.status.value, s.at,
                s.event_id, s.start_date, s.trial_end, s.current_period_start, s.current_period_end, s.cancel_at,
                s.cancel_at_period_end, s.canceled_at, s.ended_at, s.purchase_id, s.metadata, d.group_mismatch,
                s.refetched))
            changed = True
            self.note("subscription", s.subscription_id, "upsert",
                      {"status": s.status.value, "provider_updated_at": _iso(s.at), "event": s.event_id,
                       "subscription_group": d.subscription_group})
        return changed

    def _items(self, state: AccountState) -> bool:
        stored = {(r["subscription_id"], r["price_id"]): r for r in self.stored.items}
        changed = False
        for item in state.items:
            held = stored.pop((item.subscription_id, item.price_id), None)
            window = rows.to_window(held["effective"]) if held else None
            if held and (held["quantity"], held["item_id"], window, held["current_period_end"]) == (
                    item.quantity, item.item_id, item.window, item.current_period_end):
                continue
            self.writes.items.append(item)
            changed = True
            self.note("subscription_item", f"{item.subscription_id}/{item.price_id}", "upsert",
                      {"quantity": item.quantity, "effective_from": _iso(item.window.start),
                       "effective_until": _iso(item.window.end)})
        if stored:
            self.writes.removed_items.extend(stored)
            for key in stored:
                self.note("subscription_item", "/".join(key), "delete", {})
            changed = True
        return changed

    def _assignments(self, state: AccountState, stackable: dict[str, bool]) -> bool:
        stored = {_assignment_key(rows.placed_assignment(r)): r["id"] for r in self.stored.assignments}
        wanted = {_assignment_key(p): p for p in state.assignments}
        gone = [key for key in stored if key not in wanted]
        new = [p for key, p in wanted.items() if key not in stored]
        self.writes.removed_assignments.extend(stored[key] for key in gone)
        self.writes.assignments.extend(
            (self.account_id, stackable.get(p.row.subscription_group, False), p) for p in new)
        for key in gone:
            self.note("plan_assignment", f"{key[0]}/{key[2]}", "delete", _window_detail(key[7], key[8], key[9]))
        for p in new:
            self.note("plan_assignment", f"{p.row.subscription_id}/{p.row.price_id}", "insert",
                      {"billing_plan_code": p.row.billing_plan_code,
                       **_window_detail(p.window.start, p.window.end, p.conflict_with)})
        return bool(gone or new)

    def _bindings(self, state: AccountState) -> bool:
        stored = {_binding_key(rows.placed_binding(r)): r["id"] for r in self.stored.bindings}
        wanted = {_binding_key(p): p for p in state.bindings}
        gone = [key for key in stored if key not in wanted]
        new = [p for key, p in wanted.items() if key not in stored]
        self.writes.removed_bindings.extend(stored[key] for key in gone)
        self.writes.bindings.extend((self.account_id, p) for p in new)
        for key in gone:
            detail = _window_detail(key[9], key[10], key[11])
            self.note("grant_binding", f"{key[0]}/{key[2]}/{key[4]}", "delete", detail)
        for p in new:
            self.note("grant_binding", f"{p.row.subscription_id}/{p.row.price_id}/{p.row.grant_program_code}", "insert",
                      {"amount": p.row.amount, "quantity": p.row.quantity, "source": p.row.source.value,
                       **_window_detail(p.window.start, p.window.end, p.conflict_with)})
        return bool(gone or new)

    def _funding(self, state: AccountState, invoices: list[InvoiceSnapshot], programs: dict[str, Any]) -> bool:
        issued = False
        for invoice in invoices:
            for issue in invoice_issues(invoice, state.bindings, programs):
                if issue.issue_key in self.stored.issue_keys:
                    continue
                self.stored.issue_keys.add(issue.issue_key)
                self.writes.issues.append((self.account_id, issue, self.cause_id))
                issued = True
                self.note("issued_grant", issue.issue_key, "insert",
                          {"grant_program_code": issue.grant_program_code, "amount": issue.amount})
        return issued

    def _purchases(self, state: AccountState) -> None:
        by_sub = {d.latest.subscription_id: d for d in state.subscriptions}
        by_purchase = {d.latest.purchase_id: d for d in state.subscriptions if d.latest.purchase_id}
        for purchase in self.stored.purchases:
            derived = by_sub.get(purchase["subscription_id"] or "") or by_purchase.get(purchase["purchase_id"])
            if derived is None:
                continue
            sub_id = derived.latest.subscription_id
            if purchase["subscription_id"] is None:
                self.writes.purchase_subscriptions.append((purchase["purchase_id"], sub_id))
            wanted, reason = _purchase_outcome(state, derived)
            if wanted is None:
                continue
            target = next_state(PurchaseState(purchase["state"]), wanted)
            if target is not None:
                now = self.deps.clock()
                self.writes.transitions.append((purchase["purchase_id"], purchase["state"], target.value, now,
                                                self.cause_id, reason))
                observe_transition(purchase, target, now, self.provider_at)
                self.note("purchase", purchase["purchase_id"], target.value, {"reason": reason})

    def _mismatches(self, state: AccountState) -> None:
        wanted: set[str] = set()
        for (sub_id, group), lost in state.lost.items():
            fingerprint = f"group_conflict:{self.account_id}:{group}:{sub_id}"
            wanted.add(fingerprint)
            diff = {"subscription_group": group, "lost_to": sorted({loss.winner for loss in lost}),
                    "windows": [[_iso(loss.window.start), _iso(loss.window.end)] for loss in lost]}
            self.writes.opened_mismatches.append(("group_conflict", self.account_id, sub_id, fingerprint, diff))
        for d in state.subscriptions:
            if d.group_mismatch:
                fingerprint = f"group_mismatch:{d.latest.subscription_id}"
                wanted.add(fingerprint)
                self.writes.opened_mismatches.append(("group_mismatch", self.account_id, d.latest.subscription_id,
                                                      fingerprint, {"reason": d.group_mismatch}))
        for fingerprint, kind in self.stored.open_mismatches.items():
            if kind in RESOLUTIONS and fingerprint not in wanted:
                self.writes.closed_mismatches.append((fingerprint, RESOLUTIONS[kind]))


# The mismatches a rebuild opens, and what closes them when the rebuild no longer finds them.
RESOLUTIONS = {"group_conflict": "no longer conflicting", "group_mismatch": "items in one group again"}


async def rebuild_account(conn: q.Conn, deps: Deps, account_id: str, cause: str, cause_id: str,
                          provider_at: datetime | None = None) -> bool:
    """One account's rebuild, written at once (the account's row lock held by the caller)."""
    stored, _ = await load_accounts(conn, [account_id])
    writes = Writes()
    changed = Rebuild(deps, await deps.catalog.view(conn), stored[account_id], writes, account_id, cause, cause_id,
                      provider_at).run()
    await writes.flush(conn)
    return changed


def observe_transition(purchase: Any, target: PurchaseState, now: datetime, provider_at: datetime | None) -> None:
    """When a purchase finalizes, how long the provider's completion and the browser's return
    waited for it."""
    if target is PurchaseState.FINALIZED:
        if provider_at is not None:
            FINALIZE_SECONDS.labels("provider_completion").observe(max((now - provider_at).total_seconds(), 0))
        if purchase["returned_at"] is not None:
            FINALIZE_SECONDS.labels("browser_return").observe(max((now - purchase["returned_at"]).total_seconds(), 0))


async def record_transition(conn: q.Conn, deps: Deps, purchase: Any, target: PurchaseState, cause_id: str | None,
                            reason: str, provider_at: datetime | None) -> None:
    """Moves a purchase at once and measures its finalization."""
    now = deps.clock()
    await q.record_transition(conn, purchase["purchase_id"], purchase["state"], target.value, now, cause_id, reason)
    observe_transition(purchase, target, now, provider_at)


def _window_detail(start: object, end: object, conflict_with: object) -> dict[str, Any]:
    detail: dict[str, Any] = {"effective_from": _iso(start) if isinstance(start, datetime) else None,
                              "effective_until": _iso(end) if isinstance(end, datetime) else None}
    if conflict_with:
        detail["conflict_with_subscription_id"] = conflict_with
    return detail


def _purchase_outcome(state: AccountState, derived: Derived) -> tuple[PurchaseState | None, str]:
    """A subscription purchase is finalized once its subscription took effect, or a conflict when
    at that instant another subscription held its group; failed when it expired unpaid."""
    sub_id = derived.latest.subscription_id
    if derived.claims:
        winner = state.lost_at_start(sub_id)
        if winner is not None:
            return PurchaseState.CONFLICT, f"lost its group to {winner}"
        return PurchaseState.FINALIZED, f"{sub_id} took effect"
    if derived.latest.status is Status.INCOMPLETE_EXPIRED:
        return PurchaseState.FAILED, f"{sub_id} expired before its first payment"
    if derived.latest.status in EFFECTIVE:
        return PurchaseState.FINALIZED, f"{sub_id} is {derived.latest.status.value}"
    return None, ""

