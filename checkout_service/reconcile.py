"""The reconciler: re-reads the provider and lets the entitlement service record and repair what
differs.

A full run holds the reconciler's lease (LeaseReconciler), so one checkout replica runs at a time,
and renews it as it goes. It
1. replays the provider events missed since the checkpoint, a window of provider time at a time,
   the checkpoint saved after each window, so a lost payment is funded whatever the sweep does;
2. resolves the purchases past their timeout from their checkout sessions;
3. sweeps the accounts a page at a time, each page's position saved with it, so a run cut short
   (a deadline, a restart, a provider outage) resumes at the page it stopped on.
Every call has its own deadline. An account the provider refuses to show or whose subscriptions
cannot be understood is skipped and recorded as `unreadable`; an event that cannot be read is
skipped and counted. A run for one account compares its subscriptions and replays its own events
missed since the checkpoint."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from google.protobuf.duration_pb2 import Duration
from prometheus_client import Counter

from checkout_service.conflict_actions import carry_out_all
from checkout_service.errors import AlreadyRunning, BadWebhook, CheckoutError, InvalidRequest
from checkout_service.service import entitlement_call, provider_call
from checkout_service.stripe import normalize as norm
from checkout_service.webhooks import UNREADABLE, WebhookDeps, forward
from selfserve.entitlement.v1 import entitlement_pb2 as pb

log = structlog.get_logger("reconcile")

# With no checkpoint yet, replay this far back (the provider keeps events for 30 days).
FIRST_REPLAY_S = 3 * 24 * 3600
# Missed events are read and replayed this much provider time at a time, oldest first; the last
# window, from SETTLE_S ago on, is open-ended, since the provider's clock may run ahead of ours.
EVENT_WINDOW_S = 3600
SETTLE_S = 60
# Accounts per page of the sweep, and how many of a page's accounts are read from the provider at once.
PAGE_SIZE = 200
READS_AT_ONCE = 8
# How long the lease lasts unless renewed; it is renewed before every window and page.
LEASE_TTL = timedelta(minutes=2)

RUNS = Counter("reconcile_runs_total", "Reconciler runs by result (completed, failed, skipped: another "
               "replica held the lease).", ["result"])
ACCOUNTS = Counter("reconcile_accounts_total", "Accounts the reconciler read from the provider, by result "
                   "(compared, unreadable).", ["result"])
PAGES = Counter("reconcile_pages_total", "Pages of the account sweep applied.")
SWEEPS = Counter("reconcile_sweeps_completed_total", "Sweeps through every account completed.")
REPLAYED = Counter("reconcile_events_total", "Provider events the reconciler read from the provider's event list, "
                   "by result (missed: not recorded before, duplicate, unreadable).", ["result"])


@dataclass
class ReconcileReport:
    """What one run did, summed over its calls."""

    subscriptions_checked: int = 0
    mismatches_found: int = 0
    mismatches_repaired: int = 0
    purchases_resolved: int = 0
    accounts_checked: int = 0
    accounts_unreadable: int = 0
    events_replayed: int = 0
    events_unreadable: int = 0
    sweep_complete: bool = False
    open_mismatches: list[pb.Mismatch] = field(default_factory=list)

    def add(self, reply: pb.ApplyReconciliationResponse) -> None:
        self.subscriptions_checked += reply.subscriptions_checked
        self.mismatches_found += reply.mismatches_found
        self.mismatches_repaired += reply.mismatches_repaired
        self.purchases_resolved += reply.purchases_resolved
        self.accounts_unreadable += reply.accounts_unreadable
        if reply.open_mismatches:
            self.open_mismatches = list(reply.open_mismatches)


async def pages(fetch: Callable[[str | None], Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every object of a provider list, following `has_more` with `starting_after`."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = await provider_call(fetch(after))
        data = list(page.get("data") or [])
        found.extend(data)
        if not page.get("has_more") or not data:
            return found
        after = str(data[-1]["id"])


class Run:
    """One run's identity (its lease holder), deadline per call and report."""

    def __init__(self, w: WebhookDeps) -> None:
        self.w = w
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.now = int(time.time())
        self.report = ReconcileReport()

    async def lease(self, ttl: timedelta = LEASE_TTL) -> None:
        reply: pb.LeaseReconcilerResponse = await entitlement_call(
            self.w.deps.entitlement.LeaseReconciler,
            pb.LeaseReconcilerRequest(holder=self.holder, ttl=Duration(seconds=int(ttl.total_seconds()))))
        if ttl and not reply.granted:
            raise AlreadyRunning(f"the reconciler is running on {reply.holder} "
                            f"(lease until {reply.expires_at.ToDatetime().isoformat()}Z)")

    async def apply(self, request: pb.ApplyReconciliationRequest, read_at: int | None = None) -> None:
        """`read_at`: when what the request carries was read from the provider (default now)."""
        request.read_at.FromSeconds(read_at or int(time.time()))
        request.reconciliation_id = f"recon_{self.now}"
        self.report.add(await entitlement_call(self.w.deps.entitlement.ApplyReconciliation, request))

    async def replay(self, since: int, customer: str | None = None) -> None:
        """Forwards every provider event from `since` (those of `customer` only, when given), a
        window at a time, oldest first; without `customer` the checkpoint moves after each window."""
        start = since
        while True:
            if customer is None:
                await self.lease()
            bounded = start + EVENT_WINDOW_S <= self.now - SETTLE_S
            end = start + EVENT_WINDOW_S if bounded else None
            listed = await pages(partial(self.w.deps.provider.list_events, start, end))
            for event in sorted(listed, key=lambda e: (e.get("created", 0), e.get("id", ""))):
                if customer is None or _customer_of(event) == customer:
                    await self._forward(event)
            # Replayed up to the newest event read, or to the end of a window read whole.
            reached = max([int(e.get("created") or 0) for e in listed] + [end - 1 if end else 0])
            if customer is None and reached:
                done = pb.ApplyReconciliationRequest(omit_open_mismatches=True)
                done.events_checkpoint.FromSeconds(reached)
                await self.apply(done)
            if end is None:
                return
            start = end

    async def _forward(self, event: dict[str, Any]) -> None:
        try:
            accepted = await forward(self.w, event, json.dumps(event).encode())
        except (BadWebhook, InvalidRequest) as exc:
            self.report.events_unreadable += 1
            REPLAYED.labels("unreadable").inc()
            log.warning("reconcile_event_unreadable", provider_event_id=event.get("id"), error=str(exc))
            return
        if accepted.outcome == "rejected" and accepted.reason.startswith(UNREADABLE):
            self.report.events_unreadable += 1  # kept, to be normalized again (ReplayUnreadableEvents)
            REPLAYED.labels("unreadable").inc()
            return
        missed = accepted.outcome != "duplicate"
        self.report.events_replayed += missed
        REPLAYED.labels("missed" if missed else "duplicate").inc()

    async def read_accounts(self, accounts: list[pb.ReconcileAccount]) -> list[pb.ProviderAccountState]:
        """Each account's subscriptions as the provider holds them, a few accounts at once."""
        limit = asyncio.Semaphore(READS_AT_ONCE)

        async def read(account: pb.ReconcileAccount) -> pb.ProviderAccountState:
            async with limit:
                return await self._read_account(account)

        states = await asyncio.gather(*(read(a) for a in accounts))
        self.report.accounts_checked += len(states)
        for state in states:
            ACCOUNTS.labels("unreadable" if state.unreadable else "compared").inc()
        return list(states)

    async def _read_account(self, account: pb.ReconcileAccount) -> pb.ProviderAccountState:
        state = pb.ProviderAccountState(account_id=account.account_id,
                                        provider_customer_id=account.provider_customer_id)
        try:
            listed = await pages(partial(self.w.deps.provider.list_subscriptions, account.provider_customer_id))
            state.subscriptions.extend(norm.subscription(s, {}) for s in listed)
        except (InvalidRequest, norm.MalformedEvent) as exc:  # refused by the provider, or not understood
            del state.subscriptions[:]
            state.unreadable = str(exc)
            log.warning("reconcile_account_unreadable", account_id=account.account_id, error=str(exc))
        return state

    async def overdue(self, overdue: list[pb.OverduePurchase]) -> list[pb.CheckoutSessionSnapshot]:
        return [norm.checkout_session(await provider_call(
            self.w.deps.provider.retrieve_checkout_session(o.checkout_session_id)), {}) for o in overdue]


