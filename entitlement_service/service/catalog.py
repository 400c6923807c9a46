"""Catalog use cases: upsert from the catalog file or provider snapshots, list with
purchasability, validate a selection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from catalog_rules import metadata as rules
from catalog_rules.model import CatalogConfig, Price, Product, ResolvedPrice
from entitlement_service.db import accounts, listener, reads
from entitlement_service.db import catalog as db
from entitlement_service.db.pool import Conn
from entitlement_service.domain import event_policy as policy
from entitlement_service.domain.open_purchases import Decision
from entitlement_service.domain.purchasability import Owned, PriceChoice, Validation, choice_for, validate_selection
from entitlement_service.service import transactions
from entitlement_service.service.deps import Deps
from entitlement_service.service.purchases import PurchaseView, open_checkout_in, view_of
from entitlement_service.service.rebuild import rebuild_accounts
from entitlement_service.service.transactions import write_transaction


@dataclass(frozen=True)
class EntryResult:
    kind: str
    id: str
    changed: bool
    valid: bool = True
    invalid_reason: str | None = None


def _merged(stored: CatalogConfig, incoming: CatalogConfig) -> CatalogConfig:
    return CatalogConfig(
        groups={**stored.groups, **incoming.groups}, plans={**stored.plans, **incoming.plans},
        grant_programs={**stored.grant_programs, **incoming.grant_programs},
        gate_bundles={**stored.gate_bundles, **incoming.gate_bundles},
    )


@dataclass
class Touched:
    """What a catalog write changed that accounts' derived rows depend on."""

    prices: set[str] = field(default_factory=set)  # whose resolution changed
    plans: set[str] = field(default_factory=set)
    programs: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)


async def store_price(conn: Conn, resolved: ResolvedPrice, effective_at: datetime,
                      touched: Touched | None = None) -> bool:
    """Stores a resolved price unless the stored entry describes a later provider time (its
    lookup key moves to it, as at the provider), and its resolution from `effective_at` when that
    changed; returns whether the stored entry changed."""
    price = resolved.price
    if price.lookup_key and not price.deleted and await db.price_is_newer(conn, price.price_id,
                                                                           price.provider_updated_at):
        await db.release_lookup_key(conn, price.lookup_key, price.price_id)
    changed = await db.upsert_price(conn, resolved)
    if changed and await db.add_price_version(conn, resolved, effective_at) and touched is not None:
        touched.prices.add(price.price_id)
    return changed


async def store_product(conn: Conn, product: Product, config: CatalogConfig, effective_at: datetime,
                        touched: Touched | None = None) -> bool:
    """Stores the product if newer and resolves its prices again, whose merged rules depend on it."""
    changed = await db.upsert_product(conn, product)
    if changed:
        prices = await db.load_raw_prices(conn, product_id=product.product_id)
        for resolved in rules.resolve_prices(prices, {product.product_id: product}, config).values():
            await store_price(conn, resolved, effective_at, touched)
    return changed


async def queue_touched(conn: Conn, touched: Touched, effective_at: datetime) -> int:
    """Queues the accounts a catalog change touches to be derived again; returns how many."""
    if not (touched.prices or touched.plans or touched.programs or touched.groups):
        return 0
    return await db.queue_touched_accounts(conn, prices=touched.prices, plans=touched.plans,
                                           programs=touched.programs, groups=touched.groups,
                                           cause_id=f"catalog@{effective_at.isoformat()}")


@dataclass(frozen=True)
class CatalogUpdate:
    entries: list[EntryResult]
    accounts_affected: int
    dry_run: bool


class _DryRun(Exception):
    """Ends a dry run's transaction, so nothing it wrote is kept."""

    def __init__(self, update: CatalogUpdate) -> None:
        self.update = update


async def upsert_catalog(deps: Deps, config: CatalogConfig, products: Sequence[Product], prices: Sequence[Price],
                         effective_at: datetime | None = None, dry_run: bool = False) -> CatalogUpdate:
    """Upserts the entries in one transaction; a changed price resolution takes effect from
    `effective_at` (default now), from the start of the whole second it falls in, and every
    account it touches is derived again before this returns. A dry run answers the same and keeps
    nothing. (The provider times the resolution is looked up at are whole seconds: a change made
    0.4 s into a second covers an invoice or checkout the provider timed at that second.)"""
    at = (effective_at or deps.clock()).replace(microsecond=0)
    try:
        async with write_transaction(deps) as conn:
            update = await _upsert(conn, config, products, prices, at, dry_run)
            if dry_run:
                raise _DryRun(update)
    except _DryRun as done:
        return done.update
    await rederive_queued(deps)
    return update


