"""Applying provider events: one outcome per event, a batch of events in one transaction.

Order inside the transaction: record each event id under its unique constraint (a duplicate,
even a concurrent one, stops there and changes nothing), lock the accounts, apply, record the
outcomes. The provider's 2xx is sent only after the commit. Subscription and invoice events for
different accounts are applied together, their reads and writes made once for all of them;
checkout sessions and catalog objects one at a time, in their place in the batch. What each
event needs and may share is decided by the domain's event policy."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import structlog

from catalog_rules.metadata import resolve_price
from catalog_rules.model import Price, Product
from entitlement_service.db import accounts, catalog, derived, events, purchases
from entitlement_service.db.pool import Conn
from entitlement_service.domain import event_policy as policy
from entitlement_service.domain.errors import Conflict
from entitlement_service.domain.funding import checkout_issues
from entitlement_service.domain.model import Outcome
from entitlement_service.domain.provider import CheckoutSessionSnapshot, ProviderEvent, SubscriptionSnapshot
from entitlement_service.domain.purchases import next_state, session_step
from entitlement_service.domain.records import EventResult, Issuance, RecordedEvent, StoredAccount, SubscriptionRecord
from entitlement_service.service.catalog import store_price, store_product
from entitlement_service.service.catalog_cache import CachedCatalog
from entitlement_service.service.deps import Deps
from entitlement_service.service.metrics import EVENTS
from entitlement_service.service.rebuild import Rebuild, load_accounts, rebuild_account, record_transition
from entitlement_service.service.writes import Writes

log = structlog.get_logger("events")


class Rejected(Exception):
    """The event's data cannot be applied; it is kept with this reason."""


async def apply_event(deps: Deps, event: ProviderEvent) -> EventResult:
    return (await apply_events(deps, [event]))[0]


async def apply_events(deps: Deps, batch: Sequence[ProviderEvent]) -> list[EventResult]:
    """Applies the events in order in one transaction. When that transaction fails, each event is
    applied again in its own, so one event that cannot be applied holds back only itself."""
    started = time.perf_counter()
    try:
        async with deps.pool.acquire() as conn, conn.transaction():
            results = await _apply_in_order(conn, deps, batch)
    except Exception:
        if len(batch) == 1:
            raise
        log.warning("batch_failed", events=len(batch), retry="each event in its own transaction", exc_info=True)
        return await _apply_one_by_one(deps, batch)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    for event, result in zip(batch, results, strict=True):
        EVENTS.labels(event.type, result.outcome.value).inc()
        log.info("provider_event", provider_event_id=event.provider_event_id, type=event.type,
                 outcome=result.outcome.value, reason=result.reason or None, account_id=result.account_id,
                 object_id=event.object_id, duration_ms=duration_ms, batch=len(batch))
    return results


async def _apply_one_by_one(deps: Deps, batch: Sequence[ProviderEvent]) -> list[EventResult]:
    """Every event that can be applied is; then the first failure, if any, is raised."""
    results: list[EventResult] = []
    failure: Exception | None = None
    for event in batch:
        try:
            results += await apply_events(deps, [event])
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


async def _apply_in_order(conn: Conn, deps: Deps, batch: Sequence[ProviderEvent]) -> list[EventResult]:
    results: list[EventResult] = []
    together: list[ProviderEvent] = []
    taken: set[str] = set()
    for event in batch:
        keys = policy.batch_keys(event)
        alone = policy.applied_alone(event)
        if together and (alone or keys & taken):
            results += await _apply_together(conn, deps, together)
            together, taken = [], set()
        if alone:
            results.append(await _apply_alone(conn, deps, event))
        else:
            together.append(event)
            taken |= keys
    if together:
        results += await _apply_together(conn, deps, together)
    return results


async def _accounts(conn: Conn, batch: Sequence[ProviderEvent]) -> dict[str, str | None]:
    """Each event's account (`policy.account_of`), the customers' links read once for all of them."""
    unnamed = [e.provider_customer_id for e in batch
               if policy.needs_account(e) and not e.account_id and e.provider_customer_id]
    by_customer = await accounts.accounts_for_customers(conn, unnamed) if unnamed else {}
    return {e.provider_event_id: policy.account_of(e, by_customer.get(e.provider_customer_id or ""))
            if policy.needs_account(e) else e.account_id for e in batch}


async def _apply_together(conn: Conn, deps: Deps, batch: list[ProviderEvent]) -> list[EventResult]:
    """Subscription, invoice and unused events that share no account, customer or subscription."""
    account_of = await _accounts(conn, batch)
    seen: set[str] = set()
    for i, e in enumerate(batch):
        account = account_of[e.provider_event_id] if policy.needs_account(e) else None
        if account is not None:
            if account in seen:  # found through its customer: one account twice, so one after the other
                return await _apply_together(conn, deps, batch[:i]) + await _apply_together(conn, deps, batch[i:])
            seen.add(account)
    fresh = await events.insert_events(conn, [RecordedEvent.of(e, account_of[e.provider_event_id]) for e in batch])
    await events.count_deliveries(conn, [e.provider_event_id for e in batch if e.provider_event_id not in fresh])
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
    writes.outcomes.extend(r for r in results.values()
                           if r.outcome is not Outcome.DUPLICATE and (r.outcome, r.reason) != (Outcome.APPLIED, ""))
    await writes.flush(conn)
    return [results[e.provider_event_id] for e in batch]


