"""The catalog's rows: groups, plans, grant programs, gate bundles, provider products and prices
resolved against their products."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg

from catalog_rules.model import (
    Cadence,
    CatalogConfig,
    ChangePolicy,
    ConflictPolicy,
    GateBundle,
    GrantProgram,
    GrantSpec,
    Group,
    Plan,
    PlanKind,
    Price,
    Product,
    ResolvedPrice,
    Source,
)
from entitlement_service.db.pool import Conn
from entitlement_service.domain.price_book import PriceBook, PriceVersion

UPSERT_GROUP = """
INSERT INTO subscription_groups (code, stackable, conflict_policy) VALUES ($1, $2, $3)
ON CONFLICT (code) DO UPDATE SET stackable = excluded.stackable, conflict_policy = excluded.conflict_policy,
    updated_at = now()
    WHERE (subscription_groups.stackable, subscription_groups.conflict_policy)
        IS DISTINCT FROM (excluded.stackable, excluded.conflict_policy)
RETURNING code"""

UPSERT_PLAN = """
INSERT INTO plans (code, priority, kind) VALUES ($1, $2, $3)
ON CONFLICT (code) DO UPDATE SET priority = excluded.priority, kind = excluded.kind, updated_at = now()
    WHERE (plans.priority, plans.kind) IS DISTINCT FROM (excluded.priority, excluded.kind)
RETURNING code"""

UPSERT_PROGRAM = """
INSERT INTO grant_programs (code, cadence, unit, on_change) VALUES ($1, $2, $3, $4)
ON CONFLICT (code) DO UPDATE SET cadence = excluded.cadence, unit = excluded.unit, on_change = excluded.on_change,
    updated_at = now()
    WHERE (grant_programs.cadence, grant_programs.unit, grant_programs.on_change)
        IS DISTINCT FROM (excluded.cadence, excluded.unit, excluded.on_change)
RETURNING code"""

UPSERT_BUNDLE = """
INSERT INTO gate_bundles (code, gates) VALUES ($1, $2)
ON CONFLICT (code) DO UPDATE SET gates = excluded.gates, updated_at = now()
    WHERE gate_bundles.gates IS DISTINCT FROM excluded.gates
RETURNING code"""


async def upsert_config(conn: Conn, config: CatalogConfig) -> list[tuple[str, str, bool]]:
    """Returns (kind, code, changed) per entry."""
    results: list[tuple[str, str, bool]] = []
    for g in config.groups.values():
        results.append(("group", g.code, await conn.fetchval(
            UPSERT_GROUP, g.code, g.stackable, g.conflict_policy.value) is not None))
    for p in config.plans.values():
        results.append(("plan", p.code, await conn.fetchval(UPSERT_PLAN, p.code, p.priority, p.kind.value) is not None))
    for gp in config.grant_programs.values():
        changed = await conn.fetchval(UPSERT_PROGRAM, gp.code, gp.cadence.value, gp.unit, gp.on_change.value)
        results.append(("grant_program", gp.code, changed is not None))
    for b in config.gate_bundles.values():
        results.append(("gate_bundle", b.code, await conn.fetchval(UPSERT_BUNDLE, b.code, list(b.gates)) is not None))
    return results


def _grant_program(row: asyncpg.Record) -> GrantProgram:
    return GrantProgram(row["code"], Cadence(row["cadence"]), row["unit"], ChangePolicy(row["on_change"]))


def _gate_bundle(row: asyncpg.Record) -> GateBundle:
    return GateBundle(row["code"], tuple(row["gates"]))


async def load_config(conn: Conn) -> CatalogConfig:
    return CatalogConfig(
        groups={r["code"]: Group(r["code"], r["stackable"], ConflictPolicy(r["conflict_policy"]))
                for r in await conn.fetch("SELECT code, stackable, conflict_policy FROM subscription_groups")},
        plans={r["code"]: Plan(r["code"], r["priority"], PlanKind(r["kind"]))
               for r in await conn.fetch("SELECT code, priority, kind FROM plans")},
        grant_programs={r["code"]: _grant_program(r)
                        for r in await conn.fetch("SELECT code, cadence, unit, on_change FROM grant_programs")},
        gate_bundles={r["code"]: _gate_bundle(r) for r in await conn.fetch("SELECT code, gates FROM gate_bundles")},
    )


async def catalog_version(conn: Conn) -> int:
    """Changes with every catalog write (a trigger on each catalog table bumps it)."""
    version: int = await conn.fetchval("SELECT version FROM catalog_version")
    return version


CATALOG_LOCK_KEY = 0x5E1FCA7A


async def lock_catalog(conn: Conn) -> None:
    """Serializes catalog writers to the end of the transaction, so a price is always resolved
    against the configuration committed before it (a catalog load racing a price event cannot
    leave the price resolved against the old configuration)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", CATALOG_LOCK_KEY)


