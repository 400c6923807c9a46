"""Applying provider events: one transaction and one outcome per event.

Order inside the transaction: record the event id under its unique constraint (a duplicate,
even a concurrent one, stops here and changes nothing), lock the account, apply, record the
outcome. The provider's 2xx is sent only after the commit."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from entitlement_service.db import queries as q
from entitlement_service.domain.errors import Conflict
from entitlement_service.domain.funding import checkout_issues
from entitlement_service.domain.model import Mode, Outcome, Price, Product, PurchaseState, Status
from entitlement_service.domain.provider import (
    CheckoutSessionSnapshot,
    InvoiceSnapshot,
    ProviderEvent,
    SubscriptionSnapshot,
)
from entitlement_service.domain.purchases import next_state
from entitlement_service.domain.timeline import LIFECYCLE_RANK, order_key
from entitlement_service.service.catalog import store_price, store_product
from entitlement_service.service.deps import Deps
from entitlement_service.service.metrics import EVENTS
from entitlement_service.service.rebuild import Rebuild, record_transition

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


async def apply_events(deps: Deps, events: Sequence[ProviderEvent]) -> list[EventResult]:
    return [await apply_event(deps, event) for event in events]


async def apply_event(deps: Deps, event: ProviderEvent) -> EventResult:
    started = time.perf_counter()
    async with deps.pool.acquire() as conn, conn.transaction():
        if not await q.insert_event(conn, _event_row(event)):
            await q.count_delivery(conn, event.provider_event_id)
            result = EventResult(event.provider_event_id, Outcome.DUPLICATE)
        else:
            result = await _apply(conn, deps, event)
            await q.set_event_outcome(conn, event.provider_event_id, result.outcome.value, result.reason,
                                      result.account_id)
    EVENTS.labels(event.type, result.outcome.value).inc()
    log.info("provider_event", provider_event_id=event.provider_event_id, type=event.type,
             outcome=result.outcome.value, reason=result.reason or None, account_id=result.account_id,
             object_id=event.object_id, duration_ms=round((time.perf_counter() - started) * 1000, 3))
    return result


def _event_row(event: ProviderEvent) -> tuple[object, ...]:
    obj = event.object
    subscription_id = (obj.subscription_id if isinstance(obj, SubscriptionSnapshot | InvoiceSnapshot
                                                          | CheckoutSessionSnapshot) else None)
    session_id = obj.checkout_session_id if isinstance(obj, CheckoutSessionSnapshot) else None
    return (event.provider_event_id, event.type, event.created, event.received_at, event.api_version,
            event.object_id, subscription_id, session_id, event.account_id, event.provider_customer_id,
            Outcome.APPLIED.value, "", event.raw_payload, event.snapshot)


async def _apply(conn: q.Conn, deps: Deps, event: ProviderEvent) -> EventResult:
    obj = event.object
    if event.malformed:
        return EventResult(event.provider_event_id, Outcome.REJECTED, event.malformed, None)
    try:
        if isinstance(obj, SubscriptionSnapshot):
            return await _subscription(conn, deps, event, obj)
        if isinstance(obj, CheckoutSessionSnapshot):
            return await _checkout_session(conn, deps, event, obj)
        if isinstance(obj, InvoiceSnapshot):
            return await _invoice(conn, deps, event, obj)
        if isinstance(obj, Product):
            return await _product(conn, event, obj)
        if isinstance(obj, Price):
            return await _price(conn, event, obj)
    except Rejected as exc:
        return EventResult(event.provider_event_id, Outcome.REJECTED, str(exc), None)
    return EventResult(event.provider_event_id, Outcome.IGNORED, f"{event.type} is not used")


async def resolve_account(conn: q.Conn, event: ProviderEvent, hint: str | None = None) -> str:
    """The object's `metadata.account_id`; else the account linked to its provider customer; else
    the customer's own `metadata.account_id`. Links the customer to the account it finds."""
    customer = event.provider_customer_id
    account = event.account_id or hint
    if not account and customer:
        account = await q.account_for_customer(conn, customer)
    account = account or event.customer_account_id
    if not account:
        raise Rejected("unknown_account")
    await q.lock_account(conn, account)
    if customer and await q.link_customer(conn, account, customer):
        await _reapply_waiting(conn, account, customer)
    return account


