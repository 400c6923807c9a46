"""Re-derives an account's subscriptions, assignments, bindings, funding and purchase outcomes
from every provider snapshot it holds, and collects only the difference, audited."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from catalog_rules.model import CatalogConfig, ConflictPolicy, GrantProgram
from entitlement_service.db import history, purchases
from entitlement_service.db.pool import Conn
from entitlement_service.domain import account as account_rules
from entitlement_service.domain.account import AccountState, PlacedAssignment, PlacedBinding
from entitlement_service.domain.conflict_actions import ActionState, live_duplicates
from entitlement_service.domain.findings import derivation_findings, derivation_resolutions, duplicate_findings
from entitlement_service.domain.model import PurchaseState
from entitlement_service.domain.partial import check_exact, joined, joined_items
from entitlement_service.domain.provider import InvoiceSnapshot, ProviderEvent
from entitlement_service.domain.purchases import settle, subscription_outcome
from entitlement_service.domain.records import (
    AccountAssignment,
    AccountBinding,
    AccountItem,
    AuditEntry,
    ConflictActionRecord,
    HistoryEntry,
    Issuance,
    PurchaseRecord,
    StoredAccount,
    SubscriptionRecord,
    TransitionRecord,
)
from entitlement_service.domain.timeline import ItemRow
from entitlement_service.service import transactions
from entitlement_service.service.catalog_cache import CachedCatalog
from entitlement_service.service.deps import Deps
from entitlement_service.service.metrics import DERIVED_WHOLE, FINALIZE_SECONDS, GROUP_CONFLICTS
from entitlement_service.service.writes import Writes


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _assignment_identity(p: PlacedAssignment) -> tuple[object, ...]:
    """What makes two placed assignments the same row, windows aside (the row's own window too: a
    stored row's is its placed window)."""
    r = p.row
    return (r.subscription_id, r.subscription_group, r.price_id, r.billing_plan_code, r.priority, r.gate_bundle,
            r.started_at, p.conflict_with)


def _binding_identity(p: PlacedBinding) -> tuple[object, ...]:
    r = p.row
    return (r.subscription_id, r.subscription_group, r.price_id, r.product_id, r.grant_program_code, r.amount,
            r.scale_by_quantity, r.quantity, r.source, p.conflict_with)


def _assignment_key(p: PlacedAssignment) -> tuple[object, ...]:
    return (*_assignment_identity(p), p.window)


def _binding_key(p: PlacedBinding) -> tuple[object, ...]:
    return (*_binding_identity(p), p.window)


def _window_detail(p: PlacedAssignment | PlacedBinding) -> dict[str, Any]:
    detail: dict[str, Any] = {"effective_from": _iso(p.window.start), "effective_until": _iso(p.window.end)}
    if p.conflict_with:
        detail["conflict_with_subscription_id"] = p.conflict_with
    return detail


async def load_accounts(conn: Conn, since: Mapping[str, datetime | None], subscription_ids: Sequence[str] = ()
                        ) -> tuple[dict[str, StoredAccount], dict[str, SubscriptionRecord]]:
    """The accounts' stored state, each with its whole history or (with an instant) the part a
    derivation from that instant on reads; and the subscriptions named."""
    return await history.load_accounts(conn, since, subscription_ids)


class Rebuild:
    """One account's derivation from its stored rows (read with its row locked); what changed goes
    to `writes`, for the caller to flush inside the same transaction."""

    def __init__(self, deps: Deps, catalog: CachedCatalog, stored: StoredAccount, writes: Writes, account_id: str,
                 cause: str, cause_id: str, provider_at: datetime | None = None,
                 decoded: Mapping[bytes, ProviderEvent] | None = None) -> None:
        self.deps, self.catalog, self.stored, self.writes = deps, catalog, stored, writes
        self.account_id, self.cause, self.cause_id, self.provider_at = account_id, cause, cause_id, provider_at
        # Events the caller already holds in domain form, by their stored snapshot: not decoded again.
        self.decoded = decoded or {}

    def note(self, entity: str, entity_id: str, action: str, detail: dict[str, Any]) -> None:
        self.writes.audit.append(AuditEntry(self.account_id, self.cause, self.cause_id, entity, entity_id, action,
                                            detail))

    def run(self) -> bool:
        """True when anything the account is entitled to, or any of its rows, changed; the account
        then moves to a new revision when the writes are flushed. Raises PartialHistory, having
        written nothing, when the history read from an instant on cannot derive it exactly."""
        summaries: list[HistoryEntry] = []
        objects = []
        for stored in self.stored.history:
            event = self.decoded.get(stored) or self.deps.decode_event(stored)
            if stored in self.stored.unsummarized:
                summaries.append(HistoryEntry.of(event, self.account_id))
            objects.append(event.object)
        subscriptions, invoices = account_rules.history_of(objects)
        config = self.catalog.config
        since, earlier = self.stored.since, self.stored.earlier
        state = account_rules.rebuild(subscriptions, self.catalog.book, config, earlier, since)
        items = list(state.items)
        if since is not None:
            check_exact(state, self.stored.open_mismatches, self.stored.purchases, set(earlier))
            begins = {sub: min(s.at for s in subscriptions[sub]) for sub in earlier if sub in subscriptions}
            items = joined_items(self.stored.items, items, begins)
        self.writes.history.extend(summaries)
        stackable = {code: g.stackable for code, g in config.groups.items()}
        changed = self._subscriptions(state)
        changed = self._items(items) or changed
        changed = self._assignments(state, stackable) or changed
        changed = self._bindings(state) or changed
        changed = self._funding(state, invoices, config.grant_programs) or changed
        self._purchases(state)
        self._mismatches(state, config)
        if changed:
            self.writes.changed_accounts.append(self.account_id)
        return changed

    def _subscriptions(self, state: AccountState) -> bool:
        changed = False
        for d in state.subscriptions:
            s = d.latest
            held = self.stored.subscriptions.get(s.subscription_id)
            if held is not None and (held.provider_event_id, held.subscription_group, held.group_mismatch) == (
                    s.event_id, d.subscription_group, d.group_mismatch):
                continue
            self.writes.subscriptions.append(SubscriptionRecord.of(s, self.account_id, d.subscription_group,
                                                                   d.group_mismatch))
            changed = True
            self.note("subscription", s.subscription_id, "upsert",
                      {"status": s.status.value, "provider_updated_at": _iso(s.at), "event": s.event_id,
                       "subscription_group": d.subscription_group})
        return changed

    def _items(self, items: list[ItemRow]) -> bool:
        stored = {(i.subscription_id, i.price_id): i for i in self.stored.items}
        changed = False
        for item in items:
            held = stored.pop((item.subscription_id, item.price_id), None)
            if held and (held.quantity, held.item_id, held.window, held.current_period_end) == (
                    item.quantity, item.item_id, item.window, item.current_period_end):
                continue
            self.writes.items.append(AccountItem(self.account_id, item))
            changed = True
            self.note("subscription_item", f"{item.subscription_id}/{item.price_id}", "upsert",
                      {"quantity": item.quantity, "effective_from": _iso(item.window.start),
                       "effective_until": _iso(item.window.end)})
        if stored:
            self.writes.removed_items.extend((self.account_id, s, p) for s, p in stored)
            for key in stored:
                self.note("subscription_item", "/".join(key), "delete", {})
            changed = True
        return changed

    def _assignments(self, state: AccountState, stackable: dict[str, bool]) -> bool:
        stored = {_assignment_key(p): (row_id, p) for row_id, p in self.stored.assignments.items()}
        wanted = {_assignment_key(p): p for p in joined(self.stored.assignments.values(), state.assignments,
                                                        self.stored.since, _assignment_identity)}
        gone = [held for key, held in stored.items() if key not in wanted]
        new = [p for key, p in wanted.items() if key not in stored]
        self.writes.removed_assignments.extend((self.account_id, row_id) for row_id, _ in gone)
        self.writes.assignments.extend(
            AccountAssignment(self.account_id, stackable.get(p.row.subscription_group, False), p) for p in new)
        for _, p in gone:
            self.note("plan_assignment", f"{p.row.subscription_id}/{p.row.price_id}", "delete", _window_detail(p))
        for p in new:
            self.note("plan_assignment", f"{p.row.subscription_id}/{p.row.price_id}", "insert",
                      {"billing_plan_code": p.row.billing_plan_code, **_window_detail(p)})
        return bool(gone or new)

    def _bindings(self, state: AccountState) -> bool:
        stored = {_binding_key(p): (row_id, p) for row_id, p in self.stored.bindings.items()}
        wanted = {_binding_key(p): p for p in joined(self.stored.bindings.values(), state.bindings,
                                                     self.stored.since, _binding_identity)}
        gone = [held for key, held in stored.items() if key not in wanted]
        new = [p for key, p in wanted.items() if key not in stored]
        self.writes.removed_bindings.extend((self.account_id, row_id) for row_id, _ in gone)
        self.writes.bindings.extend(AccountBinding(self.account_id, p) for p in new)
        for _, p in gone:
            self.note("grant_binding", f"{p.row.subscription_id}/{p.row.price_id}/{p.row.grant_program_code}",
                      "delete", _window_detail(p))
        for p in new:
            self.note("grant_binding", f"{p.row.subscription_id}/{p.row.price_id}/{p.row.grant_program_code}", "insert",
                      {"amount": p.row.amount, "quantity": p.row.quantity, "source": p.row.source.value,
                       **_window_detail(p)})
        return bool(gone or new)

    def _funding(self, state: AccountState, invoices: list[InvoiceSnapshot],
                 programs: Mapping[str, GrantProgram]) -> bool:
        issues = account_rules.funding(state, invoices, self.catalog.book, programs, self.stored.issued,
                                       self.stored.since)
        for issue in issues:
            self.writes.issues.append(Issuance(self.account_id, issue, self.cause_id))
            self.note("issued_grant", issue.issue_key, "insert",
                      {"grant_program_code": issue.grant_program_code, "amount": issue.amount,
                       "basis": issue.basis})
        return bool(issues)

    def _purchases(self, state: AccountState) -> None:
        by_sub = {d.latest.subscription_id: d for d in state.subscriptions}
        by_purchase = {d.latest.purchase_id: d for d in state.subscriptions if d.latest.purchase_id}
        for purchase in self.stored.purchases:
            derived = by_sub.get(purchase.subscription_id or "") or by_purchase.get(purchase.purchase_id)
            if derived is None:
                continue
            if purchase.subscription_id is None:
                self.writes.purchase_subscriptions.append((purchase.purchase_id, derived.latest.subscription_id))
            wanted, reason = subscription_outcome(state, derived)
            move = settle(purchase.state, wanted, reason, purchase.subscription_group, derived.subscription_group,
                          derived.latest.subscription_id)
            if move is not None:
                now = self.deps.clock()
                self.writes.transitions.append(TransitionRecord(purchase.purchase_id, purchase.state, move.to_state,
                                                                now, self.cause_id, move.reason))
                if move.group is not None:
                    self.writes.purchase_groups.append((purchase.purchase_id, move.group))
                if move.to_state is not purchase.state:
                    observe_transition(purchase, move.to_state, now, self.provider_at)
                detail = {"reason": move.reason, **({"subscription_group": move.group} if move.group else {})}
                self.note("purchase", purchase.purchase_id, move.to_state.value, detail)

    def _mismatches(self, state: AccountState, config: CatalogConfig) -> None:
        duplicates = live_duplicates(state, config)
        duplicated = duplicate_findings(self.account_id, duplicates)
        found = derivation_findings(self.account_id, state) + duplicated
        for d, finding in zip(duplicates, duplicated, strict=True):
            if finding.fingerprint not in self.stored.open_mismatches:
                transactions.after_commit(GROUP_CONFLICTS.labels(d.policy.value).inc)
        now = self.deps.clock()
        purchase_of = {p.subscription_id: p.purchase_id for p in self.stored.purchases if p.subscription_id}
        self.writes.conflict_actions.extend(
            ConflictActionRecord(self.account_id, d.loser, d.group, d.winner, purchase_of.get(d.loser),
                                 ActionState.DECIDED.value, None, "", self.cause_id, now, now)
            for d in duplicates if d.policy is ConflictPolicy.CANCEL_AND_REFUND)
        if duplicates:
            self.writes.conflict_cause = self.cause
        self.writes.findings.extend(found)
        self.writes.resolutions.extend(derivation_resolutions(self.stored.open_mismatches, found))


async def rebuild_account(conn: Conn, deps: Deps, account_id: str, cause: str, cause_id: str,
                          provider_at: datetime | None = None) -> bool:
    """One account's rebuild, written at once (the account's row lock held by the caller)."""
    return bool(await rebuild_accounts(conn, deps, {account_id: cause_id}, cause, provider_at))


async def rebuild_accounts(conn: Conn, deps: Deps, causes: Mapping[str, str], cause: str,
                           provider_at: datetime | None = None) -> list[str]:
    """Each account's rebuild (`causes` maps it to the id its audit entries name), read and written
    together, the accounts' row locks held by the caller; returns the accounts that changed."""
    stored, _ = await load_accounts(conn, dict.fromkeys(causes))
    catalog = await deps.catalog.view(conn)
    writes = Writes()
    changed = [account_id for account_id, cause_id in causes.items()
               if Rebuild(deps, catalog, stored[account_id], writes, account_id, cause, cause_id, provider_at).run()]
    DERIVED_WHOLE.inc(len(causes))
    await writes.flush(conn)
    return changed


def observe_transition(purchase: PurchaseRecord, target: PurchaseState, now: datetime,
                       provider_at: datetime | None) -> None:
    """When a purchase finalizes, how long the provider's completion and the browser's return
    waited for it."""
    if target is PurchaseState.FINALIZED:
        if provider_at is not None:
            FINALIZE_SECONDS.labels("provider_completion").observe(max((now - provider_at).total_seconds(), 0))
        if purchase.returned_at is not None:
            FINALIZE_SECONDS.labels("browser_return").observe(max((now - purchase.returned_at).total_seconds(), 0))


async def record_transition(conn: Conn, deps: Deps, purchase: PurchaseRecord, target: PurchaseState,
                            cause_id: str | None, reason: str, provider_at: datetime | None) -> None:
    """Moves a purchase at once and measures its finalization."""
    now = deps.clock()
    await purchases.record_transitions(conn, [TransitionRecord(purchase.purchase_id, purchase.state, target, now,
                                                               cause_id, reason)])
    observe_transition(purchase, target, now, provider_at)
