"""Applying provider events: one outcome per event, a batch of events in one transaction.

Order inside the transaction: record each event id under its unique constraint (a duplicate,
even a concurrent one, stops there and changes nothing), lock the accounts, apply, record the
outcomes. The provider's 2xx is sent only after the commit. Subscription and invoice events for
different accounts are applied together, their reads and writes made once for all of them;
checkout sessions and catalog objects one at a time, in their place in the batch. What each
event needs and may share is decided by the domain's event policy."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

import structlog

from catalog_rules.model import Price, Product
from entitlement_service.db import accounts, events
from entitlement_service.db.pool import RETRYABLE, Conn
from entitlement_service.domain import event_policy as policy
from entitlement_service.domain.model import Outcome
from entitlement_service.domain.partial import PartialHistory
from entitlement_service.domain.provider import CheckoutSessionSnapshot, ProviderEvent, SubscriptionSnapshot
from entitlement_service.domain.records import (
    AuditEntry,
    EventResult,
    HistoryEntry,
    RecordedEvent,
    StoredAccount,
    SubscriptionRecord,
)
from entitlement_service.service.catalog import rederive_queued
from entitlement_service.service.catalog_cache import CachedCatalog
from entitlement_service.service.deps import Deps
from entitlement_service.service.event_accounts import Rejected, hold_event_accounts
from entitlement_service.service.event_objects import apply_checkout_session, apply_price, apply_product, learn_prices
from entitlement_service.service.metrics import DERIVED_PART, DERIVED_WHOLE, events_of, late_events_of
from entitlement_service.service.rebuild import Rebuild, load_accounts
from entitlement_service.service.transactions import write_transaction
from entitlement_service.service.writes import Writes

log = structlog.get_logger("events")


async def apply_event(deps: Deps, event: ProviderEvent) -> EventResult:
    return (await apply_events(deps, [event]))[0]


async def apply_events(deps: Deps, batch: Sequence[ProviderEvent], *, replay: bool = False) -> list[EventResult]:
    """Applies the events in order in one transaction. When that transaction fails, each event is
    applied again in its own, so one event that cannot be applied holds back only itself.

    With `replay`, the events are recorded ones that were rejected: each is taken (locked) instead
    of recorded, applied the same way, audited as replayed and given its new outcome; one no longer
    rejected (applied meanwhile) is a duplicate."""
    started = time.perf_counter()
    try:
        results = await _transaction(deps, batch, replay)
    except Exception:
        if len(batch) == 1:
            raise
        log.warning("batch_failed", events=len(batch), retry="each event in its own transaction", exc_info=True)
        return await _apply_one_by_one(deps, batch, replay)
    if any(isinstance(event.object, Product | Price) for event in batch):
        await rederive_queued(deps)  # what a changed price or product touched, for every account at once
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    for event, result in zip(batch, results, strict=True):
        events_of(event.type, result.outcome.value).inc()
        if result.late:
            late_events_of(event.type, result.outcome.value).inc()
        log.info("provider_event", provider_event_id=event.provider_event_id, type=event.type,
                 outcome=result.outcome.value, reason=result.reason or None, account_id=result.account_id,
                 object_id=event.object_id, duration_ms=duration_ms, batch=len(batch), replay=replay or None,
                 late=result.late or None)
    return results


# Attempts of one transaction when the database drops it (a restart, a cut connection, a deadlock):
# applying events again is safe, since their ids deduplicate them.
ATTEMPTS = 3


async def _transaction(deps: Deps, batch: Sequence[ProviderEvent], replay: bool) -> list[EventResult]:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with write_transaction(deps) as conn:
                return await _apply_in_order(conn, deps, batch, replay)
        except RETRYABLE as exc:
            if attempt == ATTEMPTS:
                raise
            log.warning("transaction_retried", attempt=attempt, events=len(batch), error=type(exc).__name__)
            await asyncio.sleep(random.uniform(0.5, 1.5) * 0.05 * 2 ** attempt)  # backoff with jitter
    raise AssertionError("unreachable")


async def _apply_one_by_one(deps: Deps, batch: Sequence[ProviderEvent], replay: bool) -> list[EventResult]:
    """Every event that can be applied is; then the first failure, if any, is raised."""
    results: list[EventResult] = []
    failure: Exception | None = None
    for event in batch:
        try:
            results += await apply_events(deps, [event], replay=replay)
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


async def _apply_in_order(conn: Conn, deps: Deps, batch: Sequence[ProviderEvent], replay: bool
                          ) -> list[EventResult]:
    if not replay:
        batch = await _first_times(conn, batch)
    results: list[EventResult] = []
    together: list[ProviderEvent] = []
    taken: set[str] = set()
    for event in batch:
        keys = policy.batch_keys(event)
        alone = policy.applied_alone(event)
        if together and (alone or keys & taken):
            results += await _apply_together(conn, deps, together, replay)
            together, taken = [], set()
        if alone:
            results.append(await _apply_alone(conn, deps, event, replay))
        else:
            together.append(event)
            taken |= keys
    if together:
        results += await _apply_together(conn, deps, together, replay)
    return results


async def _first_times(conn: Conn, batch: Sequence[ProviderEvent]) -> Sequence[ProviderEvent]:
    """An event timed by the reconciler's read (`policy.timed_by_read`) and already recorded takes
    the time it was first recorded with, which is what its row is found by: read again later, it is
    still the same event, and a duplicate."""
    ids = [e.provider_event_id for e in batch if policy.timed_by_read(e)]
    if not ids:
        return batch
    first = await events.first_times(conn, ids)
    return [replace(e, created=first[e.provider_event_id]) if e.provider_event_id in first else e for e in batch]


async def _accounts(conn: Conn, batch: Sequence[ProviderEvent]) -> dict[str, str | None]:
    """Each event's account (`policy.account_of`), the customers' links read once for all of them."""
    unnamed = [e.provider_customer_id for e in batch
               if policy.needs_account(e) and not e.account_id and e.provider_customer_id]
    by_customer = await accounts.accounts_for_customers(conn, unnamed) if unnamed else {}
    return {e.provider_event_id: policy.account_of(e, by_customer.get(e.provider_customer_id or ""))
            if policy.needs_account(e) else e.account_id for e in batch}


async def _record(conn: Conn, batch: Sequence[ProviderEvent], account_of: Mapping[str, str | None], replay: bool
                  ) -> dict[str, SubscriptionRecord | None]:
    """The events recorded now (or, replaying, taken again), each with its subscription's row."""
    if replay:
        taken = [(e.provider_event_id, e.created, account_of[e.provider_event_id]) for e in batch]
        return await events.take_rejected(conn, taken, [e.subscription_id for e in batch])
    return await events.insert_events(conn, [RecordedEvent.of(e, account_of[e.provider_event_id]) for e in batch])


