"""Applying provider events: one outcome per event, a batch of events in one transaction.

Order inside the transaction: record each event id under its unique constraint (a duplicate,
even a concurrent one, stops there and changes nothing), lock the accounts, apply, record the
outcomes. The provider's 2xx is sent only after the commit. Subscription and invoice events for
different accounts are applied together, their reads and writes made once for all of them;
checkout sessions and catalog objects one at a time, in their place in the batch."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog
from asyncpg import Record

from catalog_rules.model import Price, Product
from entitlement_service.db import queries as q
from entitlement_service.domain.errors import Conflict
from entitlement_service.domain.funding import checkout_issues
from entitlement_service.domain.model import Mode, Outcome, PurchaseState, Status
from entitlement_service.domain.provider import (
    CheckoutSessionSnapshot,
    InvoiceSnapshot,
    ProviderEvent,
    SubscriptionSnapshot,
)
from entitlement_service.domain.purchases import next_state
from entitlement_service.domain.timeline import LIFECYCLE_RANK, order_key
from entitlement_service.service.account_store import StoredAccount, Writes, load_accounts
from entitlement_service.service.catalog import store_price, store_product
from entitlement_service.service.catalog_cache import CatalogView
from entitlement_service.service.deps import Deps
from entitlement_service.service.metrics import EVENTS
from entitlement_service.service.rebuild import Rebuild, rebuild_account, record_transition

log = structlog.get_logger("events")
# Events the reconciler makes from the provider's present state carry this prefix on the type.
RECONCILIATION = "reconciliation."


@dataclass(frozen=True)
class EventResult:
    provider_event_id: str
    outcome: Outcome
    reason: str = ""
    account_id: str | None = None


class Rejected(Exception):
    """The event's data cannot be applied; it is kept with this reason."""


async def apply_event(deps: Deps, event: ProviderEvent) -> EventResult:
    return (await apply_events(deps, [event]))[0]


async def apply_events(deps: Deps, events: Sequence[ProviderEvent]) -> list[EventResult]:
    """Applies the events in order in one transaction. When that transaction fails, each event is
    applied again in its own, so one event that cannot be applied holds back only itself."""
    started = time.perf_counter()
    try:
        async with deps.pool.acquire() as conn, conn.transaction():
            results = await _apply_in_order(conn, deps, events)
    except Exception:
        if len(events) == 1:
            raise
        log.warning("batch_failed", events=len(events), retry="each event in its own transaction", exc_info=True)
        return await _apply_one_by_one(deps, events)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    for event, result in zip(events, results, strict=True):
        EVENTS.labels(event.type, result.outcome.value).inc()
        log.info("provider_event", provider_event_id=event.provider_event_id, type=event.type,
                 outcome=result.outcome.value, reason=result.reason or None, account_id=result.account_id,
                 object_id=event.object_id, duration_ms=duration_ms, batch=len(events))
    return results


async def _apply_one_by_one(deps: Deps, events: Sequence[ProviderEvent]) -> list[EventResult]:
    """Every event that can be applied is; then the first failure, if any, is raised."""
    results: list[EventResult] = []
    failure: Exception | None = None
    for event in events:
        try:
            results += await apply_events(deps, [event])
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


def _alone(event: ProviderEvent) -> bool:
    """Checkout sessions and catalog objects are applied one at a time."""
    return not event.malformed and isinstance(event.object, CheckoutSessionSnapshot | Product | Price)


def _keys(event: ProviderEvent) -> set[str]:
    """What two events applied together must not share: events about the same account, customer
    or subscription are applied one after the other."""
    obj = event.object
    subscription = obj.subscription_id if isinstance(obj, SubscriptionSnapshot | InvoiceSnapshot) else None
    named = (("event", event.provider_event_id), ("account", event.account_id),
             ("customer", event.provider_customer_id), ("subscription", subscription))
    return {f"{kind}:{value}" for kind, value in named if value}


def _cause(event: ProviderEvent) -> str:
    return "reconciliation" if event.type.startswith(RECONCILIATION) else "provider_event"


async def _apply_in_order(conn: q.Conn, deps: Deps, events: Sequence[ProviderEvent]) -> list[EventResult]:
    results: list[EventResult] = []
    together: list[ProviderEvent] = []
    taken: set[str] = set()
    for event in events:
        keys = _keys(event)
        if together and (_alone(event) or keys & taken):
            results += await _apply_together(conn, deps, together)
            together, taken = [], set()
        if _alone(event):
            results.append(await _apply_alone(conn, deps, event))
        else:
            together.append(event)
            taken |= keys
    if together:
        results += await _apply_together(conn, deps, together)
    return results


