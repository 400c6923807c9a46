"""Re-derives an account's subscriptions, assignments, bindings, funding and purchase outcomes
from every provider snapshot it holds, and writes only the difference, audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from entitlement_service.db import queries as q
from entitlement_service.db import rows
from entitlement_service.domain import account as account_rules
from entitlement_service.domain.account import AccountState, PlacedAssignment, PlacedBinding
from entitlement_service.domain.funding import invoice_issues
from entitlement_service.domain.model import PurchaseState, Status
from entitlement_service.domain.provider import InvoiceSnapshot, SubscriptionSnapshot
from entitlement_service.domain.purchases import next_state
from entitlement_service.domain.timeline import EFFECTIVE, Derived
from entitlement_service.service.deps import Deps
from entitlement_service.service.metrics import FINALIZE_SECONDS

Audit = list[tuple[str | None, str, str, str, str, str, dict[str, Any]]]


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
    """One account's rebuild inside the caller's transaction, with the account row locked."""

    def __init__(self, conn: q.Conn, deps: Deps, account_id: str, cause: str, cause_id: str,
                 provider_at: datetime | None = None) -> None:
        self.conn, self.deps, self.account_id = conn, deps, account_id
        self.cause, self.cause_id, self.provider_at = cause, cause_id, provider_at
        self.audit: Audit = []

    def note(self, entity: str, entity_id: str, action: str, detail: dict[str, Any]) -> None:
        self.audit.append((self.account_id, self.cause, self.cause_id, entity, entity_id, action, detail))

    async def run(self) -> bool:
        """True when anything the account is entitled to, or any of its rows, changed."""
        subscriptions: dict[str, list[SubscriptionSnapshot]] = {}
        invoices: list[InvoiceSnapshot] = []
        for stored in await q.account_history(self.conn, self.account_id):
            obj = self.deps.decode_event(stored).object
            if isinstance(obj, SubscriptionSnapshot):
                subscriptions.setdefault(obj.subscription_id, []).append(obj)
            elif isinstance(obj, InvoiceSnapshot):
                invoices.append(obj)
        price_ids = {i.price.price_id for snaps in subscriptions.values() for s in snaps for i in s.items}
        prices = await q.load_prices(self.conn, price_ids)
        config = await q.load_config(self.conn)
        state = account_rules.rebuild(subscriptions, prices, config)
        stackable = {code: g.stackable for code, g in config.groups.items()}
        changed = await self._subscriptions(state)
        changed = await self._items(state) or changed
        changed = await self._assignments(state, stackable) or changed
        changed = await self._bindings(state) or changed
        changed = await self._funding(state, invoices, config.grant_programs) or changed
        await self._purchases(state)
        await self._mismatches(state)
        await q.insert_audit(self.conn, self.audit)
        return changed

    async def _subscriptions(self, state: AccountState) -> bool:
        changed = False
        for d in state.subscriptions:
            s = d.latest
            values = (s.subscription_id, self.account_id, s.provider_customer_id, d.subscription_group, s.status.value,
                      s.at, s.event_id, s.start_date, s.trial_end, s.current_period_start, s.current_period_end,
                      s.cancel_at, s.cancel_at_period_end, s.canceled_at, s.ended_at, s.purchase_id, s.metadata,
                      d.group_mismatch, s.refetched)
            if await q.upsert_subscription(self.conn, values):
                changed = True
                self.note("subscription", s.subscription_id, "upsert",
                          {"status": s.status.value, "provider_updated_at": _iso(s.at), "event": s.event_id,
                           "subscription_group": d.subscription_group})
        return changed

    async def _items(self, state: AccountState) -> bool:
        stored = {(r["subscription_id"], r["price_id"]): r for r in await q.stored_items(self.conn, self.account_id)}
        changed = False
        for item in state.items:
            held = stored.pop((item.subscription_id, item.price_id), None)
            window = rows.to_window(held["effective"]) if held else None
            if held and (held["quantity"], held["item_id"], window, held["current_period_end"]) == (
                    item.quantity, item.item_id, item.window, item.current_period_end):
                continue
            await q.upsert_item(self.conn, item)
            changed = True
            self.note("subscription_item", f"{item.subscription_id}/{item.price_id}", "upsert",
                      {"quantity": item.quantity, "effective_from": _iso(item.window.start),
                       "effective_until": _iso(item.window.end)})
        if stored:
            await q.delete_items(self.conn, list(stored))
            for key in stored:
                self.note("subscription_item", "/".join(key), "delete", {})
            changed = True
        return changed

    async def _assignments(self, state: AccountState, stackable: dict[str, bool]) -> bool:
        stored = {_assignment_key(rows.placed_assignment(r)): r["id"]
                  for r in await q.stored_assignments(self.conn, self.account_id)}
        wanted = {_assignment_key(p): p for p in state.assignments}
        gone = [row_id for key, row_id in stored.items() if key not in wanted]
        new = [p for key, p in wanted.items() if key not in stored]
        # Removals first, so the exclusion constraint never sees the old and new windows at once.
        await q.delete_rows(self.conn, "plan_assignments", gone)
        await q.insert_assignments(self.conn, self.account_id, stackable, new)
        for key in (k for k in stored if k not in wanted):
            self.note("plan_assignment", f"{key[0]}/{key[2]}", "delete", _window_detail(key[7], key[8], key[9]))
        for p in new:
            self.note("plan_assignment", f"{p.row.subscription_id}/{p.row.price_id}", "insert",
                      {"billing_plan_code": p.row.billing_plan_code,
                       **_window_detail(p.window.start, p.window.end, p.conflict_with)})
        return bool(gone or new)

    async def _bindings(self, state: AccountState) -> bool:
        stored = {_binding_key(rows.placed_binding(r)): r["id"]
                  for r in await q.stored_bindings(self.conn, self.account_id)}
        wanted = {_binding_key(p): p for p in state.bindings}
        gone = [row_id for key, row_id in stored.items() if key not in wanted]
        new = [p for key, p in wanted.items() if key not in stored]
        await q.delete_rows(self.conn, "grant_bindings", gone)
        await q.insert_bindings(self.conn, self.account_id, new)
        for key in (k for k in stored if k not in wanted):
            detail = _window_detail(key[9], key[10], key[11])
            self.note("grant_binding", f"{key[0]}/{key[2]}/{key[4]}", "delete", detail)
        for p in new:
            self.note("grant_binding", f"{p.row.subscription_id}/{p.row.price_id}/{p.row.grant_program_code}", "insert",
                      {"amount": p.row.amount, "quantity": p.row.quantity, "source": p.row.source.value,
                       **_window_detail(p.window.start, p.window.end, p.conflict_with)})
        return bool(gone or new)

    async def _funding(self, state: AccountState, invoices: list[InvoiceSnapshot],
                       programs: dict[str, Any]) -> bool:
        issued = False
        for invoice in invoices:
            for issue in invoice_issues(invoice, state.bindings, programs):
                if await q.insert_issue(self.conn, self.account_id, issue, self.cause_id):
                    issued = True
                    self.note("issued_grant", issue.issue_key, "insert",
                              {"grant_program_code": issue.grant_program_code, "amount": issue.amount})
        return issued

    async def _purchases(self, state: AccountState) -> None:
        by_sub = {d.latest.subscription_id: d for d in state.subscriptions}
        by_purchase = {d.latest.purchase_id: d for d in state.subscriptions if d.latest.purchase_id}
        for purchase in await q.purchases_of_subscriptions(self.conn, self.account_id):
            derived = by_sub.get(purchase["subscription_id"] or "") or by_purchase.get(purchase["purchase_id"])
            if derived is None:
                continue
            sub_id = derived.latest.subscription_id
            if purchase["subscription_id"] is None:
                await q.set_purchase_subscription(self.conn, purchase["purchase_id"], sub_id)
            wanted, reason = _purchase_outcome(state, derived)
            if wanted is None:
                continue
            target = next_state(PurchaseState(purchase["state"]), wanted)
            if target is not None:
                await record_transition(self.conn, self.deps, purchase, target, self.cause_id, reason, self.provider_at)
                self.note("purchase", purchase["purchase_id"], target.value, {"reason": reason})

    async def _mismatches(self, state: AccountState) -> None:
        conflicts = []
        for (sub_id, group), lost in state.lost.items():
            fingerprint = f"group_conflict:{self.account_id}:{group}:{sub_id}"
            conflicts.append(fingerprint)
            diff = {"subscription_group": group, "lost_to": sorted({loss.winner for loss in lost}),
                    "windows": [[_iso(loss.window.start), _iso(loss.window.end)] for loss in lost]}
            await q.open_mismatch(self.conn, "group_conflict", self.account_id, sub_id, fingerprint, diff)
        await q.close_mismatches(self.conn, self.account_id, "group_conflict", conflicts, "no longer conflicting")
        mismatched = []
        for d in state.subscriptions:
            if d.group_mismatch:
                fingerprint = f"group_mismatch:{d.latest.subscription_id}"
                mismatched.append(fingerprint)
                await q.open_mismatch(self.conn, "group_mismatch", self.account_id, d.latest.subscription_id,
                                      fingerprint, {"reason": d.group_mismatch})
        await q.close_mismatches(self.conn, self.account_id, "group_mismatch", mismatched, "items in one group again")


async def record_transition(conn: q.Conn, deps: Deps, purchase: Any, target: PurchaseState, cause_id: str | None,
                            reason: str, provider_at: datetime | None) -> None:
    """Moves a purchase and, when it finalizes, measures how long the provider's completion and
    the browser's return waited for it."""
    now = deps.clock()
    await q.record_transition(conn, purchase["purchase_id"], purchase["state"], target.value, now, cause_id, reason)
    if target is PurchaseState.FINALIZED:
        if provider_at is not None:
            FINALIZE_SECONDS.labels("provider_completion").observe(max((now - provider_at).total_seconds(), 0))
        if purchase["returned_at"] is not None:
            FINALIZE_SECONDS.labels("browser_return").observe(max((now - purchase["returned_at"]).total_seconds(), 0))


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