def _customer_of(event: dict[str, Any]) -> str:
    obj = (event.get("data") or {}).get("object") or {}
    return norm.ref(obj.get("customer")) if isinstance(obj, dict) else ""


async def reconcile(w: WebhookDeps, account_id: str | None) -> ReconcileReport:
    """One account, or a full run (replay, overdue purchases, the sweep) under the lease; logs the
    run and counts it."""
    run = Run(w)
    try:
        if account_id:
            await _one_account(run, account_id)
        else:
            await _full_run(run)
    except AlreadyRunning:
        RUNS.labels("skipped").inc()
        raise
    except Exception:
        RUNS.labels("failed").inc()
        raise
    RUNS.labels("completed").inc()
    r = run.report
    log.info("reconciled", account_id=account_id, events_replayed=r.events_replayed,
             events_unreadable=r.events_unreadable, accounts_checked=r.accounts_checked,
             accounts_unreadable=r.accounts_unreadable, subscriptions_checked=r.subscriptions_checked,
             mismatches_found=r.mismatches_found, mismatches_repaired=r.mismatches_repaired,
             purchases_resolved=r.purchases_resolved, sweep_complete=r.sweep_complete,
             open_mismatches=len(r.open_mismatches))
    return r


async def _one_account(run: Run, account_id: str) -> None:
    state: pb.GetReconcileStateResponse = await entitlement_call(
        run.w.deps.entitlement.GetReconcileState, pb.GetReconcileStateRequest(account_id=account_id))
    for account in state.accounts:
        await run.replay(_since(state, run.now), customer=account.provider_customer_id)
    read_at = int(time.time())
    request = pb.ApplyReconciliationRequest(accounts=await run.read_accounts(list(state.accounts)),
                                            checkout_sessions=await run.overdue(list(state.overdue_purchases)))
    await run.apply(request, read_at)
    await carry_out_all(run.w.deps, [a for a in state.conflict_actions if a.account_id == account_id])


