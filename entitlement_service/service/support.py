"""Support and operations: trace a purchase, list mismatches, reconcile with the provider."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog

from catalog_rules.model import CatalogConfig
from entitlement_service.db import accounts, events, purchases, reads
from entitlement_service.db import support as db_support
from entitlement_service.db.pool import Conn
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.entitlements import GateDecision, decide_gates, effective_at
from entitlement_service.domain.errors import NotFound
from entitlement_service.domain.findings import (
    REPAIRED,
    RESOLVED_PURCHASE,
    provider_difference,
    stuck_purchase,
    stuck_purchase_fingerprint,
)
from entitlement_service.domain.model import Outcome, PurchaseState
from entitlement_service.domain.provider import CheckoutSessionSnapshot, ProviderEvent, SubscriptionSnapshot
from entitlement_service.domain.reconcile import HeldSubscription, difference
from entitlement_service.domain.records import (
    AuditEntry,
    EventRecord,
    IssuedGrantRecord,
    MismatchRecord,
    OverduePurchase,
    PurchaseRecord,
    Resolution,
)
from entitlement_service.service.deps import Deps
from entitlement_service.service.events import apply_event
from entitlement_service.service.metrics import OPEN_MISMATCHES, PURCHASES_PAST_TIMEOUT, PURCHASES_PENDING
from entitlement_service.service.purchases import PurchaseView, view_of
from entitlement_service.service.reads import SubscriptionView, account_rows

log = structlog.get_logger("support")
CHECKPOINT = "provider_events"


@dataclass(frozen=True)
class Trace:
    purchase: PurchaseView | None
    events: list[EventRecord]
    subscriptions: tuple[SubscriptionView, ...]
    assignments: tuple[PlacedAssignment, ...]
    bindings: tuple[PlacedBinding, ...]
    funding: tuple[IssuedGrantRecord, ...]
    decision: GateDecision
    audit: list[AuditEntry]
    config: CatalogConfig


async def trace_purchase(deps: Deps, purchase_id: str | None, checkout_session_id: str | None,
                         subscription_id: str | None) -> Trace:
    """Everything known about one purchase, from its session through its events to the
    assignments, bindings and funding they produced, and the account's gate decision now."""
    async with deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        purchase = await _find_purchase(conn, purchase_id, checkout_session_id, subscription_id)
        session = checkout_session_id or (purchase.checkout_session_id if purchase else None)
        sub = subscription_id or (purchase.subscription_id if purchase else None)
        if sub is None and session:
            sub = next(iter(await events.subscription_ids_for_session(conn, session)), None)
        head = await reads.subscription(conn, sub) if sub else None
        account = purchase.account_id if purchase else head.account_id if head else None
        if account is None:
            raise NotFound(f"nothing known about {purchase_id or checkout_session_id or subscription_id}")
        stored = await account_rows(conn, account)
        found = await events.events_for(conn, subscription_id=sub, checkout_session_id=session,
                                        purchase_id=purchase.purchase_id if purchase else None)
        audit = await db_support.audit_for(conn, [e.provider_event_id for e in found],
                                        [i for i in (purchase and purchase.purchase_id, sub) if i])
        view = await view_of(conn, purchase.purchase_id) if purchase else None
    mine = [a for a in stored.assignments if a.row.subscription_id == sub]
    return Trace(
        purchase=view, events=found,
        subscriptions=tuple(s for s in stored.subscriptions if s.subscription.subscription_id == sub),
        assignments=tuple(mine), bindings=tuple(b for b in stored.bindings if b.row.subscription_id == sub),
        funding=tuple(f for f in stored.funding if (sub and f.subscription_id == sub)
                      or (session and f.checkout_session_id == session)),
        decision=decide_gates(effective_at(stored.assignments, deps.clock()), stored.config.gate_bundles),
        audit=audit, config=stored.config,
    )


async def _find_purchase(conn: Conn, purchase_id: str | None, session_id: str | None,
                         subscription_id: str | None) -> PurchaseRecord | None:
    if purchase_id:
        found = await purchases.get_purchase(conn, purchase_id=purchase_id)
        if found is None:
            raise NotFound(f"no purchase {purchase_id}")
        return found
    if session_id:
        return await purchases.get_purchase(conn, checkout_session_id=session_id)
    return await purchases.purchase_for_subscription(conn, subscription_id or "")


async def list_mismatches(deps: Deps, account_id: str | None, include_closed: bool, page_size: int,
                          page_token: str) -> tuple[list[MismatchRecord], str]:
    size = min(max(page_size or 100, 1), 1000)
    after = int(page_token) if page_token.isdigit() else 0
    async with deps.pool.acquire() as conn:
        found = await db_support.list_mismatches(conn, account_id, include_closed, after, size + 1)
    more = len(found) > size
    found = found[:size]
    return found, str(found[-1].mismatch_id) if more and found else ""


