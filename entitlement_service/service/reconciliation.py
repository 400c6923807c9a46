"""Reconciliation with the provider: what the reconciler should read, a page of accounts at a
time, and what it read, compared with the state held and repaired; and the lease that lets one
checkout replica reconcile at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from entitlement_service.db import accounts, conflict_actions, purchases, reads
from entitlement_service.db import support as db_support
from entitlement_service.db.pool import Conn
from entitlement_service.domain.findings import (
    READ_AGAIN,
    REPAIRED,
    RESOLVED_PURCHASE,
    provider_difference,
    stuck_purchase,
    stuck_purchase_fingerprint,
    unreadable_account,
    unreadable_fingerprint,
)
from entitlement_service.domain.model import Outcome, PurchaseState
from entitlement_service.domain.provider import CheckoutSessionSnapshot, ProviderEvent, SubscriptionSnapshot
from entitlement_service.domain.reconcile import HeldSubscription, difference
from entitlement_service.domain.records import (
    ConflictActionRecord,
    Finding,
    MismatchRecord,
    OverduePurchase,
    Resolution,
)
from entitlement_service.service.deps import Deps
from entitlement_service.service.events import apply_event
from entitlement_service.service.metrics import MISMATCHES_FOUND, MISMATCHES_REPAIRED
from entitlement_service.service.transactions import write_transaction

log = structlog.get_logger("reconciliation")
CHECKPOINT = "provider_events"
LEASE = "reconciler"
PAGE_SIZE, MAX_PAGE_SIZE = 200, 1000


@dataclass(frozen=True)
class ReconcileState:
    checkpoint: datetime | None
    accounts: list[tuple[str, str]]  # (account, provider customer)
    overdue: list[OverduePurchase]
    sweep_position: str  # to save once the page is applied; "" ends the sweep
    sweep_started_after: str
    conflict_actions: list[ConflictActionRecord] = field(default_factory=list)  # not carried out yet


async def reconcile_state(deps: Deps, account_id: str | None, page_size: int = 0) -> ReconcileState:
    """The one account asked for, or the sweep's next page after its saved position: a page
    shorter than asked for is the last, and the sweep then starts again from the first account."""
    async with deps.pool.acquire() as conn:
        checkpoint = await db_support.checkpoint(conn, CHECKPOINT)
        overdue = await purchases.overdue_purchases(conn, account_id, deps.clock())
        actions = await conflict_actions.to_do(conn)
        if account_id:
            return ReconcileState(checkpoint, await accounts.accounts_with_customers(conn, account_id), overdue, "", "",
                                  actions)
        after = await db_support.sweep_position(conn, CHECKPOINT)
        size = min(max(page_size or PAGE_SIZE, 1), MAX_PAGE_SIZE)
        page = await accounts.accounts_with_customers(conn, None, after, size)
    return ReconcileState(checkpoint, page, overdue, page[-1][0] if len(page) == size else "", after, actions)


@dataclass
class ReconcileResult:
    checked: int = 0
    found: int = 0
    repaired: int = 0
    resolved: int = 0
    unreadable: int = 0
    open: list[MismatchRecord] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderAccount:
    account_id: str
    provider_customer_id: str
    subscriptions: list[tuple[SubscriptionSnapshot, ProviderEvent]]
    unreadable: str = ""  # why the reconciler could not read the account's subscriptions


@dataclass(frozen=True)
class Reconciliation:
    """What the reconciler read, and the positions to save once it is applied."""

    read_at: datetime
    accounts: list[ProviderAccount]
    sessions: list[tuple[CheckoutSessionSnapshot, ProviderEvent]]
    checkpoint: datetime | None = None
    sweep_position: str | None = None
    with_open_mismatches: bool = True


async def apply_reconciliation(deps: Deps, run: Reconciliation) -> ReconcileResult:
    """Records each difference between the provider's view and the held state as a mismatch and
    repairs it by applying the provider's state (as a reconciliation event, deduplicated like any
    event, so repeating a run repairs nothing twice); records the accounts the reconciler could not
    read; resolves overdue purchases from their checkout sessions; then saves the positions."""
    result = ReconcileResult()
    readable = [a for a in run.accounts if not a.unreadable]
    for account in readable:
        for snapshot, event in account.subscriptions:
            result.checked += 1
            await _repair(deps, account, snapshot, event, run.read_at, result)
    await _record_unreadable(deps, run.accounts, result)
    for session, event in run.sessions:
        await _resolve(deps, session, event, result)
    async with write_transaction(deps) as conn:
        if run.checkpoint is not None:
            await db_support.save_checkpoint(conn, CHECKPOINT, run.checkpoint)
        if run.sweep_position is not None:
            await db_support.save_sweep_position(conn, CHECKPOINT, run.sweep_position)
        if run.with_open_mismatches:
            result.open = await db_support.list_mismatches(conn, None, False, 0, 1000)
    return result


async def _record_unreadable(deps: Deps, read: list[ProviderAccount], result: ReconcileResult) -> None:
    """An account not read opens (or keeps open) its `unreadable` mismatch; one read closes it."""
    findings = [unreadable_account(a.account_id, a.unreadable) for a in read if a.unreadable]
    closed = [Resolution(unreadable_fingerprint(a.account_id), READ_AGAIN) for a in read if not a.unreadable]
    async with write_transaction(deps) as conn:
        await db_support.open_mismatches(conn, findings)
        await db_support.close_mismatches(conn, closed)
    for finding in findings:
        _found(finding, result)
        result.unreadable += 1
        log.warning("reconciliation_unreadable", account_id=finding.account_id, reason=finding.diff["reason"])


def _found(finding: Finding, result: ReconcileResult) -> None:
    result.found += 1
    MISMATCHES_FOUND.labels(finding.kind).inc()


async def _held(conn: Conn, subscription_id: str, at: datetime) -> HeldSubscription | None:
    head = await reads.subscription(conn, subscription_id)
    if head is None:
        return None
    items = frozenset((i.price_id, i.quantity)
                      for i in await reads.subscription_items(conn, head.account_id, [subscription_id])
                      if i.window.contains(at) or i.window.end is None)
    return HeldSubscription(head.status, head.cancel_at_period_end, head.cancel_at, items)


async def _repair(deps: Deps, account: ProviderAccount, snapshot: SubscriptionSnapshot, event: ProviderEvent,
                  read_at: datetime, result: ReconcileResult) -> None:
    async with deps.pool.acquire() as conn:
        found = difference(await _held(conn, snapshot.subscription_id, read_at), snapshot)
    if found is None:
        return
    finding = provider_difference(account.account_id, snapshot.subscription_id, found, event.provider_event_id)
    _found(finding, result)
    async with write_transaction(deps) as conn:
        await db_support.open_mismatches(conn, [finding])
    applied = await apply_event(deps, event)
    if applied.outcome in (Outcome.APPLIED, Outcome.DUPLICATE):
        async with write_transaction(deps) as conn:
            if await db_support.close_mismatches(conn, [Resolution(finding.fingerprint, REPAIRED)]):
                result.repaired += 1
                MISMATCHES_REPAIRED.labels(finding.kind).inc()
    log.info("reconciliation", account_id=account.account_id, subscription_id=snapshot.subscription_id,
             kind=found.kind, outcome=applied.outcome.value, reason=applied.reason)


async def _resolve(deps: Deps, session: CheckoutSessionSnapshot, event: ProviderEvent, result: ReconcileResult) -> None:
    """An overdue purchase: finalized or expired from its checkout session, or flagged as stuck
    while the provider still holds the session open."""
    before = await _purchase_state(deps, session.checkout_session_id)
    if session.status == "expired" or session.paid:
        await apply_event(deps, event)
    if await _purchase_state(deps, session.checkout_session_id) != before:
        result.resolved += 1
        resolved = Resolution(stuck_purchase_fingerprint(session.checkout_session_id), RESOLVED_PURCHASE)
        async with write_transaction(deps) as conn:
            await db_support.close_mismatches(conn, [resolved])
    elif session.status == "open" and session.purchase_id:
        finding = stuck_purchase(session)
        _found(finding, result)
        async with write_transaction(deps) as conn:
            await db_support.open_mismatches(conn, [finding])


async def _purchase_state(deps: Deps, session_id: str) -> PurchaseState | None:
    async with deps.pool.acquire() as conn:
        found = await purchases.get_purchase(conn, checkout_session_id=session_id)
    return found.state if found else None


@dataclass(frozen=True)
class Lease:
    granted: bool
    holder: str | None
    expires_at: datetime | None


async def lease_reconciler(deps: Deps, holder: str, ttl: timedelta) -> Lease:
    """Takes or renews the reconciler's lease for `holder`; a zero `ttl` gives it up."""
    async with write_transaction(deps) as conn:
        held = await db_support.take_lease(conn, LEASE, holder, ttl)
    if held is None:
        return Lease(False, None, None)
    return Lease(held[0] == holder, held[0], held[1])