def _event_row(event: ProviderEvent, account_id: str | None) -> tuple[object, ...]:
    obj = event.object
    subscription_id = (obj.subscription_id if isinstance(obj, SubscriptionSnapshot | InvoiceSnapshot
                                                          | CheckoutSessionSnapshot) else None)
    session_id = obj.checkout_session_id if isinstance(obj, CheckoutSessionSnapshot) else None
    return (event.provider_event_id, event.type, event.created, event.received_at, event.api_version,
            event.object_id, subscription_id, session_id, account_id, event.provider_customer_id,
            Outcome.APPLIED.value, "", event.raw_payload, event.snapshot)


def _needs_account(event: ProviderEvent) -> bool:
    obj = event.object
    return not event.malformed and (isinstance(obj, SubscriptionSnapshot) or (
        isinstance(obj, InvoiceSnapshot) and event.type == "invoice.paid" and obj.paid
        and obj.subscription_id is not None))


def _decided(event: ProviderEvent) -> EventResult | None:
    """The outcome of an event that needs no account, if it is one."""
    if event.malformed:
        return EventResult(event.provider_event_id, Outcome.REJECTED, event.malformed, None)
    if isinstance(event.object, InvoiceSnapshot) and not _needs_account(event):
        return EventResult(event.provider_event_id, Outcome.IGNORED,
                           "only paid subscription invoices fund grants; status changes arrive as subscription events")
    if not _needs_account(event):
        return EventResult(event.provider_event_id, Outcome.IGNORED, f"{event.type} is not used")
    return None


def _account_of(event: ProviderEvent, linked: str | None, hint: str | None = None) -> str | None:
    """The object's `metadata.account_id` (or what the caller knows); else the account linked to
    its provider customer; else the customer's own `metadata.account_id`."""
    return event.account_id or hint or linked or event.customer_account_id or None


async def _accounts(conn: q.Conn, events: Sequence[ProviderEvent]) -> dict[str, str | None]:
    """Each event's account, the customers' links read once for all of them."""
    unnamed = [e.provider_customer_id for e in events
               if _needs_account(e) and not e.account_id and e.provider_customer_id]
    by_customer = await q.accounts_for_customers(conn, unnamed) if unnamed else {}
    return {e.provider_event_id: _account_of(e, by_customer.get(e.provider_customer_id or ""))
            if _needs_account(e) else e.account_id for e in events}


async def _apply_together(conn: q.Conn, deps: Deps, events: list[ProviderEvent]) -> list[EventResult]:
    """Subscription, invoice and unused events that share no account, customer or subscription."""
    accounts = await _accounts(conn, events)
    seen: set[str] = set()
    for i, e in enumerate(events):
        account = accounts[e.provider_event_id] if _needs_account(e) else None
        if account is not None:
            if account in seen:  # found through its customer: one account twice, so one after the other
                return await _apply_together(conn, deps, events[:i]) + await _apply_together(conn, deps, events[i:])
            seen.add(account)
    fresh = await q.insert_events(conn, [_event_row(e, accounts[e.provider_event_id]) for e in events])
    await q.count_deliveries(conn, [e.provider_event_id for e in events if e.provider_event_id not in fresh])
    results = {e.provider_event_id: EventResult(e.provider_event_id, Outcome.DUPLICATE)
               for e in events if e.provider_event_id not in fresh}
    todo: list[tuple[ProviderEvent, str]] = []
    for e in (e for e in events if e.provider_event_id in fresh):
        account = accounts[e.provider_event_id]
        decided = _decided(e) or (None if account else EventResult(e.provider_event_id, Outcome.REJECTED,
                                                                   "unknown_account"))
        if decided is not None:
            results[e.provider_event_id] = decided
        else:
            todo.append((e, account))  # type: ignore[arg-type]  # an account was found
    writes = Writes()
    if todo:
        results.update(await _derive(conn, deps, todo, writes, fresh))
    for e in events:
        r = results[e.provider_event_id]
        if r.outcome is not Outcome.DUPLICATE and (r.outcome, r.reason) != (Outcome.APPLIED, ""):
            writes.outcomes.append((e.provider_event_id, r.outcome.value, r.reason, r.account_id))
    await writes.flush(conn)
    return [results[e.provider_event_id] for e in events]