async def _derive(conn: Conn, deps: Deps, todo: list[tuple[ProviderEvent, str]], writes: Writes,
                  held_at_insert: Mapping[str, SubscriptionRecord | None]) -> dict[str, EventResult]:
    """Applies subscription and paid-invoice events, one per account, into `writes`.
    `held_at_insert` is each event's subscription row as recording the event found it."""
    results: dict[str, EventResult] = {}
    new_accounts, refused, catalog_version = await _hold_accounts(conn, todo)
    cached = await deps.catalog.view(conn, catalog_version)
    derive: list[tuple[ProviderEvent, str]] = []
    for e, account in todo:
        try:
            if account in refused:
                raise Rejected(refused[account])
            if isinstance(e.object, SubscriptionSnapshot):
                cached = await _learn_prices(conn, deps, cached, [(i.price, i.product) for i in e.object.items])
            derive.append((e, account))
        except Rejected as exc:
            results[e.provider_event_id] = EventResult(e.provider_event_id, Outcome.REJECTED, str(exc), None)
    existing = [(e, a) for e, a in derive if a not in new_accounts]
    stored, heads = await load_accounts(conn, [a for _, a in existing], [
        e.object.subscription_id for e, _ in existing if isinstance(e.object, SubscriptionSnapshot)]
    ) if existing else ({}, {})
    # A new account's history is its one event of this batch; it has no other rows to read. A
    # subscription its event names, if held at all, belongs to another account: its row as
    # recording the event found it orders the event.
    stored.update((a, StoredAccount(history=(e.snapshot,))) for e, a in derive if a in new_accounts)
    decoded = {e.snapshot: e for e, _ in derive}
    for e, account in derive:
        stale = None
        if isinstance(e.object, SubscriptionSnapshot):
            held = held_at_insert[e.provider_event_id] if account in new_accounts else heads.get(
                e.object.subscription_id)
            stale = policy.stale_reason(e.object, held)
        Rebuild(deps, cached, stored[account], writes, account, policy.cause_of(e), e.provider_event_id, e.created,
                decoded).run()
        results[e.provider_event_id] = EventResult(e.provider_event_id, Outcome.STALE if stale else Outcome.APPLIED,
                                                   stale or "", account)
    return results


async def _hold_accounts(conn: Conn, todo: list[tuple[ProviderEvent, str]]) -> tuple[set[str], dict[str, str], int]:
    """Locks the accounts (creating new ones) and links each unlinked one to its event's provider
    customer; events that waited for that customer join the account's history. Returns the
    accounts created now that took no waiting events (they hold no rows yet), the reason each
    account whose event's customer is linked to another account is refused, and the catalog
    version read with the lock."""
    empty = set()
    refused = {}
    held_accounts = await accounts.hold_accounts(conn, [(a, e.provider_customer_id) for e, a in todo],
                                                 policy.UNKNOWN_ACCOUNT, policy.ACCOUNT_EVENT_TYPES)
    customers = {a: e.provider_customer_id for e, a in todo}
    for account_id, held in held_accounts.items():
        if held.customer_holder is not None:
            refused[account_id] = policy.linked_elsewhere(account_id, customers[account_id], held.customer_holder)
        elif held.adopted:
            log.info("events_reapplied", account_id=account_id, count=held.adopted)
        elif held.created:
            empty.add(account_id)
    # An account the refused event alone would have created is not kept.
    await accounts.delete_accounts(conn, [a for a in refused if held_accounts[a].created])
    return empty, refused, next(iter(held_accounts.values())).catalog_version


async def _apply_alone(conn: Conn, deps: Deps, event: ProviderEvent) -> EventResult:
    if not await events.insert_event(conn, RecordedEvent.of(event, event.account_id)):
        await events.count_deliveries(conn, [event.provider_event_id])
        return EventResult(event.provider_event_id, Outcome.DUPLICATE)
    obj = event.object
    try:
        if isinstance(obj, CheckoutSessionSnapshot):
            result = await _checkout_session(conn, deps, event, obj)
        elif isinstance(obj, Product):
            result = await _product(conn, event, obj)
        else:
            assert isinstance(obj, Price)
            result = await _price(conn, event, obj)
    except Rejected as exc:
        result = EventResult(event.provider_event_id, Outcome.REJECTED, str(exc), None)
    await events.set_event_outcomes(conn, [result])
    return result


