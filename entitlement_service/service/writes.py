"""Changes collected from any number of accounts' derivations, written together: one statement
per kind of row for a whole batch, so a batch's round trips do not grow with its size."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from entitlement_service.db import conflict_actions, derived, events, purchases, support
from entitlement_service.db.pool import Conn
from entitlement_service.domain.records import (
    AccountAssignment,
    AccountBinding,
    AccountItem,
    AuditEntry,
    ConflictActionRecord,
    EventResult,
    Finding,
    HistoryEntry,
    Issuance,
    Resolution,
    SubscriptionRecord,
    TransitionRecord,
)
from entitlement_service.service import transactions


@dataclass
class Writes:
    """Sent by `flush` in an order the constraints accept: removals before the rows replacing
    them; parents and children together, in one statement whose foreign keys are checked at its
    end."""

    subscriptions: list[SubscriptionRecord] = field(default_factory=list)
    items: list[AccountItem] = field(default_factory=list)
    removed_items: list[tuple[str, str, str]] = field(default_factory=list)  # (account, subscription, price)
    removed_assignments: list[tuple[str, int]] = field(default_factory=list)  # (account, row id)
    assignments: list[AccountAssignment] = field(default_factory=list)
    removed_bindings: list[tuple[str, int]] = field(default_factory=list)  # (account, row id)
    bindings: list[AccountBinding] = field(default_factory=list)
    issues: list[Issuance] = field(default_factory=list)
    purchase_subscriptions: list[tuple[str, str]] = field(default_factory=list)  # (purchase id, subscription id)
    purchase_groups: list[tuple[str, str]] = field(default_factory=list)  # (purchase id, its subscription's group)
    transitions: list[TransitionRecord] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    conflict_actions: list[ConflictActionRecord] = field(default_factory=list)
    conflict_cause: str = "provider_event"
    resolutions: list[Resolution] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    outcomes: list[tuple[datetime, EventResult]] = field(default_factory=list)  # (the event's created, result)
    history: list[HistoryEntry] = field(default_factory=list)  # snapshots joining, or summarized in, a history
    changed_accounts: list[str] = field(default_factory=list)

    async def flush(self, conn: Conn) -> None:
        # Removals first, so the rows replacing them meet no conflict; each is skipped when empty.
        await derived.delete_items(conn, self.removed_items)
        await derived.delete_assignments(conn, self.removed_assignments)
        await derived.delete_bindings(conn, self.removed_bindings)
        transactions.changed(await derived.write_rows(
            conn, self.subscriptions, self.items, self.assignments, self.bindings, self.audit, self.changed_accounts,
            self.history))
        await derived.insert_issues(conn, self.issues)
        await purchases.set_purchase_subscriptions(conn, self.purchase_subscriptions)
        await purchases.record_transitions(conn, self.transitions)
        await purchases.set_purchase_groups(conn, self.purchase_groups)
        await support.close_mismatches(conn, self.resolutions)
        await support.open_mismatches(conn, self.findings)
        await conflict_actions.decide(conn, self.conflict_cause, self.conflict_actions)
        await events.set_event_outcomes(conn, self.outcomes)