async def _derive(conn: q.Conn, deps: Deps, todo: list[tuple[ProviderEvent, str]], writes: Writes,
                  held_at_insert: Mapping[str, Record | None]) -> dict[str, EventResult]:
    """Applies subscription and paid-invoice events, one per account, into `writes`.
    `held_at_insert` is each event's subscription row as recording the event found it."""
    results: dict[str, EventResult] = {}
    new_accounts, refused, catalog_version = await _hold_accounts(conn, todo)
    catalog = await deps.catalog.view(conn, catalog_version)
    derive: list[tuple[ProviderEvent, str]] = []
    for e, account in todo:
        try:
            if account in refused:
                raise Rejected(refused[account])
            if isinstance(e.object, SubscriptionSnapshot):
                catalog = await _learn_prices(conn, deps, catalog, [(i.price, i.product) for i in e.object.items])
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
    stored.update((a, StoredAccount(history=[e.snapshot])) for e, a in derive if a in new_accounts)
    decoded = {e.snapshot: e for e, _ in derive}
    for e, account in derive:
        outcome, reason = Outcome.APPLIED, ""
        if isinstance(e.object, SubscriptionSnapshot):
            outcome, reason = _ordering(e.object, held_at_insert[e.provider_event_id] if account in new_accounts
                                        else heads.get(e.object.subscription_id))
        Rebuild(deps, catalog, stored[account], writes, account, _cause(e), e.provider_event_id, e.created,
                decoded).run()
        results[e.provider_event_id] = EventResult(e.provider_event_id, outcome, reason, account)
    return results


async def _hold_accounts(conn: q.Conn, todo: list[tuple[ProviderEvent, str]]
                         ) -> tuple[set[str], dict[str, str], int]:
    """Locks the accounts (creating new ones) and links each unlinked one to its event's provider
    customer; events that waited for that customer join the account's history. Returns the
    accounts created now that took no waiting events (they hold no rows yet), the reason each
    account whose event's customer is linked to another account is refused, and the catalog
    version read with the lock."""
    empty = set()
    refused = {}
    held_accounts = await q.hold_accounts(conn, [(a, e.provider_customer_id) for e, a in todo])
    customers = {a: e.provider_customer_id for e, a in todo}
    for account_id, held in held_accounts.items():
        if held.customer_holder is not None:
            refused[account_id] = (f"customer_linked_elsewhere: customer {customers[account_id]} is linked to "
                                   f"account {held.customer_holder}, not {account_id}")
        elif held.adopted:
            log.info("events_reapplied", account_id=account_id, count=held.adopted)
        elif held.created:
            empty.add(account_id)
    # An account the refused event alone would have created is not kept.
    await q.delete_accounts(conn, [a for a in refused if held_accounts[a].created])
    return empty, refused, next(iter(held_accounts.values())).catalog_version


def _ordering(snap: SubscriptionSnapshot, head: Record | None) -> tuple[Outcome, str]:
    """Stale when the subscription state already held is later in provider order."""
    if head is None:
        return Outcome.APPLIED, ""
    held = (head["provider_updated_at"], head["provider_refetched"], LIFECYCLE_RANK[Status(head["status"])],
            head["provider_event_id"] or "")
    if order_key(snap) < held:
        return Outcome.STALE, f"older than the state held (from {head['provider_event_id']})"
    return Outcome.APPLIED, ""


async def _apply_alone(conn: q.Conn, deps: Deps, event: ProviderEvent) -> EventResult:
    if not await q.insert_event(conn, _event_row(event, event.account_id)):
        await q.count_delivery(conn, event.provider_event_id)
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
    await q.set_event_outcome(conn, event.provider_event_id, result.outcome.value, result.reason, result.account_id)
    return result


async def resolve_account(conn: q.Conn, event: ProviderEvent, hint: str | None = None) -> str:
    """The event's account (`_account_of`), locked and linked to the event's customer."""
    customer = event.provider_customer_id
    linked = await q.account_for_customer(conn, customer) if customer and not (event.account_id or hint) else None
    account = _account_of(event, linked, hint)
    if not account:
        raise Rejected("unknown_account")
    _, refused, _ = await _hold_accounts(conn, [(event, account)])
    if account in refused:
        raise Rejected(refused[account])
    return account


async def link_and_apply(deps: Deps, account_id: str, customer_id: str) -> int:
    """Links an account to its provider customer; returns how many waiting events now apply."""
    async with deps.pool.acquire() as conn, conn.transaction():
        held = (await q.hold_accounts(conn, [(account_id, customer_id)]))[account_id]
        if held.customer_holder is not None:
            raise Conflict(f"customer {customer_id} is linked to account {held.customer_holder}")
        if held.row["provider_customer_id"] not in (None, customer_id):
            raise Conflict(f"account {account_id} is linked to customer {held.row['provider_customer_id']}")
        count = held.adopted
        if count:
            log.info("events_reapplied", account_id=account_id, count=count)
            await rebuild_account(conn, deps, account_id, "provider_event", f"link:{customer_id}")
        return count


