"""Every SQL statement of the entitlement service. Query functions never open transactions:
the service owns them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from catalog_rules.model import CatalogConfig, GateBundle, Price, Product, ResolvedPrice
from entitlement_service.db import rows
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.funding import Issue
from entitlement_service.domain.timeline import ItemRow

Conn: TypeAlias = asyncpg.Connection

CHANGES_CHANNEL = "entitlements_changed"


def _columns(values: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column, for statements that insert many rows through unnest()."""
    return [list(column) for column in zip(*values, strict=True)] if values else [[] for _ in range(width)]

# --------------------------------------------------------------------------------------------
# Catalog

UPSERT_GROUP = """
INSERT INTO subscription_groups (code, stackable) VALUES ($1, $2)
ON CONFLICT (code) DO UPDATE SET stackable = excluded.stackable, updated_at = now()
    WHERE subscription_groups.stackable IS DISTINCT FROM excluded.stackable
RETURNING code"""

UPSERT_PLAN = """
INSERT INTO plans (code, priority, kind) VALUES ($1, $2, $3)
ON CONFLICT (code) DO UPDATE SET priority = excluded.priority, kind = excluded.kind, updated_at = now()
    WHERE (plans.priority, plans.kind) IS DISTINCT FROM (excluded.priority, excluded.kind)
RETURNING code"""

