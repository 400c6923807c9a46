"""Provider events applied one at a time, in their place in a batch: checkout sessions (their
purchase's state, their account, a one-time purchase's funding) and catalog objects (products
and prices, newer provider state only; a changed resolution takes effect at the event's provider
time and queues the accounts it touches). Also how an event teaches the catalog a price it
carries."""

from __future__ import annotations

from collections.abc import Sequence

from catalog_rules.metadata import resolve_price
from catalog_rules.model import Price, Product
from entitlement_service.db import catalog, derived, purchases
from entitlement_service.db.pool import Conn
from entitlement_service.domain import event_policy as policy
from entitlement_service.domain.funding import checkout_issues
from entitlement_service.domain.model import Outcome
from entitlement_service.domain.provider import CheckoutSessionSnapshot, ProviderEvent
from entitlement_service.domain.purchases import session_step, settle
from entitlement_service.domain.records import EventResult, Issuance
from entitlement_service.service.catalog import Touched, queue_touched, store_price, store_product
from entitlement_service.service.catalog_cache import CachedCatalog
from entitlement_service.service.deps import Deps
from entitlement_service.service.event_accounts import Rejected, resolve_account
from entitlement_service.service.rebuild import rebuild_account, record_transition


async def learn_prices(conn: Conn, deps: Deps, cached: CachedCatalog,
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
            # A price seen for the first time resolves so since always: no account is touched.
            await store_product(conn, product, config, price.provider_updated_at)
            resolved = resolve_price(price, product, config)
            await store_price(conn, resolved, price.provider_updated_at)
            cached = await deps.catalog.view(conn)
        problem = policy.catalog_problem(price.price_id, resolved)
        if problem is not None:
            raise Rejected(problem)
    return cached


async def apply_checkout_session(conn: Conn, deps: Deps, event: ProviderEvent,
                            session: CheckoutSessionSnapshot) -> EventResult:
    purchase = await purchases.get_purchase(conn, purchase_id=session.purchase_id) if session.purchase_id else None
    purchase = purchase or await purchases.get_purchase(conn, checkout_session_id=session.checkout_session_id)
    account = await resolve_account(conn, event, purchase.account_id if purchase else None)
    if purchase is not None:
        purchase = await purchases.get_purchase(conn, purchase_id=purchase.purchase_id, lock=True)
    step = session_step(event.type, session)
    if step.funds:
        cached = await learn_prices(conn, deps, await deps.catalog.view(conn),
                                     [(i.price, i.product) for i in session.line_items])
        prices = cached.book.in_force([i.price.price_id for i in session.line_items], session.at)
        await derived.insert_issues(conn, [Issuance(account, issue, event.provider_event_id)
                                    for issue in checkout_issues(session, prices, cached.config.grant_programs)])
    if step.links_subscription and purchase is not None and session.subscription_id:
        await purchases.set_purchase_subscriptions(conn, [(purchase.purchase_id, session.subscription_id)])
    move = settle(purchase.state, step.wanted, step.reason) if purchase is not None else None
    if purchase is not None and move is not None:
        await record_transition(conn, deps, purchase, move.to_state, event.provider_event_id, move.reason,
                                policy.completion_time(event))
    await rebuild_account(conn, deps, account, policy.cause_of(event), event.provider_event_id,
                          policy.completion_time(event))
    return EventResult(event.provider_event_id, Outcome.APPLIED, step.reason, account)


async def apply_product(conn: Conn, event: ProviderEvent, product: Product) -> EventResult:
    await catalog.lock_catalog(conn)
    if not await catalog.product_is_newer(conn, product.product_id, product.provider_updated_at):
        return EventResult(event.provider_event_id, Outcome.STALE, "an equal or newer product state is held")
    touched = Touched()
    await store_product(conn, product, await catalog.load_config(conn), event.created, touched)
    await queue_touched(conn, touched, event.created)
    return EventResult(event.provider_event_id, Outcome.APPLIED)


async def apply_price(conn: Conn, event: ProviderEvent, price: Price) -> EventResult:
    await catalog.lock_catalog(conn)
    held = (await catalog.load_prices(conn, [price.price_id])).get(price.price_id)
    if held is not None and held.price.provider_updated_at > price.provider_updated_at:
        return EventResult(event.provider_event_id, Outcome.STALE, "a newer price state is held")
    products = await catalog.load_products(conn, [price.product_id])
    resolved = resolve_price(price, products.get(price.product_id), await catalog.load_config(conn))
    touched = Touched()
    await store_price(conn, resolved, event.created, touched)
    await queue_touched(conn, touched, event.created)
    reason = "" if resolved.valid else f"stored as invalid: {resolved.invalid_reason}"
    return EventResult(event.provider_event_id, Outcome.APPLIED, reason)