async def _reapply_waiting(conn: q.Conn, account_id: str, customer_id: str) -> int:
    """Subscription and invoice events kept as `unknown_account` for this customer now belong to
    the account: they join its history, and the rebuild that follows applies them."""
    count = await q.adopt_waiting_events(conn, account_id, customer_id)
    if count:
        log.info("events_reapplied", account_id=account_id, count=count)
    return count


async def link_and_apply(deps: Deps, account_id: str, customer_id: str) -> int:
    """Links an account to its provider customer; returns how many waiting events now apply."""
    async with deps.pool.acquire() as conn, conn.transaction():
        account = await q.lock_account(conn, account_id)
        holder = await q.account_for_customer(conn, customer_id)
        if holder not in (None, account_id) or account["provider_customer_id"] not in (None, customer_id):
            raise Conflict(f"customer {customer_id} and account {account_id} are linked elsewhere")
        if not await q.link_customer(conn, account_id, customer_id):
            return 0
        count = await _reapply_waiting(conn, account_id, customer_id)
        if count and await Rebuild(conn, deps, account_id, "provider_event", f"link:{customer_id}").run():
            await q.bump_revision(conn, account_id)
        return count


async def _learn_prices(conn: q.Conn, items: Sequence[tuple[Price, Product | None]]) -> None:
    """A price the catalog does not know is learned from the snapshot when the snapshot carries
    its product (with the product's metadata); otherwise the event is rejected naming the price.
    An event that references an invalid catalog entry is rejected with the entry's reason."""
    known = await q.load_prices(conn, [price.price_id for price, _ in items])
    for price, product in items:
        resolved = known.get(price.price_id)
        if resolved is None and product is not None:
            await q.lock_catalog(conn)
            config = await q.load_config(conn)
            await store_product(conn, product, config)
            resolved, _ = await store_price(conn, price, product, config)
        if resolved is None:
            raise Rejected(f"unknown_price: {price.price_id} is not in the catalog and the event does not "
                           "carry its product")
        if not resolved.valid:
            raise Rejected(f"invalid_catalog_entry: {resolved.invalid_reason}")


async def _subscription(conn: q.Conn, deps: Deps, event: ProviderEvent, snap: SubscriptionSnapshot) -> EventResult:
    account = await resolve_account(conn, event)
    await _learn_prices(conn, [(i.price, i.product) for i in snap.items])
    head = await q.subscription_head(conn, snap.subscription_id)
    outcome, reason = Outcome.APPLIED, ""
    if head is not None:
        held = (head["provider_updated_at"], head["provider_refetched"], LIFECYCLE_RANK[Status(head["status"])],
                head["provider_event_id"] or "")
        if order_key(snap) < held:
            outcome, reason = Outcome.STALE, f"older than the state held (from {head['provider_event_id']})"
    await q.set_event_outcome(conn, event.provider_event_id, outcome.value, reason, account)
    await _rebuild(conn, deps, account, event)
    return EventResult(event.provider_event_id, outcome, reason, account)


async def _invoice(conn: q.Conn, deps: Deps, event: ProviderEvent, invoice: InvoiceSnapshot) -> EventResult:
    if event.type != "invoice.paid" or not invoice.paid or invoice.subscription_id is None:
        return EventResult(event.provider_event_id, Outcome.IGNORED,
                           "only paid subscription invoices fund grants; status changes arrive as subscription events")
    account = await resolve_account(conn, event)
    await q.set_event_outcome(conn, event.provider_event_id, Outcome.APPLIED.value, "", account)
    await _rebuild(conn, deps, account, event)
    return EventResult(event.provider_event_id, Outcome.APPLIED, "", account)


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
        await _learn_prices(conn, [(i.price, i.product) for i in session.line_items])
        prices = await q.load_prices(conn, [i.price.price_id for i in session.line_items])
        programs = (await q.load_config(conn)).grant_programs
        for issue in checkout_issues(session, prices, programs):
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
    await q.set_event_outcome(conn, event.provider_event_id, Outcome.APPLIED.value, reason, account)
    await _rebuild(conn, deps, account, event)
    return EventResult(event.provider_event_id, Outcome.APPLIED, reason, account)


async def _rebuild(conn: q.Conn, deps: Deps, account: str, event: ProviderEvent) -> None:
    cause = "reconciliation" if event.type.startswith(RECONCILIATION) else "provider_event"
    if await Rebuild(conn, deps, account, cause, event.provider_event_id, event.created).run():
        await q.bump_revision(conn, account)


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