@dataclass(frozen=True)
class ReconcileState:
    checkpoint: datetime | None
    accounts: list[tuple[str, str]]  # (account, provider customer)
    overdue: list[OverduePurchase]


async def reconcile_state(deps: Deps, account_id: str | None) -> ReconcileState:
    async with deps.pool.acquire() as conn:
        return ReconcileState(
            await db_support.checkpoint(conn, CHECKPOINT),
            await accounts.accounts_with_customers(conn, account_id),
            await purchases.overdue_purchases(conn, account_id, deps.clock()),
        )


@dataclass
class ReconcileResult:
    checked: int = 0
    found: int = 0
    repaired: int = 0
    resolved: int = 0
    open: list[MismatchRecord] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderAccount:
    account_id: str
    provider_customer_id: str
    subscriptions: list[tuple[SubscriptionSnapshot, ProviderEvent]]


async def _held(conn: Conn, subscription_id: str, at: datetime) -> HeldSubscription | None:
    head = await reads.subscription(conn, subscription_id)
    if head is None:
        return None
    items = frozenset((i.price_id, i.quantity) for i in await reads.subscription_items(conn, [subscription_id])
                      if i.window.contains(at) or i.window.end is None)
    return HeldSubscription(head.status, head.cancel_at_period_end, head.cancel_at, items)


async def _repair(deps: Deps, account: ProviderAccount, snapshot: SubscriptionSnapshot, event: ProviderEvent,
                  read_at: datetime, result: ReconcileResult) -> None:
    async with deps.pool.acquire() as conn:
        found = difference(await _held(conn, snapshot.subscription_id, read_at), snapshot)
    if found is None:
        return
    result.found += 1
    finding = provider_difference(account.account_id, snapshot.subscription_id, found, event.provider_event_id)
    async with deps.pool.acquire() as conn:
        await db_support.open_mismatches(conn, [finding])
    applied = await apply_event(deps, event)
    if applied.outcome in (Outcome.APPLIED, Outcome.DUPLICATE):
        async with deps.pool.acquire() as conn:
            if await db_support.close_mismatches(conn, [Resolution(finding.fingerprint, REPAIRED)]):
                result.repaired += 1
    log.info("reconciliation", account_id=account.account_id, subscription_id=snapshot.subscription_id,
             kind=found.kind, outcome=applied.outcome.value, reason=applied.reason)


async def apply_reconciliation(deps: Deps, read_at: datetime, accounts: list[ProviderAccount],
                               sessions: list[tuple[CheckoutSessionSnapshot, ProviderEvent]],
                               checkpoint: datetime | None) -> ReconcileResult:
    """Records each difference between the provider's view and the held state as a mismatch and
    repairs it by applying the provider's state (as a reconciliation event, deduplicated like any
    event, so repeating a run repairs nothing twice); resolves overdue purchases from their
    checkout sessions."""
    result = ReconcileResult()
    for account in accounts:
        for snapshot, event in account.subscriptions:
            result.checked += 1
            await _repair(deps, account, snapshot, event, read_at, result)
    for session, event in sessions:
        await _resolve(deps, session, event, result)
    async with deps.pool.acquire() as conn:
        if checkpoint is not None:
            await db_support.save_checkpoint(conn, CHECKPOINT, checkpoint)
        result.open = await db_support.list_mismatches(conn, None, False, 0, 1000)
    return result


async def _resolve(deps: Deps, session: CheckoutSessionSnapshot, event: ProviderEvent, result: ReconcileResult) -> None:
    """An overdue purchase: finalized or expired from its checkout session, or flagged as stuck
    while the provider still holds the session open."""
    before = await _purchase_state(deps, session.checkout_session_id)
    if session.status == "expired" or session.paid:
        await apply_event(deps, event)
    if await _purchase_state(deps, session.checkout_session_id) != before:
        result.resolved += 1
        resolved = Resolution(stuck_purchase_fingerprint(session.checkout_session_id), RESOLVED_PURCHASE)
        async with deps.pool.acquire() as conn:
            await db_support.close_mismatches(conn, [resolved])
    elif session.status == "open" and session.purchase_id:
        result.found += 1
        async with deps.pool.acquire() as conn:
            await db_support.open_mismatches(conn, [stuck_purchase(session)])


async def _purchase_state(deps: Deps, session_id: str) -> PurchaseState | None:
    async with deps.pool.acquire() as conn:
        found = await purchases.get_purchase(conn, checkout_session_id=session_id)
    return found.state if found else None


async def refresh_gauges(deps: Deps) -> None:
    """Open mismatches, pending purchases and purchases past their timeout, for /metrics."""
    async with deps.pool.acquire() as conn:
        counts = await db_support.operations_counts(conn, deps.clock())
    OPEN_MISMATCHES.set(counts.open_mismatches)
    PURCHASES_PENDING.set(counts.pending)
    PURCHASES_PAST_TIMEOUT.set(counts.past_timeout)