async def _full_run(run: Run) -> None:
    await run.lease()
    try:
        first: pb.GetReconcileStateResponse = await entitlement_call(
            run.w.deps.entitlement.GetReconcileState, pb.GetReconcileStateRequest(page_size=1))
        await run.replay(_since(first, run.now))
        read_at = int(time.time())
        await run.apply(pb.ApplyReconciliationRequest(checkout_sessions=await run.overdue(
            list(first.overdue_purchases)), omit_open_mismatches=True), read_at)
        await carry_out_all(run.w.deps, list(first.conflict_actions))
        while True:
            await run.lease()
            page: pb.GetReconcileStateResponse = await entitlement_call(
                run.w.deps.entitlement.GetReconcileState, pb.GetReconcileStateRequest(page_size=PAGE_SIZE))
            last = not page.sweep_position
            read_at = int(time.time())
            await run.apply(pb.ApplyReconciliationRequest(
                accounts=await run.read_accounts(list(page.accounts)), sweep_position=page.sweep_position,
                omit_open_mismatches=not last), read_at)
            PAGES.inc()
            log.info("reconcile_page", started_after=page.sweep_started_after or None,
                     accounts=len(page.accounts), position=page.sweep_position or None)
            if last:
                SWEEPS.inc()
                run.report.sweep_complete = True
                return
    finally:
        try:
            await run.lease(timedelta(0))
        except CheckoutError as exc:  # it lapses by itself
            log.warning("reconcile_lease_not_released", error=str(exc))


def _since(state: pb.GetReconcileStateResponse, now: int) -> int:
    checkpoint = state.events_checkpoint.seconds if state.HasField("events_checkpoint") else 0
    return checkpoint or now - FIRST_REPLAY_S


async def reconcile_every(w: WebhookDeps, interval_s: float) -> None:
    """The periodic reconciler. Whatever a run meets, it is logged and counted and the next run
    tries again (resuming the sweep where it stopped); a run skipped because another replica is
    reconciling is normal."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await reconcile(w, None)
        except AlreadyRunning as exc:
            log.info("reconcile_skipped", reason=str(exc))
        except Exception:
            log.exception("reconcile_failed")