async def load_gate_bundles(conn: Conn, codes: Iterable[str]) -> list[GateBundle]:
    return [_gate_bundle(r) for r in await conn.fetch("SELECT code, gates FROM gate_bundles WHERE code = ANY($1)",
                                                      list(codes))]


# Older provider times never overwrite newer ones; an equal time with different content does,
# so a catalog file re-applied after an edit takes effect.
UPSERT_PRODUCT = """
INSERT INTO catalog_products (product_id, name, active, deleted, metadata, provider_updated_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (product_id) DO UPDATE SET name = excluded.name, active = excluded.active,
    deleted = excluded.deleted, metadata = excluded.metadata,
    provider_updated_at = excluded.provider_updated_at, updated_at = now()
WHERE catalog_products.provider_updated_at <= excluded.provider_updated_at
  AND (catalog_products.name, catalog_products.active, catalog_products.deleted, catalog_products.metadata)
      IS DISTINCT FROM (excluded.name, excluded.active, excluded.deleted, excluded.metadata)
RETURNING product_id"""


async def upsert_product(conn: Conn, p: Product) -> bool:
    return await conn.fetchval(UPSERT_PRODUCT, p.product_id, p.name, p.active, p.deleted, p.metadata,
                               p.provider_updated_at) is not None


async def product_is_newer(conn: Conn, product_id: str, at: datetime) -> bool:
    stored = await conn.fetchval("SELECT provider_updated_at FROM catalog_products WHERE product_id = $1", product_id)
    return stored is None or stored <= at


PRICE_COLUMNS = ("price_id, product_id, lookup_key, active, deleted, unit_amount, currency, interval, interval_count, "
                 "metadata, provider_updated_at")
RESOLUTION_COLUMNS = "subscription_group, billing_plan_code, gate_bundle, grant_bindings, valid, invalid_reason"

UPSERT_PRICE = f"""
INSERT INTO catalog_prices ({PRICE_COLUMNS}, {RESOLUTION_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (price_id) DO UPDATE SET ({PRICE_COLUMNS}, {RESOLUTION_COLUMNS}, updated_at)
    = (excluded.price_id, excluded.product_id, excluded.lookup_key, excluded.active, excluded.deleted,
       excluded.unit_amount, excluded.currency, excluded.interval, excluded.interval_count, excluded.metadata,
       excluded.provider_updated_at, excluded.subscription_group, excluded.billing_plan_code, excluded.gate_bundle,
       excluded.grant_bindings, excluded.valid, excluded.invalid_reason, now())
WHERE catalog_prices.provider_updated_at <= excluded.provider_updated_at
  AND (catalog_prices.product_id, catalog_prices.lookup_key, catalog_prices.active, catalog_prices.deleted,
       catalog_prices.unit_amount, catalog_prices.currency, catalog_prices.interval, catalog_prices.interval_count,
       catalog_prices.metadata, catalog_prices.subscription_group, catalog_prices.billing_plan_code,
       catalog_prices.gate_bundle, catalog_prices.grant_bindings, catalog_prices.valid,
       catalog_prices.invalid_reason)
      IS DISTINCT FROM (excluded.product_id, excluded.lookup_key, excluded.active, excluded.deleted,
       excluded.unit_amount, excluded.currency, excluded.interval, excluded.interval_count, excluded.metadata,
       excluded.subscription_group, excluded.billing_plan_code, excluded.gate_bundle, excluded.grant_bindings,
       excluded.valid, excluded.invalid_reason)
RETURNING price_id"""


def _grants_json(grants: tuple[GrantSpec, ...]) -> list[dict[str, Any]]:
    return [{"grant_program_code": g.grant_program_code, "amount": g.amount,
             "scale_by_quantity": g.scale_by_quantity, "source": g.source.value} for g in grants]


async def upsert_price(conn: Conn, r: ResolvedPrice) -> bool:
    p = r.price
    return await conn.fetchval(
        UPSERT_PRICE, p.price_id, p.product_id, p.lookup_key, p.active, p.deleted, p.unit_amount, p.currency,
        p.interval, p.interval_count, p.metadata, p.provider_updated_at, r.subscription_group, r.billing_plan_code,
        r.gate_bundle, _grants_json(r.grants), r.valid, r.invalid_reason,
    ) is not None