async def _upsert(conn: Conn, config: CatalogConfig, products: Sequence[Product], prices: Sequence[Price],
                  at: datetime, dry_run: bool) -> CatalogUpdate:
    results: list[EntryResult] = []
    touched = Touched()
    await db.lock_catalog(conn)
    kinds = {"plan": touched.plans, "grant_program": touched.programs, "group": touched.groups}
    for kind, code, changed in await db.upsert_config(conn, config):
        results.append(EntryResult(kind, code, changed))
        if changed and kind in kinds:
            kinds[kind].add(code)
    merged = _merged(await db.load_config(conn), config)
    for product in products:
        results.append(EntryResult("product", product.product_id,
                                   await store_product(conn, product, merged, at, touched)))
    known = await db.load_products(conn, {p.product_id for p in prices})
    for price in prices:
        resolved = rules.resolve_price(price, known.get(price.product_id), merged)
        changed = await store_price(conn, resolved, at, touched)
        results.append(EntryResult("price", price.price_id, changed, resolved.valid, resolved.invalid_reason))
    affected = await queue_touched(conn, touched, at)
    if any(r.changed for r in results):
        await listener.notify_everything(conn)
        transactions.changed([(listener.EVERYTHING, 0)])
    return CatalogUpdate(results, affected, dry_run)


# Accounts derived again per transaction when a catalog change is applied.
REDERIVE_CHUNK = 200


async def rederive_queued(deps: Deps) -> int:
    """Derives again every account a catalog change queued, a chunk per transaction (each account
    locked, as for an event); returns how many. Safe to run on several replicas at once."""
    done = 0
    while True:
        async with write_transaction(deps) as conn:
            taken = await db.take_queued_accounts(conn, REDERIVE_CHUNK)
            if not taken:
                return done
            await accounts.hold_accounts(conn, [(account_id, None) for account_id, _ in taken],
                                         policy.UNKNOWN_ACCOUNT, policy.ACCOUNT_EVENT_TYPES)
            await rebuild_accounts(conn, deps, dict(taken), "catalog")
        done += len(taken)


@dataclass(frozen=True)
class CatalogListing:
    """The catalog as one account sees it: every price with whether it may buy it."""

    config: CatalogConfig
    choices: tuple[PriceChoice, ...]
    owned: Owned


async def owned_groups(conn: Conn, account_id: str, now: datetime) -> dict[str, tuple[str, ...]]:
    """The account's subscriptions holding each group now, winners and conflict losers alike."""
    owned: dict[str, set[str]] = {}
    for subscription_id, group in await reads.live_subscriptions(conn, account_id, now):
        owned.setdefault(group, set()).add(subscription_id)
    return {group: tuple(sorted(subs)) for group, subs in owned.items()}


async def list_catalog(deps: Deps, account_id: str | None) -> CatalogListing:
    async with deps.pool.acquire() as conn:
        config = await db.load_config(conn)
        prices = await db.load_prices(conn)
        owned = await owned_groups(conn, account_id, deps.clock()) if account_id else {}
    visible = [p for p in prices.values() if not p.price.deleted]
    return CatalogListing(config, tuple(choice_for(p, config, owned) for p in visible), owned)


@dataclass(frozen=True)
class CheckedSelection:
    validation: Validation
    provider_customer_id: str | None
    # A purchase of the account already open in the selection's non-stackable group, if any, and
    # whether it is for the same selection (domain/open_purchases.py). RegisterPurchase decides
    # again under the account's lock; this lets a checkout skip creating a session it cannot use.
    open_purchase: PurchaseView | None = None
    same_selection: bool = False


async def validate_purchase(deps: Deps, account_id: str, items: Sequence[tuple[str, int]]) -> CheckedSelection:
    """The selection's validation, the provider customer the account is linked to, if any, and
    the purchase it has open in the selection's group, if any."""
    now = deps.clock()
    async with deps.pool.acquire() as conn:
        found = await db.find_prices(conn, [ref for ref, _ in items])
        config = await db.load_config(conn)
        owned = await owned_groups(conn, account_id, now)
        account = await accounts.get_account(conn, account_id)
        validation = validate_selection(items, found, config, owned)
        customer = account.provider_customer_id if account else None
        if not validation.ok:
            return CheckedSelection(validation, customer)
        opened = await open_checkout_in(conn, config, account_id, "", tuple(items), validation.mode,
                                        validation.subscription_group, now)
        if opened.open_purchase is None:
            return CheckedSelection(validation, customer)
        return CheckedSelection(validation, customer, await view_of(conn, opened.open_purchase.purchase_id),
                                opened.decision is Decision.REUSE)