def _replayed(writes: Writes, results: Sequence[EventResult]) -> None:
    """Replayed events are audited and get their outcome now, even a plain `applied`."""
    for r in results:
        if r.outcome is not Outcome.DUPLICATE:
            writes.audit.append(AuditEntry(r.account_id, "provider_event", r.provider_event_id, "provider_event",
                                           r.provider_event_id, "replayed",
                                           {"outcome": r.outcome.value, "reason": r.reason}))


async def _apply_together(conn: Conn, deps: Deps, batch: list[ProviderEvent], replay: bool) -> list[EventResult]:
    """Subscription, invoice and unused events that share no account, customer or subscription."""
    account_of = await _accounts(conn, batch)
    seen: set[str] = set()
    for i, e in enumerate(batch):
        account = account_of[e.provider_event_id] if policy.needs_account(e) else None
        if account is not None:
            if account in seen:  # found through its customer: one account twice, so one after the other
                return (await _apply_together(conn, deps, batch[:i], replay)
                        + await _apply_together(conn, deps, batch[i:], replay))
            seen.add(account)
    fresh = await _record(conn, batch, account_of, replay)
    if not replay:
        await events.count_deliveries(conn, [(e.provider_event_id, e.created) for e in batch
                                             if e.provider_event_id not in fresh])
    results = {e.provider_event_id: EventResult(e.provider_event_id, Outcome.DUPLICATE)
               for e in batch if e.provider_event_id not in fresh}
    todo: list[tuple[ProviderEvent, str]] = []
    for e in (e for e in batch if e.provider_event_id in fresh):
        account = account_of[e.provider_event_id]
        decided = policy.outcome_without_account(e)
        if decided is None and account is None:
            decided = policy.unknown_account(e)
        if decided is not None:
            results[e.provider_event_id] = decided
        elif account is not None:
            todo.append((e, account))
    writes = Writes()
    if todo:
        results.update(await _derive(conn, deps, todo, writes, fresh))
    created = {e.provider_event_id: e.created for e in batch}
    writes.outcomes.extend((created[r.provider_event_id], r) for r in results.values()
                           if r.outcome is not Outcome.DUPLICATE
                           and (replay or (r.outcome, r.reason) != (Outcome.APPLIED, "")))
    if replay:
        _replayed(writes, list(results.values()))
    await writes.flush(conn)
    return [results[e.provider_event_id] for e in batch]


