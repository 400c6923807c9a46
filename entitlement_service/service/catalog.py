"""Catalog use cases: upsert from the catalog file or provider snapshots, list with
purchasability, validate a selection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from catalog_rules import metadata as rules
from catalog_rules.model import CatalogConfig, Price, Product, ResolvedPrice
from entitlement_service.db import queries as q
from entitlement_service.domain.model import Mode
from entitlement_service.service.deps import Deps


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


async def store_price(conn: q.Conn, price: Price, product: Product | None,
                      config: CatalogConfig) -> tuple[ResolvedPrice, bool]:
    """Resolves the price against its product and the configuration, and stores it unless the
    stored entry describes a later provider time. Returns it and whether the stored entry changed."""
    resolved = rules.resolve_price(price, product, config)
    if price.lookup_key and not price.deleted and await q.price_is_newer(conn, price.price_id,
                                                                          price.provider_updated_at):
        await q.release_lookup_key(conn, price.lookup_key, price.price_id)
    return resolved, await q.upsert_price(conn, resolved)


async def store_product(conn: q.Conn, product: Product, config: CatalogConfig) -> bool:
    """Stores the product if newer and re-resolves its prices, whose merged rules depend on it."""
    changed = await q.upsert_product(conn, product)
    if changed:
        for price in await q.load_raw_prices(conn, product_id=product.product_id):
            await store_price(conn, price, product, config)
    return changed


async def upsert_catalog(deps: Deps, config: CatalogConfig, products: Sequence[Product],
                         prices: Sequence[Price]) -> list[EntryResult]:
    results: list[EntryResult] = []
    async with deps.pool.acquire() as conn, conn.transaction():
        await q.lock_catalog(conn)
        for kind, code, changed in await q.upsert_config(conn, config):
            results.append(EntryResult(kind, code, changed))
        merged = _merged(await q.load_config(conn), config)
        for product in products:
            results.append(EntryResult("product", product.product_id, await store_product(conn, product, merged)))
        known = await q.load_products(conn, {p.product_id for p in prices})
        for price in prices:
            resolved, changed = await store_price(conn, price, known.get(price.product_id), merged)
            results.append(EntryResult("price", price.price_id, changed, resolved.valid, resolved.invalid_reason))
        if any(r.changed for r in results):
            await q.notify_everything(conn)
    return results


@dataclass(frozen=True)
class PriceChoice:
    resolved: ResolvedPrice
    purchasable: bool
    problem: str | None = None
    message: str = ""
    requires_portal: bool = False
    conflicting_subscription_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogView:
    config: CatalogConfig
    choices: tuple[PriceChoice, ...]
    owned: dict[str, tuple[str, ...]]


async def owned_groups(conn: q.Conn, account_id: str, now: datetime) -> dict[str, tuple[str, ...]]:
    """The account's subscriptions holding each group now, winners and conflict losers alike."""
    owned: dict[str, list[str]] = {}
    for r in await q.live_subscriptions(conn, account_id, now):
        owned.setdefault(r["subscription_group"], []).append(r["subscription_id"])
    return {group: tuple(sorted(set(subs))) for group, subs in owned.items()}


def choice_for(resolved: ResolvedPrice, config: CatalogConfig, owned: dict[str, tuple[str, ...]]) -> PriceChoice:
    if not resolved.valid:
        return PriceChoice(resolved, False, "invalid_catalog_entry", resolved.invalid_reason or "invalid")
    if not resolved.purchasable:
        return PriceChoice(resolved, False, "inactive", f"price {resolved.price_id} is not active")
    group = config.groups.get(resolved.subscription_group or "")
    holders = owned.get(resolved.subscription_group or "", ())
    if group is not None and not group.stackable and holders and resolved.price.recurring:
        return PriceChoice(resolved, False, "group_conflict",
                           f"the account already holds {', '.join(holders)} in group {group.code}; change it "
                           "through the portal", requires_portal=True, conflicting_subscription_ids=holders)
    return PriceChoice(resolved, True)


async def list_catalog(deps: Deps, account_id: str | None) -> CatalogView:
    async with deps.pool.acquire() as conn:
        config = await q.load_config(conn)
        prices = await q.load_prices(conn)
        owned = await owned_groups(conn, account_id, deps.clock()) if account_id else {}
    visible = [p for p in prices.values() if not p.price.deleted]
    return CatalogView(config, tuple(choice_for(p, config, owned) for p in visible), owned)


@dataclass(frozen=True)
class Problem:
    code: str
    item_index: int
    price: str
    message: str


@dataclass(frozen=True)
class Validation:
    ok: bool
    subscription_group: str | None
    mode: Mode | None
    items: tuple[tuple[str, ResolvedPrice, int], ...]
    problems: tuple[Problem, ...]
    conflicting_subscription_ids: tuple[str, ...]
    provider_customer_id: str | None


async def validate_purchase(deps: Deps, account_id: str, items: Sequence[tuple[str, int]]) -> Validation:
    async with deps.pool.acquire() as conn:
        found = await q.find_prices(conn, [ref for ref, _ in items])
        config = await q.load_config(conn)
        owned = await owned_groups(conn, account_id, deps.clock())
        account = await q.get_account(conn, account_id)
    problems: list[Problem] = []
    resolved_items: list[tuple[str, ResolvedPrice, int]] = []
    conflicts: tuple[str, ...] = ()
    if not items:
        problems.append(Problem("empty", -1, "", "items must list at least one price"))
    seen: set[str] = set()
    for index, (ref, quantity) in enumerate(items):
        resolved = found.get(ref)
        if resolved is None:
            problems.append(Problem("unknown_price", index, ref, f"no price with id or lookup key {ref!r}"))
            continue
        if quantity < 1:
            problems.append(Problem("bad_quantity", index, ref, f"items[{index}].quantity must be at least 1"))
        if resolved.price_id in seen:
            problems.append(Problem("duplicate_price", index, ref, f"price {ref!r} appears more than once"))
        seen.add(resolved.price_id)
        choice = choice_for(resolved, config, owned)
        if not choice.purchasable and choice.problem:
            problems.append(Problem(choice.problem, index, ref, choice.message))
            conflicts = conflicts or choice.conflicting_subscription_ids
        resolved_items.append((ref, resolved, quantity))
    groups = {r.subscription_group for _, r, _ in resolved_items}
    modes = {Mode.SUBSCRIPTION if r.price.recurring else Mode.PAYMENT for _, r, _ in resolved_items}
    if len(groups) > 1:
        problems.append(Problem("mixed_groups", -1, "", f"items span groups {', '.join(sorted(map(str, groups)))}; "
                                                         "one checkout buys into one group"))
    if len(modes) > 1:
        problems.append(Problem("mixed_modes", -1, "", "recurring and one-time prices cannot share a checkout"))
    return Validation(
        ok=not problems, subscription_group=groups.pop() if len(groups) == 1 else None,
        mode=modes.pop() if len(modes) == 1 else None, items=tuple(resolved_items), problems=tuple(problems),
        conflicting_subscription_ids=conflicts,
        provider_customer_id=account["provider_customer_id"] if account else None,
    )