async def price_is_newer(conn: Conn, price_id: str, at: datetime) -> bool:
    stored = await conn.fetchval("SELECT provider_updated_at FROM catalog_prices WHERE price_id = $1", price_id)
    return stored is None or stored <= at


async def release_lookup_key(conn: Conn, lookup_key: str, keep_price_id: str) -> None:
    """A lookup key moves to the newest price that claims it, as at the provider."""
    await conn.execute("UPDATE catalog_prices SET lookup_key = NULL WHERE lookup_key = $1 AND price_id <> $2",
                       lookup_key, keep_price_id)


PRODUCT_COLUMNS = "product_id, name, active, metadata, provider_updated_at, deleted"


def _product(r: asyncpg.Record) -> Product:
    return Product(r["product_id"], r["name"], r["active"], dict(r["metadata"]), r["provider_updated_at"],
                   r["deleted"])


async def load_products(conn: Conn, product_ids: Iterable[str] | None = None) -> dict[str, Product]:
    if product_ids is None:
        found = await conn.fetch(f"SELECT {PRODUCT_COLUMNS} FROM catalog_products")
    else:
        found = await conn.fetch(f"SELECT {PRODUCT_COLUMNS} FROM catalog_products WHERE product_id = ANY($1)",
                                 list(product_ids))
    return {r["product_id"]: _product(r) for r in found}


def _price(r: asyncpg.Record) -> Price:
    return Price(r["price_id"], r["product_id"], r["lookup_key"], r["active"], r["unit_amount"], r["currency"],
                 r["interval"], r["interval_count"], dict(r["metadata"]), r["provider_updated_at"], r["deleted"])


async def load_raw_prices(conn: Conn, *, product_id: str) -> list[Price]:
    """The product's prices as the provider holds them, to be resolved again."""
    return [_price(r) for r in await conn.fetch(f"SELECT {PRICE_COLUMNS} FROM catalog_prices WHERE product_id = $1",
                                                product_id)]


RESOLVED_SELECT = f"""
SELECT {", ".join("pr." + c for c in PRICE_COLUMNS.split(", "))}, {RESOLUTION_COLUMNS},
    p.name AS product_name, (p.active AND NOT p.deleted) AS product_active
FROM catalog_prices pr LEFT JOIN catalog_products p ON p.product_id = pr.product_id"""


def _resolved_price(r: asyncpg.Record) -> ResolvedPrice:
    grants = _grants_of(r["grant_bindings"])
    return ResolvedPrice(_price(r), r["product_name"] or "", r["subscription_group"], r["billing_plan_code"],
                         r["gate_bundle"], grants, r["valid"], r["invalid_reason"], bool(r["product_active"]))


async def load_prices(conn: Conn, price_ids: Iterable[str] | None = None) -> dict[str, ResolvedPrice]:
    if price_ids is None:
        found = await conn.fetch(RESOLVED_SELECT + " ORDER BY pr.product_id, pr.unit_amount, pr.price_id")
    else:
        found = await conn.fetch(RESOLVED_SELECT + " WHERE pr.price_id = ANY($1)", list(set(price_ids)))
    return {r["price_id"]: _resolved_price(r) for r in found}


async def find_prices(conn: Conn, refs: Sequence[str]) -> dict[str, ResolvedPrice]:
    """By provider price id or lookup key; keyed by the reference as given."""
    where = " WHERE pr.price_id = ANY($1) OR (pr.lookup_key = ANY($1) AND NOT pr.deleted)"
    by_ref: dict[str, ResolvedPrice] = {}
    for r in await conn.fetch(RESOLVED_SELECT + where, list(refs)):
        resolved = _resolved_price(r)
        for ref in (resolved.price_id, resolved.price.lookup_key):
            if ref is not None and ref in refs:
                by_ref[ref] = resolved
    return by_ref


VERSION_COLUMNS = "subscription_group, billing_plan_code, gate_bundle, grant_bindings, valid, invalid_reason"


def _grants_of(stored: list[dict[str, Any]]) -> tuple[GrantSpec, ...]:
    return tuple(GrantSpec(g["grant_program_code"], g["amount"], g["scale_by_quantity"], Source(g["source"]))
                 for g in stored)