UPSERT_PROGRAM = """
INSERT INTO grant_programs (code, cadence, unit) VALUES ($1, $2, $3)
ON CONFLICT (code) DO UPDATE SET cadence = excluded.cadence, unit = excluded.unit, updated_at = now()
    WHERE (grant_programs.cadence, grant_programs.unit) IS DISTINCT FROM (excluded.cadence, excluded.unit)
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
        results.append(("group", g.code, await conn.fetchval(UPSERT_GROUP, g.code, g.stackable) is not None))
    for p in config.plans.values():
        results.append(("plan", p.code, await conn.fetchval(UPSERT_PLAN, p.code, p.priority, p.kind.value) is not None))
    for gp in config.grant_programs.values():
        changed = await conn.fetchval(UPSERT_PROGRAM, gp.code, gp.cadence.value, gp.unit) is not None
        results.append(("grant_program", gp.code, changed))
    for b in config.gate_bundles.values():
        results.append(("gate_bundle", b.code, await conn.fetchval(UPSERT_BUNDLE, b.code, list(b.gates)) is not None))
    return results


async def load_config(conn: Conn) -> CatalogConfig:
    return CatalogConfig(
        groups={r["code"]: rows.group(r) for r in await conn.fetch("SELECT * FROM subscription_groups")},
        plans={r["code"]: rows.plan(r) for r in await conn.fetch("SELECT * FROM plans")},
        grant_programs={r["code"]: rows.grant_program(r) for r in await conn.fetch("SELECT * FROM grant_programs")},
        gate_bundles={r["code"]: rows.gate_bundle(r) for r in await conn.fetch("SELECT * FROM gate_bundles")},
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
    return [rows.gate_bundle(r) for r in await conn.fetch("SELECT * FROM gate_bundles WHERE code = ANY($1)",
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


UPSERT_PRICE = """
INSERT INTO catalog_prices (price_id, product_id, lookup_key, active, deleted, unit_amount, currency, interval,
    interval_count, metadata, provider_updated_at, subscription_group, billing_plan_code, gate_bundle,
    grant_bindings, valid, invalid_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (price_id) DO UPDATE SET product_id = excluded.product_id, lookup_key = excluded.lookup_key,
    active = excluded.active, deleted = excluded.deleted, unit_amount = excluded.unit_amount,
    currency = excluded.currency, interval = excluded.interval, interval_count = excluded.interval_count,
    metadata = excluded.metadata, provider_updated_at = excluded.provider_updated_at,
    subscription_group = excluded.subscription_group, billing_plan_code = excluded.billing_plan_code,
    gate_bundle = excluded.gate_bundle, grant_bindings = excluded.grant_bindings, valid = excluded.valid,
    invalid_reason = excluded.invalid_reason, updated_at = now()
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


async def upsert_price(conn: Conn, r: ResolvedPrice) -> bool:
    p = r.price
    return await conn.fetchval(
        UPSERT_PRICE, p.price_id, p.product_id, p.lookup_key, p.active, p.deleted, p.unit_amount, p.currency,
        p.interval, p.interval_count, p.metadata, p.provider_updated_at, r.subscription_group, r.billing_plan_code,
        r.gate_bundle, rows.grants_json(r.grants), r.valid, r.invalid_reason,
    ) is not None


async def price_is_newer(conn: Conn, price_id: str, at: datetime) -> bool:
    stored = await conn.fetchval("SELECT provider_updated_at FROM catalog_prices WHERE price_id = $1", price_id)
    return stored is None or stored <= at


async def release_lookup_key(conn: Conn, lookup_key: str, keep_price_id: str) -> None:
    """A lookup key moves to the newest price that claims it, as at the provider."""
    await conn.execute("UPDATE catalog_prices SET lookup_key = NULL WHERE lookup_key = $1 AND price_id <> $2",
                       lookup_key, keep_price_id)


async def load_products(conn: Conn, product_ids: Iterable[str] | None = None) -> dict[str, Product]:
    if product_ids is None:
        found = await conn.fetch("SELECT * FROM catalog_products")
    else:
        found = await conn.fetch("SELECT * FROM catalog_products WHERE product_id = ANY($1)", list(product_ids))
    return {r["product_id"]: rows.product(r) for r in found}


async def load_raw_prices(conn: Conn, *, product_id: str) -> list[Price]:
    return [rows.price(r) for r in await conn.fetch("SELECT * FROM catalog_prices WHERE product_id = $1", product_id)]


PRICES_SELECT = """
SELECT pr.*, p.name AS product_name, (p.active AND NOT p.deleted) AS product_active
FROM catalog_prices pr LEFT JOIN catalog_products p ON p.product_id = pr.product_id"""


async def load_prices(conn: Conn, price_ids: Iterable[str] | None = None) -> dict[str, ResolvedPrice]:
    if price_ids is None:
        found = await conn.fetch(PRICES_SELECT + " ORDER BY pr.product_id, pr.unit_amount, pr.price_id")
    else:
        found = await conn.fetch(PRICES_SELECT + " WHERE pr.price_id = ANY($1)", list(set(price_ids)))
    return {r["price_id"]: rows.resolved_price(r) for r in found}


async def find_prices(conn: Conn, refs: Sequence[str]) -> dict[str, ResolvedPrice]:
    """By provider price id or lookup key; keyed by the reference as given."""
    where = " WHERE pr.price_id = ANY($1) OR (pr.lookup_key = ANY($1) AND NOT pr.deleted)"
    found = await conn.fetch(PRICES_SELECT + where, list(refs))
    by_ref: dict[str, ResolvedPrice] = {}
    for r in found:
        resolved = rows.resolved_price(r)
        for ref in (r["price_id"], r["lookup_key"]):
            if ref in refs:
                by_ref[ref] = resolved
    return by_ref


# --------------------------------------------------------------------------------------------
# Accounts


LOCK_ACCOUNTS = """
INSERT INTO accounts AS a (account_id) SELECT DISTINCT unnest($1::text[]) ORDER BY 1
ON CONFLICT (account_id) DO UPDATE SET account_id = excluded.account_id
RETURNING a.*, a.xmax = 0 AS created,  -- an inserted row has no xmax; one updated on conflict has ours
    (SELECT version FROM catalog_version) AS catalog_version"""

# Runs on rows this transaction holds locked, so `provider_customer_id IS NULL` is current. A
# customer another account holds is not linked; that account is returned as `holder`. (One that
# another transaction links meanwhile still meets the unique constraint.)
LINK_ACCOUNTS = """
WITH wanted AS (
    SELECT l.account_id, l.customer_id,
        (SELECT b.account_id FROM accounts b
         WHERE b.provider_customer_id = l.customer_id AND b.account_id <> l.account_id) AS holder
    FROM unnest($1::text[], $2::text[]) AS l(account_id, customer_id)
), linked AS (
    UPDATE accounts a SET provider_customer_id = w.customer_id, updated_at = now()
    FROM wanted w
    WHERE a.account_id = w.account_id AND a.provider_customer_id IS NULL AND w.holder IS NULL
    RETURNING a.account_id, a.provider_customer_id
), adopted AS (
    UPDATE provider_events e SET account_id = l.account_id, outcome = 'applied',
        reason = 'applied once its customer was linked to an account'
    FROM linked l
    WHERE e.provider_customer_id = l.provider_customer_id AND e.outcome = 'rejected'
      AND e.reason = 'unknown_account' AND (e.type LIKE 'customer.subscription.%' OR e.type = 'invoice.paid')
    RETURNING e.account_id
)
SELECT w.account_id, w.holder, (SELECT count(*) FROM adopted d WHERE d.account_id = w.account_id) AS adopted
FROM wanted w"""


@dataclass(frozen=True)
class Held:
    row: asyncpg.Record
    created: bool  # the account is new
    adopted: int  # events that waited for its customer and now belong to it
    catalog_version: int  # read with the lock, so a batch needs no statement of its own for it
    customer_holder: str | None = None  # the other account its customer is linked to (so not linked here)


async def hold_accounts(conn: Conn, wanted: Sequence[tuple[str, str | None]]) -> dict[str, Held]:
    """For each (account, provider customer or None): creates the account if new and holds its
    row lock to the end of the transaction (every change to one account's state is serialized
    here, which covers each of its subscriptions and each (account, group)), locking in account
    id order so that two transactions holding overlapping sets queue instead of deadlocking; then
    links each unlinked account to its customer and hands it the events that waited for that
    customer as `unknown_account`. A
    customer linked to another account is not linked (`Held.customer_holder` names that account);
    one linked by a concurrent transaction is refused by the unique constraint. (Created and
    linked in one statement, two transactions creating the same account with the same customer
    would collide on that constraint rather than queue.)"""
    locked = {r["account_id"]: r for r in await conn.fetch(LOCK_ACCOUNTS, [a for a, _ in wanted])}
    links = [(a, c) for a, c in wanted if c and locked[a]["provider_customer_id"] is None]
    found = {r["account_id"]: r for r in await conn.fetch(
        LINK_ACCOUNTS, [a for a, _ in links], [c for _, c in links])} if links else {}
    held = {}
    for account_id, row in locked.items():
        link = found.get(account_id)
        held[account_id] = Held(row, row["created"], link["adopted"] if link else 0, row["catalog_version"],
                                link["holder"] if link else None)
    return held


async def delete_accounts(conn: Conn, account_ids: Sequence[str]) -> None:
    """Removes accounts this transaction created and holds nothing for."""
    if account_ids:
        await conn.execute("DELETE FROM accounts WHERE account_id = ANY($1)", list(account_ids))


async def get_account(conn: Conn, account_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM accounts WHERE account_id = $1", account_id)


async def account_for_customer(conn: Conn, customer_id: str) -> str | None:
    return await conn.fetchval("SELECT account_id FROM accounts WHERE provider_customer_id = $1", customer_id)


async def accounts_for_customers(conn: Conn, customer_ids: Sequence[str]) -> dict[str, str]:
    found = await conn.fetch("SELECT provider_customer_id, account_id FROM accounts "
                             "WHERE provider_customer_id = ANY($1)", list(customer_ids))
    return {r["provider_customer_id"]: r["account_id"] for r in found}


async def notify_everything(conn: Conn) -> None:
    """After a catalog change every replica forgets what it cached (delivered on commit)."""
    await conn.execute("SELECT pg_notify($1, '0:*')", CHANGES_CHANNEL)


# --------------------------------------------------------------------------------------------
# Provider events

INSERT_EVENT = """
INSERT INTO provider_events (provider_event_id, type, created, received_at, api_version, object_id, subscription_id,
    checkout_session_id, account_id, provider_customer_id, outcome, reason, payload, snapshot)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (provider_event_id) DO NOTHING
RETURNING provider_event_id"""


async def insert_event(conn: Conn, values: Sequence[Any]) -> bool:
    """Records the event under its unique id; False when it was already recorded (a duplicate,
    even a concurrent one: the second insert waits for the first to commit)."""
    return await conn.fetchval(INSERT_EVENT, *values) is not None


INSERT_EVENTS = """
WITH recorded AS (
    INSERT INTO provider_events (provider_event_id, type, created, received_at, api_version, object_id,
        subscription_id, checkout_session_id, account_id, provider_customer_id, outcome, reason, payload, snapshot)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], $14::bytea[])
    ON CONFLICT (provider_event_id) DO NOTHING
    RETURNING provider_event_id, subscription_id
), held AS (  -- through the primary key, however few rows the statistics last saw
    SELECT * FROM subscriptions WHERE subscription_id = ANY($7::text[])
)
SELECT r.provider_event_id AS recorded, h.* FROM recorded r LEFT JOIN held h ON h.subscription_id = r.subscription_id"""


async def insert_events(conn: Conn, rows_: Sequence[Sequence[Any]]) -> dict[str, asyncpg.Record | None]:
    """`insert_event` for many in one statement. Returns the events recorded now (not duplicates),
    each with the row of the subscription it names as that statement found it (None when none is
    held, or the event names none)."""
    found = await conn.fetch(INSERT_EVENTS, *_columns(rows_, 14))
    return {r["recorded"]: r if r["subscription_id"] is not None else None for r in found}


async def count_delivery(conn: Conn, event_id: str) -> None:
    await count_deliveries(conn, [event_id])


async def count_deliveries(conn: Conn, event_ids: Sequence[str]) -> None:
    if event_ids:
        await conn.executemany("UPDATE provider_events SET deliveries = deliveries + 1 WHERE provider_event_id = $1",
                               [(event_id,) for event_id in event_ids])


SET_OUTCOME = """
UPDATE provider_events SET outcome = $2, reason = $3, account_id = coalesce($4, account_id)
WHERE provider_event_id = $1"""


async def set_event_outcome(conn: Conn, event_id: str, outcome: str, reason: str, account_id: str | None) -> None:
    await conn.execute(SET_OUTCOME, event_id, outcome, reason, account_id)


async def set_event_outcomes(conn: Conn, outcomes: Sequence[tuple[str, str, str, str | None]]) -> None:
    """Entries of (event id, outcome, reason, account id)."""
    if outcomes:
        await conn.executemany(SET_OUTCOME, outcomes)


# What an account's derivation reads, for many accounts at once.

async def account_histories(conn: Conn, account_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The stored snapshots every derivation of an account starts from: its subscriptions'
    events and its paid invoices, in provider order."""
    return await conn.fetch(
        "SELECT account_id, snapshot FROM provider_events WHERE account_id = ANY($1) "
        "AND outcome IN ('applied', 'stale') AND snapshot IS NOT NULL "
        "AND (type LIKE 'customer.subscription.%' OR type = 'invoice.paid' OR type = 'reconciliation.subscription') "
        "ORDER BY account_id, created, provider_event_id", list(account_ids))


async def subscriptions_of(conn: Conn, account_ids: Sequence[str], subscription_ids: Sequence[str]
                           ) -> list[asyncpg.Record]:
    """The accounts' subscriptions and the ones named; a subscription may appear twice."""
    # Two index scans: an OR of the two conditions would read the whole table.
    return await conn.fetch("SELECT * FROM subscriptions WHERE account_id = ANY($1) "
                            "UNION ALL SELECT * FROM subscriptions WHERE subscription_id = ANY($2)",
                            list(account_ids), list(subscription_ids))


async def items_of_subscriptions(conn: Conn, subscription_ids: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM subscription_items WHERE subscription_id = ANY($1)",
                            list(subscription_ids))


async def assignments_of(conn: Conn, account_ids: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM plan_assignments WHERE account_id = ANY($1) "
                            "ORDER BY account_id, lower(effective), id", list(account_ids))


async def bindings_of(conn: Conn, account_ids: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM grant_bindings WHERE account_id = ANY($1) "
                            "ORDER BY account_id, lower(effective), id", list(account_ids))


async def subscription_purchases_of(conn: Conn, account_ids: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM purchases WHERE account_id = ANY($1) AND mode = 'subscription' "
                            "ORDER BY created_at", list(account_ids))


async def issue_keys_of(conn: Conn, account_ids: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT account_id, issue_key FROM issued_grants WHERE account_id = ANY($1)",
                            list(account_ids))


async def open_mismatches_of(conn: Conn, account_ids: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT account_id, kind, fingerprint FROM mismatches "
                            "WHERE account_id = ANY($1) AND closed_at IS NULL", list(account_ids))


# --------------------------------------------------------------------------------------------
# Subscriptions and derived rows


async def subscription_heads(conn: Conn, account_id: str) -> dict[str, asyncpg.Record]:
    found = await conn.fetch("SELECT * FROM subscriptions WHERE account_id = $1", account_id)
    return {r["subscription_id"]: r for r in found}


async def subscription_head(conn: Conn, subscription_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM subscriptions WHERE subscription_id = $1", subscription_id)


# The rows a batch of derivations writes, after its removals, and a new revision for each changed
# account told to every replica (delivered on commit): one statement, so one round trip. Every
# sub-statement runs with an empty array when it has nothing to write; foreign keys are checked at
# the end of the statement, when the subscriptions written beside their children are there.
WRITE_ROWS = """
WITH subscriptions_written AS (
    INSERT INTO subscriptions (subscription_id, account_id, provider_customer_id, subscription_group, status,
        provider_updated_at, provider_event_id, started_at, trial_end, current_period_start, current_period_end,
        cancel_at, cancel_at_period_end, canceled_at, ended_at, purchase_id, metadata, group_mismatch,
        provider_refetched)
    SELECT s, a, c, g, st, u, e, sa, te, ps, pe, ca, cpe, cd, ea, p, m::jsonb, gm, r
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
        $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::timestamptz[],
        $13::bool[], $14::timestamptz[], $15::timestamptz[], $16::text[], $17::text[], $18::text[], $19::bool[])
        AS v(s, a, c, g, st, u, e, sa, te, ps, pe, ca, cpe, cd, ea, p, m, gm, r)
    ON CONFLICT (subscription_id) DO UPDATE SET provider_customer_id = excluded.provider_customer_id,
        subscription_group = excluded.subscription_group, status = excluded.status,
        provider_updated_at = excluded.provider_updated_at, provider_event_id = excluded.provider_event_id,
        provider_refetched = excluded.provider_refetched,
        started_at = excluded.started_at, trial_end = excluded.trial_end,
        current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end,
        cancel_at = excluded.cancel_at, cancel_at_period_end = excluded.cancel_at_period_end,
        canceled_at = excluded.canceled_at, ended_at = excluded.ended_at, purchase_id = excluded.purchase_id,
        metadata = excluded.metadata, group_mismatch = excluded.group_mismatch, updated_at = now()
    WHERE subscriptions.provider_event_id IS DISTINCT FROM excluded.provider_event_id
       OR subscriptions.subscription_group IS DISTINCT FROM excluded.subscription_group
       OR subscriptions.group_mismatch IS DISTINCT FROM excluded.group_mismatch
), items_written AS (
    INSERT INTO subscription_items (subscription_id, price_id, item_id, product_id, quantity, effective,
        current_period_start, current_period_end)
    SELECT s, p, i, pr, q, tstzrange(lo, hi, '[)'), ps, pe
    FROM unnest($20::text[], $21::text[], $22::text[], $23::text[], $24::bigint[], $25::timestamptz[],
        $26::timestamptz[], $27::timestamptz[], $28::timestamptz[]) AS v(s, p, i, pr, q, lo, hi, ps, pe)
    ON CONFLICT (subscription_id, price_id) DO UPDATE SET item_id = excluded.item_id,
        product_id = excluded.product_id, quantity = excluded.quantity, effective = excluded.effective,
        current_period_start = excluded.current_period_start,
        current_period_end = excluded.current_period_end, updated_at = now()
), assignments_written AS (
    INSERT INTO plan_assignments (account_id, subscription_group, stackable, subscription_id, price_id,
        billing_plan_code, priority, gate_bundle, started_at, effective, conflict, conflict_with_subscription_id)
    SELECT a, g, st, s, p, b, pr, gb, sa, tstzrange(lo, hi, '[)'), c, cw
    FROM unnest($29::text[], $30::text[], $31::bool[], $32::text[], $33::text[], $34::text[], $35::int[],
        $36::text[], $37::timestamptz[], $38::timestamptz[], $39::timestamptz[], $40::bool[], $41::text[])
        AS v(a, g, st, s, p, b, pr, gb, sa, lo, hi, c, cw)
), bindings_written AS (
    INSERT INTO grant_bindings (account_id, subscription_id, subscription_group, price_id, product_id,
        grant_program_code, amount, scale_by_quantity, quantity, source, effective, conflict_with_subscription_id)
    SELECT a, s, g, p, pr, gp, am, sq, q, so, tstzrange(lo, hi, '[)'), cw
    FROM unnest($42::text[], $43::text[], $44::text[], $45::text[], $46::text[], $47::text[], $48::bigint[],
        $49::bool[], $50::bigint[], $51::text[], $52::timestamptz[], $53::timestamptz[], $54::text[])
        AS v(a, s, g, p, pr, gp, am, sq, q, so, lo, hi, cw)
), audited AS (
    INSERT INTO audit_log (account_id, cause, cause_id, entity, entity_id, action, detail)
    SELECT a, c, ci, e, ei, ac, d::jsonb
    FROM unnest($55::text[], $56::text[], $57::text[], $58::text[], $59::text[], $60::text[], $61::text[])
        AS v(a, c, ci, e, ei, ac, d)
), bumped AS (
    UPDATE accounts SET revision = revision + 1, updated_at = now() WHERE account_id = ANY($62)
    RETURNING account_id, revision
)
SELECT pg_notify($63, revision || ':' || account_id) FROM bumped"""


async def write_rows(conn: Conn, subscriptions: Sequence[Sequence[Any]], items: Sequence[ItemRow],
                     assignments: Sequence[tuple[str, bool, PlacedAssignment]],
                     bindings: Sequence[tuple[str, PlacedBinding]],
                     audit: Sequence[tuple[str | None, str, str, str, str, str, dict[str, Any]]],
                     changed_accounts: Sequence[str]) -> None:
    """WRITE_ROWS for: subscription rows in its column order with metadata as a dict (the last of
    each subscription's wins); items (the last of each subscription and price wins); assignments
    as (account id, whether the group is stackable, assignment); bindings as (account id, binding);
    audit entries as (account_id, cause, cause_id, entity, entity_id, action, detail); and the
    accounts whose revision moves."""
    if not (subscriptions or items or assignments or bindings or audit or changed_accounts):
        return
    latest_subscriptions = {v[0]: (*v[:16], json.dumps(v[16]), *v[17:]) for v in subscriptions}
    latest_items = {(i.subscription_id, i.price_id): (
        i.subscription_id, i.price_id, i.item_id, i.product_id, i.quantity, i.window.start, i.window.end,
        i.current_period_start, i.current_period_end) for i in items}
    await conn.execute(
        WRITE_ROWS,
        *_columns(list(latest_subscriptions.values()), 19),
        *_columns(list(latest_items.values()), 9),
        *_columns([(account_id, p.row.subscription_group, stackable, p.row.subscription_id, p.row.price_id,
                    p.row.billing_plan_code, p.row.priority, p.row.gate_bundle, p.row.started_at, p.window.start,
                    p.window.end, p.conflict, p.conflict_with) for account_id, stackable, p in assignments], 13),
        *_columns([(account_id, p.row.subscription_id, p.row.subscription_group, p.row.price_id,
                    p.row.product_id, p.row.grant_program_code, p.row.amount, p.row.scale_by_quantity,
                    p.row.quantity, p.row.source.value, p.window.start, p.window.end, p.conflict_with)
                   for account_id, p in bindings], 13),
        *_columns([(*entry[:6], json.dumps(entry[6])) for entry in audit], 7),
        list(changed_accounts), CHANGES_CHANNEL)


async def stored_assignments(conn: Conn, account_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM plan_assignments WHERE account_id = $1 ORDER BY lower(effective), id",
                            account_id)


async def stored_bindings(conn: Conn, account_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM grant_bindings WHERE account_id = $1 ORDER BY lower(effective), id",
                            account_id)


async def delete_rows(conn: Conn, table: str, ids: list[int]) -> None:
    assert table in ("plan_assignments", "grant_bindings")
    if ids:
        await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1)", ids)


async def delete_items(conn: Conn, keys: Sequence[tuple[str, str]]) -> None:
    if keys:
        await conn.execute(
            "DELETE FROM subscription_items i USING unnest($1::text[], $2::text[]) AS k(s, p) "
            "WHERE i.subscription_id = k.s AND i.price_id = k.p", *_columns(keys, 2))


INSERT_ISSUE = """
INSERT INTO issued_grants (issue_key, account_id, grant_program_code, cadence, unit, amount, source, price_id,
    subscription_id, invoice_id, checkout_session_id, period, issued_at, provider_event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (issue_key) DO NOTHING
RETURNING issue_key"""


def _issue_values(account_id: str, issue: Issue, event_id: str) -> tuple[object, ...]:
    return (issue.issue_key, account_id, issue.grant_program_code, issue.cadence.value, issue.unit, issue.amount,
            issue.source.value, issue.price_id, issue.subscription_id, issue.invoice_id, issue.checkout_session_id,
            rows.to_range(issue.period) if issue.period else None, issue.issued_at, event_id)


async def insert_issue(conn: Conn, account_id: str, issue: Issue, event_id: str) -> bool:
    """True when issued now; False when that key was issued before (never twice)."""
    return await conn.fetchval(INSERT_ISSUE, *_issue_values(account_id, issue, event_id)) is not None


async def insert_issues(conn: Conn, issues: Sequence[tuple[str, Issue, str]]) -> None:
    """Entries of (account id, issue, event id); a key issued before is left as it is."""
    if issues:
        await conn.executemany(INSERT_ISSUE, [_issue_values(*entry) for entry in issues])


OPEN_MISMATCH = """
INSERT INTO mismatches (kind, account_id, subscription_id, fingerprint, diff)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (fingerprint) WHERE closed_at IS NULL
DO UPDATE SET last_seen_at = now(), diff = excluded.diff"""


async def open_mismatch(conn: Conn, kind: str, account_id: str, subscription_id: str | None, fingerprint: str,
                        diff: dict[str, Any]) -> None:
    await conn.execute(OPEN_MISMATCH, kind, account_id, subscription_id, fingerprint, diff)


async def open_mismatches(conn: Conn, entries: Sequence[tuple[str, str, str | None, str, dict[str, Any]]]) -> None:
    """Entries of (kind, account id, subscription id, fingerprint, diff)."""
    if entries:
        await conn.executemany(OPEN_MISMATCH, entries)


async def close_mismatches(conn: Conn, closing: Sequence[tuple[str, str]]) -> None:
    """Entries of (fingerprint, resolution)."""
    if closing:
        await conn.executemany(
            "UPDATE mismatches SET closed_at = now(), resolution = $2 WHERE fingerprint = $1 AND closed_at IS NULL",
            closing)


# --------------------------------------------------------------------------------------------
# Purchases

INSERT_PURCHASE = """
INSERT INTO purchases (purchase_id, account_id, state, mode, items, subscription_group, checkout_session_id,
    provider_customer_id, success_url, cancel_url, expires_at, timeout_at, created_at)
VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (purchase_id) DO NOTHING
RETURNING purchase_id"""


async def insert_purchase(conn: Conn, values: Sequence[Any]) -> bool:
    return await conn.fetchval(INSERT_PURCHASE, *values) is not None


async def get_purchase(conn: Conn, *, purchase_id: str | None = None, checkout_session_id: str | None = None,
                       lock: bool = False) -> asyncpg.Record | None:
    clause = "purchase_id = $1" if purchase_id else "checkout_session_id = $1"
    return await conn.fetchrow(f"SELECT * FROM purchases WHERE {clause}{' FOR UPDATE' if lock else ''}",
                               purchase_id or checkout_session_id)


async def transitions(conn: Conn, purchase_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM purchase_transitions WHERE purchase_id = $1 ORDER BY id", purchase_id)


TRANSITION_COLUMNS = {state: f"{state}_at" for state in ("returned", "finalized", "expired", "failed", "conflict")}


async def record_transition(conn: Conn, purchase_id: str, from_state: str | None, to_state: str, at: datetime,
                            event_id: str | None, reason: str) -> None:
    await record_transitions(conn, [(purchase_id, from_state, to_state, at, event_id, reason)])


async def record_transitions(conn: Conn, moves: Sequence[tuple[str, str | None, str, datetime, str | None, str]]
                             ) -> None:
    """Entries of (purchase id, from state, to state, at, event id, reason)."""
    for to_state, column in TRANSITION_COLUMNS.items():
        updates = [(pid, to, at, reason if to in ("failed", "conflict") else None)
                   for pid, _, to, at, _, reason in moves if to == to_state]
        if updates:
            await conn.executemany(f"UPDATE purchases SET state = $2, {column} = $3, reason = $4 "
                                   "WHERE purchase_id = $1", updates)
    if moves:
        await conn.executemany(
            "INSERT INTO purchase_transitions (purchase_id, from_state, to_state, at, provider_event_id, reason) "
            "VALUES ($1, $2, $3, $4, $5, $6)", moves)


async def set_purchase_timeout(conn: Conn, purchase_id: str, timeout_at: datetime) -> None:
    await conn.execute("UPDATE purchases SET timeout_at = $2 WHERE purchase_id = $1", purchase_id, timeout_at)


SET_PURCHASE_SUBSCRIPTION = """
UPDATE purchases SET subscription_id = $2 WHERE purchase_id = $1 AND subscription_id IS NULL"""


async def set_purchase_subscription(conn: Conn, purchase_id: str, subscription_id: str) -> None:
    await conn.execute(SET_PURCHASE_SUBSCRIPTION, purchase_id, subscription_id)


async def set_purchase_subscriptions(conn: Conn, pairs: Sequence[tuple[str, str]]) -> None:
    """Entries of (purchase id, subscription id)."""
    if pairs:
        await conn.executemany(SET_PURCHASE_SUBSCRIPTION, pairs)


# --------------------------------------------------------------------------------------------
# Reads


async def issued_grants(conn: Conn, account_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM issued_grants WHERE account_id = $1 ORDER BY issued_at, issue_key",
                            account_id)


async def subscription_items(conn: Conn, subscription_ids: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM subscription_items WHERE subscription_id = ANY($1) ORDER BY subscription_id, price_id",
        subscription_ids)


async def live_subscriptions(conn: Conn, account_id: str, at: datetime) -> list[asyncpg.Record]:
    """Subscriptions holding a plan or grant in some group at `at` (winners and losers alike)."""
    return await conn.fetch(
        """SELECT DISTINCT subscription_id, subscription_group FROM grant_bindings
           WHERE account_id = $1 AND effective @> $2::timestamptz
           UNION
           SELECT DISTINCT subscription_id, subscription_group FROM plan_assignments
           WHERE account_id = $1 AND effective @> $2::timestamptz""", account_id, at)


async def effective_gate_rows(conn: Conn, account_id: str, at: datetime) -> tuple[int, list[asyncpg.Record]]:
    """The revision and the assignments holding at `at`, read in one statement so the two agree."""
    found = await conn.fetch(
        """SELECT a.revision, p.* FROM accounts a
           LEFT JOIN plan_assignments p ON p.account_id = a.account_id AND p.effective @> $2::timestamptz
           WHERE a.account_id = $1""", account_id, at)
    if not found:
        return 0, []
    return found[0]["revision"], [r for r in found if r["id"] is not None]


async def boundary_after(conn: Conn, account_id: str, at: datetime) -> datetime | None:
    """The first instant after `at` where one of the account's windows opens or closes."""
    return await conn.fetchval(
        """SELECT min(t) FROM (
               SELECT lower(effective) AS t FROM plan_assignments WHERE account_id = $1
               UNION ALL SELECT upper(effective) FROM plan_assignments WHERE account_id = $1
               UNION ALL SELECT lower(effective) FROM grant_bindings WHERE account_id = $1
               UNION ALL SELECT upper(effective) FROM grant_bindings WHERE account_id = $1) b
           WHERE t > $2""", account_id, at)


# --------------------------------------------------------------------------------------------
# Support and reconciliation


async def events_for(conn: Conn, *, subscription_id: str | None, checkout_session_id: str | None,
                     purchase_id: str | None) -> list[asyncpg.Record]:
    """Every provider event about a checkout session, its purchase and its subscription (its
    invoices included), in provider order."""
    return await conn.fetch(
        """SELECT provider_event_id, type, created, received_at, outcome, reason, account_id, object_id, deliveries
           FROM provider_events
           WHERE (subscription_id = $1 AND $1 IS NOT NULL) OR (checkout_session_id = $2 AND $2 IS NOT NULL)
              OR (object_id = ANY(ARRAY[$1, $2, $3]::text[]))
           ORDER BY created, provider_event_id""", subscription_id, checkout_session_id, purchase_id)


async def subscription_ids_for_session(conn: Conn, checkout_session_id: str) -> list[str]:
    return [r["subscription_id"] for r in await conn.fetch(
        "SELECT DISTINCT subscription_id FROM provider_events WHERE checkout_session_id = $1 "
        "AND subscription_id IS NOT NULL AND subscription_id <> ''", checkout_session_id)]


async def purchase_for_subscription(conn: Conn, subscription_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM purchases WHERE subscription_id = $1 OR purchase_id = "
        "(SELECT purchase_id FROM subscriptions WHERE subscription_id = $1) ORDER BY created_at LIMIT 1",
        subscription_id)


async def audit_for(conn: Conn, cause_ids: list[str], entity_ids: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM audit_log WHERE cause_id = ANY($1) OR entity_id = ANY($2) ORDER BY id", cause_ids, entity_ids)


async def list_mismatches(conn: Conn, account_id: str | None, include_closed: bool, after_id: int,
                          limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT * FROM mismatches
           WHERE ($1::text IS NULL OR account_id = $1) AND ($2 OR closed_at IS NULL) AND mismatch_id > $3
           ORDER BY mismatch_id LIMIT $4""", account_id, include_closed, after_id, limit)


async def close_mismatch(conn: Conn, fingerprint: str, resolution: str) -> bool:
    status = await conn.execute(
        "UPDATE mismatches SET closed_at = now(), resolution = $2 WHERE fingerprint = $1 AND closed_at IS NULL",
        fingerprint, resolution)
    return status.endswith(" 1")


async def checkpoint(conn: Conn, name: str) -> datetime | None:
    return await conn.fetchval("SELECT last_event_created FROM reconciler_checkpoints WHERE name = $1", name)


async def save_checkpoint(conn: Conn, name: str, at: datetime) -> None:
    await conn.execute(
        """INSERT INTO reconciler_checkpoints (name, last_event_created) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET last_event_created = greatest(reconciler_checkpoints.last_event_created,
               excluded.last_event_created), updated_at = now()""", name, at)


async def accounts_with_customers(conn: Conn, account_id: str | None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT account_id, provider_customer_id FROM accounts WHERE provider_customer_id IS NOT NULL "
        "AND ($1::text IS NULL OR account_id = $1) ORDER BY account_id", account_id)


async def overdue_purchases(conn: Conn, account_id: str | None, now: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT purchase_id, checkout_session_id, account_id FROM purchases "
        "WHERE state IN ('pending', 'returned') AND timeout_at < $2 AND ($1::text IS NULL OR account_id = $1) "
        "ORDER BY timeout_at LIMIT 500", account_id, now)


async def operations_counts(conn: Conn, now: datetime) -> asyncpg.Record:
    return await conn.fetchrow(
        """SELECT (SELECT count(*) FROM mismatches WHERE closed_at IS NULL) AS open_mismatches,
                  (SELECT count(*) FROM purchases WHERE state IN ('pending', 'returned')) AS pending,
                  (SELECT count(*) FROM purchases WHERE state IN ('pending', 'returned') AND timeout_at < $1)
                      AS past_timeout""", now)