async def _derive(conn: Conn, deps: Deps, todo: list[tuple[ProviderEvent, str]], writes: Writes,
                  held_at_insert: Mapping[str, SubscriptionRecord | None]) -> dict[str, EventResult]:
    """Applies subscription and paid-invoice events, one per account, into `writes`.
    `held_at_insert` is each event's subscription row as recording the event found it."""
    results: dict[str, EventResult] = {}
    new_accounts, refused, catalog_version = await hold_event_accounts(conn, todo)
    cached = await deps.catalog.view(conn, catalog_version)
    derive: list[tuple[ProviderEvent, str]] = []
    for e, account in todo:
        try:
            if account in refused:
                raise Rejected(refused[account])
            if isinstance(e.object, SubscriptionSnapshot):
                cached = await learn_prices(conn, deps, cached, [(i.price, i.product) for i in e.object.items])
            derive.append((e, account))
        except Rejected as exc:
            results[e.provider_event_id] = EventResult(e.provider_event_id, Outcome.REJECTED, str(exc), None)
    heads = await _derive_all(conn, deps, cached, [(e, a) for e, a in derive if a not in new_accounts], writes)
    for e, account in derive:
        # A new account's history is its one event of this batch; it has no other rows to read. A
        # subscription its event names, if held at all, belongs to another account: its row as
        # recording the event found it orders the event.
        if account in new_accounts:
            _rebuild(deps, cached, StoredAccount(), writes, e, account)
            DERIVED_WHOLE.inc()
        if policy.in_history(e):
            writes.history.append(HistoryEntry.of(e, account))
        stale = None
        if isinstance(e.object, SubscriptionSnapshot):
            held = held_at_insert[e.provider_event_id] if account in new_accounts else heads.get(
                e.object.subscription_id)
            stale = policy.stale_reason(e.object, held)
        late = policy.arrived_late(e, held_at_insert.get(e.provider_event_id))
        results[e.provider_event_id] = EventResult(e.provider_event_id, Outcome.STALE if stale else Outcome.APPLIED,
                                                   stale or "", account, late,
                                                   any(a.account_id == account for a in writes.conflict_actions))
    return results


async def _derive_all(conn: Conn, deps: Deps, cached: CachedCatalog, derive: list[tuple[ProviderEvent, str]],
                      writes: Writes) -> dict[str, SubscriptionRecord]:
    """Derives each event's account (one event per account) from the instant its event can change
    it on, or whole when that cannot be exact (domain/partial.py); returns the subscriptions held
    for the accounts and the events, as read before."""
    if not derive:
        return {}
    since = {a: policy.derived_since(e) for e, a in derive}
    subscription_ids = [e.object.subscription_id for e, _ in derive if isinstance(e.object, SubscriptionSnapshot)]
    stored, heads = await load_accounts(conn, since, subscription_ids)
    whole: list[tuple[ProviderEvent, str]] = []
    for e, account in derive:
        try:
            _rebuild(deps, cached, stored[account], writes, e, account)
            (DERIVED_PART if stored[account].since else DERIVED_WHOLE).inc()
        except PartialHistory:
            whole.append((e, account))
    if whole:
        again, _ = await load_accounts(conn, {a: None for _, a in whole})
        for e, account in whole:
            _rebuild(deps, cached, again[account], writes, e, account)
        DERIVED_WHOLE.inc(len(whole))
    return heads


def _rebuild(deps: Deps, cached: CachedCatalog, stored: StoredAccount, writes: Writes, event: ProviderEvent,
             account: str) -> None:
    """The account's derivation with the event's snapshot in its history (it is written with the
    rest). One from an instant on whose event's subscription has no snapshot before it (a new
    subscription, or its earliest snapshot arriving late) is derived whole."""
    obj = event.object
    if stored.since is not None and isinstance(obj, SubscriptionSnapshot) and obj.subscription_id not in stored.earlier:
        raise PartialHistory(f"{obj.subscription_id} has no snapshot before {event.provider_event_id}")
    stored = replace(stored, history=(*stored.history, event.snapshot))
    Rebuild(deps, cached, stored, writes, account, policy.cause_of(event), event.provider_event_id,
            policy.completion_time(event), {event.snapshot: event}).run()


async def _apply_alone(conn: Conn, deps: Deps, event: ProviderEvent, replay: bool) -> EventResult:
    if not await _record(conn, [event], {event.provider_event_id: event.account_id}, replay):
        if not replay:
            await events.count_deliveries(conn, [(event.provider_event_id, event.created)])
        return EventResult(event.provider_event_id, Outcome.DUPLICATE)
    obj = event.object
    try:
        if isinstance(obj, CheckoutSessionSnapshot):
            result = await apply_checkout_session(conn, deps, event, obj)
        elif isinstance(obj, Product):
            result = await apply_product(conn, event, obj)
        else:
            assert isinstance(obj, Price)
            result = await apply_price(conn, event, obj)
    except Rejected as exc:
        result = EventResult(event.provider_event_id, Outcome.REJECTED, str(exc), None)
    writes = Writes(outcomes=[(event.created, result)])
    if replay:
        _replayed(writes, [result])
    await writes.flush(conn)
    return result