def _resolution(r: ResolvedPrice) -> tuple[object, ...]:
    return (r.subscription_group, r.billing_plan_code, r.gate_bundle, r.grants, r.valid, r.invalid_reason)


async def add_price_version(conn: Conn, resolved: ResolvedPrice, effective_from: datetime) -> bool:
    """Records the price's resolution from `effective_from` (since always for a price never
    versioned) unless the one in force then is the same; returns whether it was recorded."""
    held = await conn.fetchrow(
        f"""SELECT effective_from, {VERSION_COLUMNS} FROM catalog_price_versions WHERE price_id = $1
            AND (effective_from IS NULL OR effective_from <= $2) ORDER BY effective_from DESC NULLS LAST LIMIT 1""",
        resolved.price_id, effective_from)
    if held is not None and (held["subscription_group"], held["billing_plan_code"], held["gate_bundle"],
                             _grants_of(held["grant_bindings"]), held["valid"], held["invalid_reason"]
                             ) == _resolution(resolved):
        return False
    first = await conn.fetchval("SELECT NOT EXISTS (SELECT 1 FROM catalog_price_versions WHERE price_id = $1)",
                                resolved.price_id)
    await conn.execute(
        f"""INSERT INTO catalog_price_versions (price_id, effective_from, {VERSION_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (price_id, coalesce(effective_from, '-infinity'::timestamptz)) DO UPDATE SET
            ({VERSION_COLUMNS}) = (excluded.subscription_group, excluded.billing_plan_code, excluded.gate_bundle,
                                   excluded.grant_bindings, excluded.valid, excluded.invalid_reason)""",
        resolved.price_id, None if first else effective_from, resolved.subscription_group, resolved.billing_plan_code,
        resolved.gate_bundle, _grants_json(resolved.grants), resolved.valid, resolved.invalid_reason)
    return True


async def load_price_book(conn: Conn, current: dict[str, ResolvedPrice]) -> PriceBook:
    """Every price's versions, each resolution on the price as it is now."""
    versions: dict[str, list[PriceVersion]] = {}
    for r in await conn.fetch(f"SELECT price_id, effective_from, {VERSION_COLUMNS} FROM catalog_price_versions "
                              "ORDER BY price_id, effective_from NULLS FIRST"):
        price = current.get(r["price_id"])
        if price is not None:
            versions.setdefault(r["price_id"], []).append(PriceVersion(r["effective_from"], replace(
                price, subscription_group=r["subscription_group"], billing_plan_code=r["billing_plan_code"],
                gate_bundle=r["gate_bundle"], grants=_grants_of(r["grant_bindings"]), valid=r["valid"],
                invalid_reason=r["invalid_reason"])))
    return PriceBook({pid: tuple(versions.get(pid) or [PriceVersion(None, price)])
                      for pid, price in current.items()})


QUEUE_TOUCHED = """
INSERT INTO catalog_rederive (account_id, cause_id)
SELECT DISTINCT account_id, $5 FROM (
    SELECT account_id FROM subscription_items WHERE price_id = ANY($1::text[])
    UNION ALL SELECT account_id FROM plan_assignments
    WHERE billing_plan_code = ANY($2::text[]) OR subscription_group = ANY($4::text[])
    UNION ALL SELECT account_id FROM grant_bindings
    WHERE grant_program_code = ANY($3::text[]) OR subscription_group = ANY($4::text[])
) touched
ON CONFLICT (account_id) DO UPDATE SET cause_id = excluded.cause_id, queued_at = now()
RETURNING account_id"""


async def queue_touched_accounts(conn: Conn, *, prices: Iterable[str], plans: Iterable[str],
                                 programs: Iterable[str], groups: Iterable[str], cause_id: str) -> int:
    """Queues for derivation every account holding one of the prices, or a plan assignment or grant
    binding of one of the plans, programs or groups; returns how many."""
    found = await conn.fetch(QUEUE_TOUCHED, list(prices), list(plans), list(programs), list(groups), cause_id)
    return len(found)


async def take_queued_accounts(conn: Conn, limit: int) -> list[tuple[str, str]]:
    """Up to `limit` queued (account, cause) pairs, removed from the queue and locked against
    another replica taking them (skipped if it holds them) until this transaction ends."""
    found = await conn.fetch(
        """DELETE FROM catalog_rederive WHERE account_id IN (
               SELECT account_id FROM catalog_rederive ORDER BY account_id LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING account_id, cause_id""", limit)
    return sorted((r["account_id"], r["cause_id"]) for r in found)