async def resolve_account(conn: Conn, event: ProviderEvent, hint: str | None = None) -> str:
    """The event's account (`policy.account_of`), locked and linked to the event's customer."""
    customer = event.provider_customer_id
    linked = await accounts.account_for_customer(conn, customer) if customer and not (event.account_id or hint) \
        else None
    account = policy.account_of(event, linked, hint)
    if not account:
        raise Rejected(policy.UNKNOWN_ACCOUNT)
    _, refused, _ = await _hold_accounts(conn, [(event, account)])
    if account in refused:
        raise Rejected(refused[account])
    return account


async def link_and_apply(deps: Deps, account_id: str, customer_id: str) -> int:
    """Links an account to its provider customer; returns how many waiting events now apply."""
    async with deps.pool.acquire() as conn, conn.transaction():
        held = (await accounts.hold_accounts(conn, [(account_id, customer_id)], policy.UNKNOWN_ACCOUNT,
                                             policy.ACCOUNT_EVENT_TYPES))[account_id]
        if held.customer_holder is not None:
            raise Conflict(f"customer {customer_id} is linked to account {held.customer_holder}")
        if held.account.provider_customer_id not in (None, customer_id):
            raise Conflict(f"account {account_id} is linked to customer {held.account.provider_customer_id}")
        if held.adopted:
            log.info("events_reapplied", account_id=account_id, count=held.adopted)
            await rebuild_account(conn, deps, account_id, "provider_event", f"link:{customer_id}")
        return held.adopted


async def _learn_prices(conn: Conn, deps: Deps, cached: CachedCatalog,
                        items: Sequence[tuple[Price, Product | None]]) -> CachedCatalog:
    """A price the catalog does not know is learned from the snapshot when the snapshot carries
    its product (with the product's metadata); otherwise the event is rejected naming the price.
    An event that references an invalid catalog entry is rejected with the entry's reason.
    Returns the catalog as it is now."""
    for price, product in items:
        resolved = cached.prices.get(price.price_id)
        if resolved is None and product is not None:
            await catalog.lock_catalog(conn)
            config = (await deps.catalog.view(conn)).config
            await store_product(conn, product, config)
            resolved = resolve_price(price, product, config)
            await store_price(conn, resolved)
            cached = await deps.catalog.view(conn)
        problem = policy.catalog_problem(price.price_id, resolved)
        if problem is not None:
            raise Rejected(problem)
    return cached


async def _checkout_session(conn: Conn, deps: Deps, event: ProviderEvent,
                            session: CheckoutSessionSnapshot) -> EventResult:
    purchase = await purchases.get_purchase(conn, purchase_id=session.purchase_id) if session.purchase_id else None
    purchase = purchase or await purchases.get_purchase(conn, checkout_session_id=session.checkout_session_id)
    account = await resolve_account(conn, event, purchase.account_id if purchase else None)
    if purchase is not None:
        purchase = await purchases.get_purchase(conn, purchase_id=purchase.purchase_id, lock=True)
    step = session_step(event.type, session)
    if step.funds:
        cached = await _learn_prices(conn, deps, await deps.catalog.view(conn),
                                     [(i.price, i.product) for i in session.line_items])
        prices = cached.prices_for([i.price.price_id for i in session.line_items])
        await derived.insert_issues(conn, [Issuance(account, issue, event.provider_event_id)
                                    for issue in checkout_issues(session, prices, cached.config.grant_programs)])
    if step.links_subscription and purchase is not None and session.subscription_id:
        await purchases.set_purchase_subscriptions(conn, [(purchase.purchase_id, session.subscription_id)])
    if purchase is not None and step.wanted is not None:
        target = next_state(purchase.state, step.wanted)
        if target is not None:
            await record_transition(conn, deps, purchase, target, event.provider_event_id, step.reason, event.created)
    await rebuild_account(conn, deps, account, policy.cause_of(event), event.provider_event_id, event.created)
    return EventResult(event.provider_event_id, Outcome.APPLIED, step.reason, account)


async def _product(conn: Conn, event: ProviderEvent, product: Product) -> EventResult:
    await catalog.lock_catalog(conn)
    if not await catalog.product_is_newer(conn, product.product_id, product.provider_updated_at):
        return EventResult(event.provider_event_id, Outcome.STALE, "an equal or newer product state is held")
    await store_product(conn, product, await catalog.load_config(conn))
    return EventResult(event.provider_event_id, Outcome.APPLIED)


async def _price(conn: Conn, event: ProviderEvent, price: Price) -> EventResult:
    await catalog.lock_catalog(conn)
    held = (await catalog.load_prices(conn, [price.price_id])).get(price.price_id)
    if held is not None and held.price.provider_updated_at > price.provider_updated_at:
        return EventResult(event.provider_event_id, Outcome.STALE, "a newer price state is held")
    products = await catalog.load_products(conn, [price.product_id])
    resolved = resolve_price(price, products.get(price.product_id), await catalog.load_config(conn))
    await store_price(conn, resolved)
    reason = "" if resolved.valid else f"stored as invalid: {resolved.invalid_reason}"
    return EventResult(event.provider_event_id, Outcome.APPLIED, reason)
