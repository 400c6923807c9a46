"""The reconciler: re-reads the provider and lets the entitlement service record and repair
what differs. Missed events are replayed from the provider's event list since the last
checkpoint; overdue purchases are checked against their checkout sessions."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from checkout_service.service import entitlement_call, provider_call
from checkout_service.stripe import normalize as norm
from checkout_service.webhooks import WebhookDeps, forward
from selfserve.entitlement.v1 import entitlement_pb2 as pb

log = structlog.get_logger("reconcile")

# With no checkpoint yet, replay this far back (the provider keeps events for 30 days).
FIRST_REPLAY_S = 3 * 24 * 3600


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconciliation did: the entitlement service's answer and how many missed provider
    events it replayed."""

    reply: pb.ApplyReconciliationResponse
    events_replayed: int


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


async def replay(w: WebhookDeps, checkpoint: Timestamp | None, now: int) -> tuple[int, int | None]:
    """Forwards every provider event since the checkpoint (duplicates change nothing); returns how
    many had been missed (not recorded before) and the newest event's time."""
    since = checkpoint.seconds if checkpoint is not None and checkpoint.seconds else now - FIRST_REPLAY_S
    events = await pages(lambda after: w.deps.provider.list_events(since, after))
    newest: int | None = None
    missed = 0
    for event in sorted(events, key=lambda e: (e.get("created", 0), e.get("id", ""))):
        accepted = await forward(w, event, json.dumps(event).encode())
        missed += accepted.outcome != "duplicate"
        newest = max(newest or 0, int(event.get("created") or 0))
    return missed, newest


async def reconcile(w: WebhookDeps, account_id: str | None) -> ReconcileReport:
    """Compares first, so drift is found and counted (and repaired from the provider's present
    state), then replays the events missed since the checkpoint, which fill in the history."""
    deps = w.deps
    state: pb.GetReconcileStateResponse = await entitlement_call(
        deps.entitlement.GetReconcileState, pb.GetReconcileStateRequest(account_id=account_id or ""))
    now = int(time.time())
    request = pb.ApplyReconciliationRequest(reconciliation_id=f"recon_{now}")
    request.read_at.FromSeconds(now)
    for account in state.accounts:
        subscriptions = await pages(partial(deps.provider.list_subscriptions, account.provider_customer_id))
        request.accounts.append(pb.ProviderAccountState(
            account_id=account.account_id, provider_customer_id=account.provider_customer_id,
            subscriptions=[norm.subscription(s, {}) for s in subscriptions]))
    for overdue in state.overdue_purchases:
        session = await provider_call(deps.provider.retrieve_checkout_session(overdue.checkout_session_id))
        request.checkout_sessions.append(norm.checkout_session(session, {}))
    reply: pb.ApplyReconciliationResponse = await entitlement_call(deps.entitlement.ApplyReconciliation, request)
    replayed = 0
    if not account_id:
        checkpoint = state.events_checkpoint if state.HasField("events_checkpoint") else None
        replayed, newest = await replay(w, checkpoint, now)
        if newest is not None:
            done = pb.ApplyReconciliationRequest(reconciliation_id=request.reconciliation_id, read_at=request.read_at)
            done.events_checkpoint.FromSeconds(newest)
            latest = await entitlement_call(deps.entitlement.ApplyReconciliation, done)
            del reply.open_mismatches[:]
            reply.open_mismatches.extend(latest.open_mismatches)
    log.info("reconciled", account_id=account_id, events_replayed=replayed,
             subscriptions_checked=reply.subscriptions_checked, mismatches_found=reply.mismatches_found,
             mismatches_repaired=reply.mismatches_repaired, purchases_resolved=reply.purchases_resolved,
             open_mismatches=len(reply.open_mismatches))
    return ReconcileReport(reply, replayed)