async def _learn_prices(conn: q.Conn, deps: Deps, catalog: CatalogView,
                        items: Sequence[tuple[Price, Product | None]]) -> CatalogView:
    """A price the catalog does not know is learned from the snapshot when the snapshot carries
    its product (with the product's metadata); otherwise the event is rejected naming the price.
    An event that references an invalid catalog entry is rejected with the entry's reason.
    Returns the catalog as it is now."""
    for price, product in items:
        resolved = catalog.prices.get(price.price_id)
        if resolved is None and product is not None:
            await q.lock_catalog(conn)
            config = (await deps.catalog.view(conn)).config
            await store_product(conn, product, config)
            resolved, _ = await store_price(conn, price, product, config)
            catalog = await deps.catalog.view(conn)
        if resolved is None:
            raise Rejected(f"unknown_price: {price.price_id} is not in the catalog and the event does not "
                           "carry its product")
        if not resolved.valid:
            raise Rejected(f"invalid_catalog_entry: {resolved.invalid_reason}")
    return catalog


async def _checkout_session(conn: q.Conn, deps: Deps, event: ProviderEvent,
                            session: CheckoutSessionSnapshot) -> EventResult:
    purchase = await q.get_purchase(conn, purchase_id=session.purchase_id) if session.purchase_id else None
    purchase = purchase or await q.get_purchase(conn, checkout_session_id=session.checkout_session_id)
    account = await resolve_account(conn, event, purchase["account_id"] if purchase else None)
    if purchase is not None:
        purchase = await q.get_purchase(conn, purchase_id=purchase["purchase_id"], lock=True)
    wanted: PurchaseState | None = None
    reason = ""
    kind = event.type.removeprefix(RECONCILIATION)
    if kind == "checkout.session.expired":
        wanted, reason = PurchaseState.EXPIRED, "checkout session expired"
    elif kind == "checkout.session.async_payment_failed":
        wanted, reason = PurchaseState.FAILED, "asynchronous payment failed"
    elif session.paid and session.mode is Mode.PAYMENT:
        catalog = await _learn_prices(conn, deps, await deps.catalog.view(conn),
                                      [(i.price, i.product) for i in session.line_items])
        prices = catalog.prices_for([i.price.price_id for i in session.line_items])
        for issue in checkout_issues(session, prices, catalog.config.grant_programs):
            await q.insert_issue(conn, account, issue, event.provider_event_id)
        wanted, reason = PurchaseState.FINALIZED, f"{event.type}: paid"
    elif session.paid and purchase is not None and session.subscription_id:
        await q.set_purchase_subscription(conn, purchase["purchase_id"], session.subscription_id)
    elif not session.paid:
        reason = f"payment {session.payment_status}; waiting for the provider"
    if purchase is not None and wanted is not None:
        target = next_state(PurchaseState(purchase["state"]), wanted)
        if target is not None:
            await record_transition(conn, deps, purchase, target, event.provider_event_id, reason, event.created)
    await rebuild_account(conn, deps, account, _cause(event), event.provider_event_id, event.created)
    return EventResult(event.provider_event_id, Outcome.APPLIED, reason, account)


async def _product(conn: q.Conn, event: ProviderEvent, product: Product) -> EventResult:
    await q.lock_catalog(conn)
    if not await q.product_is_newer(conn, product.product_id, product.provider_updated_at):
        return EventResult(event.provider_event_id, Outcome.STALE, "an equal or newer product state is held")
    await store_product(conn, product, await q.load_config(conn))
    return EventResult(event.provider_event_id, Outcome.APPLIED)


async def _price(conn: q.Conn, event: ProviderEvent, price: Price) -> EventResult:
    await q.lock_catalog(conn)
    held = (await q.load_prices(conn, [price.price_id])).get(price.price_id)
    if held is not None and held.price.provider_updated_at > price.provider_updated_at:
        return EventResult(event.provider_event_id, Outcome.STALE, "a newer price state is held")
    products = await q.load_products(conn, [price.product_id])
    resolved, _ = await store_price(conn, price, products.get(price.product_id), await q.load_config(conn))
    reason = "" if resolved.valid else f"stored as invalid: {resolved.invalid_reason}"
    return EventResult(event.provider_event_id, Outcome.APPLIED, reason)
