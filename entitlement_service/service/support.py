"""Support and operations: trace a purchase, list mismatches, refresh the operational gauges."""

from __future__ import annotations

import re
from dataclasses import dataclass

from catalog_rules.model import CatalogConfig
from entitlement_service.db import conflict_actions, events, purchases, reads
from entitlement_service.db import support as db_support
from entitlement_service.db.pool import Conn
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.entitlements import GateDecision, decide_gates, effective_at
from entitlement_service.domain.errors import InvalidRequest, NotFound
from entitlement_service.domain.records import (
    AuditEntry,
    ConflictActionRecord,
    EventRecord,
    IssuedGrantRecord,
    MismatchRecord,
    PurchaseRecord,
)
from entitlement_service.service.deps import Deps
from entitlement_service.service.metrics import OPEN_MISMATCHES, PURCHASES_PAST_TIMEOUT, PURCHASES_PENDING
from entitlement_service.service.purchases import PurchaseView, view_of
from entitlement_service.service.reads import SubscriptionView, account_rows

# The page tokens this service issues: a mismatch id (a bigint) in plain ASCII digits.
# `str.isdigit` would also pass "²", which `int()` refuses, and numbers past a bigint.
PAGE_TOKEN = re.compile(r"[0-9]{1,18}")


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
    conflict_actions: tuple[ConflictActionRecord, ...] = ()


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
        # The rows its events changed are their accounts' (an event may name another account than
        # the purchase's, or none); the purchase's and its subscription's are its account's.
        audit = await db_support.audit_for(conn, {account, *(e.account_id for e in found)},
                                           [e.provider_event_id for e in found],
                                           [i for i in (purchase and purchase.purchase_id, sub) if i])
        view = await view_of(conn, purchase.purchase_id) if purchase else None
        actions = tuple(await conflict_actions.of_subscriptions(conn, [sub])) if sub else ()
    mine = [a for a in stored.assignments if a.row.subscription_id == sub]
    return Trace(
        purchase=view, events=found,
        subscriptions=tuple(s for s in stored.subscriptions if s.subscription.subscription_id == sub),
        assignments=tuple(mine), bindings=tuple(b for b in stored.bindings if b.row.subscription_id == sub),
        funding=tuple(f for f in stored.funding if (sub and f.subscription_id == sub)
                      or (session and f.checkout_session_id == session)),
        decision=decide_gates(effective_at(stored.assignments, deps.clock()), stored.config.gate_bundles),
        audit=audit, config=stored.config, conflict_actions=actions,
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
    after = _after(page_token)
    async with deps.pool.acquire() as conn:
        found = await db_support.list_mismatches(conn, account_id, include_closed, after, size + 1)
    more = len(found) > size
    found = found[:size]
    return found, str(found[-1].mismatch_id) if more and found else ""


def _after(page_token: str) -> int:
    """The mismatch id a page starts after; a token this service did not issue is the caller's
    mistake, not a reason to start again from the first page."""
    if not page_token:
        return 0
    if not PAGE_TOKEN.fullmatch(page_token):
        raise InvalidRequest("page_token is not one this service issued")
    return int(page_token)


async def refresh_gauges(deps: Deps) -> None:
    """Open mismatches, pending purchases and purchases past their timeout, for /metrics."""
    async with deps.pool.acquire() as conn:
        counts = await db_support.operations_counts(conn, deps.clock())
    OPEN_MISMATCHES.set(counts.open_mismatches)
    PURCHASES_PENDING.set(counts.pending)
    PURCHASES_PAST_TIMEOUT.set(counts.past_timeout)
