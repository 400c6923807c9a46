"""Every table of the migrated schema is classified, so the schema can be distributed by account
(docs/scaling.md): an account-owned table leads its primary key with a NOT NULL `account_id` and
keeps no uniqueness across accounts but the few listed with their reason; a reference table (the
catalog, replicated to every node) holds no account's rows; any other table says why it is keyed
otherwise. A table added without a class, or an account-owned table keyed otherwise, fails here."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import pytest

ACCOUNT_OWNED = frozenset({
    "accounts", "account_history", "audit_log", "catalog_rederive", "conflict_actions", "grant_bindings",
    "issued_grants", "mismatches", "plan_assignments", "purchase_transitions", "purchases", "subscription_items",
    "subscriptions",
})

REFERENCE = {
    "subscription_groups": "the catalog's groups",
    "plans": "the catalog's plans",
    "grant_programs": "the catalog's grant programs",
    "gate_bundles": "the catalog's gate bundles",
    "catalog_products": "the provider's products",
    "catalog_prices": "the provider's prices, resolved",
    "catalog_price_versions": "every resolution a price has had, and from when",
    "catalog_version": "one row: the catalog's version, bumped by every catalog write",
}

KEYED_OTHERWISE = {
    "provider_events": "the ingest ledger, keyed by the provider's event id: an event is recorded, and deduplicated, "
                       "before its account is known, and may never have one (unknown_account, catalog objects)",
    "schema_migrations": "the migrations applied, one row per version",
    "reconciler_checkpoints": "the reconciler's positions, one row per name; no account",
    "reconciler_leases": "the reconciler's lease, one row per name; no account",
}

# Unique indexes on account-owned tables that do not include account_id: identities the provider
# or a caller assigns, each held by one account whichever it is. On a distributed database each
# becomes what docs/scaling.md says.
UNIQUE_ACROSS_ACCOUNTS = {
    "accounts_provider_customer_id_key": "a provider customer is linked to one account",
    "subscriptions_held_once": "a provider subscription is held by one account: ON CONFLICT (subscription_id)",
    "purchases_registered_once": "a purchase id is registered once: ON CONFLICT (purchase_id)",
    "purchases_checkout_session_id_key": "a checkout session belongs to one purchase",
    "issued_grants_issued_once": "an issue of funding is issued once: ON CONFLICT (issue_key)",
    "issued_grants_once_per_period": "a subscription's period is funded once",
    "issued_grants_once_per_level": "a subscription's period is topped up to a level once",
    "mismatches_open_fingerprint": "an open difference is recorded once: ON CONFLICT (fingerprint)",
    "conflict_actions_once_per_subscription": "a losing subscription's conflict action is decided once: "
                                              "ON CONFLICT (subscription_id)",
}


@dataclass(frozen=True)
class Classes:
    account_owned: frozenset[str]
    reference: dict[str, str]
    keyed_otherwise: dict[str, str]
    unique_across_accounts: dict[str, str]

    def of(self, table: str) -> list[str]:
        return [name for name, tables in (("account-owned", self.account_owned), ("reference", self.reference),
                                          ("keyed otherwise", self.keyed_otherwise)) if table in tables]


CLASSES = Classes(ACCOUNT_OWNED, REFERENCE, KEYED_OTHERWISE, UNIQUE_ACROSS_ACCOUNTS)
CLASSIFIED = sorted(ACCOUNT_OWNED | REFERENCE.keys() | KEYED_OTHERWISE.keys())

# Tables and partitioned tables of the schema; a partition is classified with its parent.
TABLES = """
SELECT relname FROM pg_class
WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p') AND NOT relispartition"""

# Each index's key columns in order (NULL for an expression), primary key first.
INDEXES = """
SELECT t.relname AS table_name, i.relname AS index_name, x.indisprimary AS is_primary,
    x.indisunique OR x.indisexclusion AS is_unique,
    ARRAY(SELECT a.attname FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
          LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
          WHERE k.n <= x.indnkeyatts ORDER BY k.n) AS key_columns
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relnamespace = current_schema()::regnamespace AND t.relname = $1
ORDER BY x.indisprimary DESC, i.relname"""

ACCOUNT_COLUMN = """
SELECT a.attnotnull FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid
WHERE t.relnamespace = current_schema()::regnamespace AND t.relname = $1 AND a.attname = 'account_id'
  AND NOT a.attisdropped"""


async def unclassified(conn: asyncpg.Connection, classes: Classes) -> list[str]:
    """The schema's tables with no class, or with more than one."""
    return sorted(r["relname"] for r in await conn.fetch(TABLES) if len(classes.of(r["relname"])) != 1)


async def key_problems(conn: asyncpg.Connection, classes: Classes, table: str) -> list[str]:
    """What keeps `table` from being keyed as its class says (it must be in the schema)."""
    indexes = await conn.fetch(INDEXES, table)
    account_column_not_null = await conn.fetchval(ACCOUNT_COLUMN, table)
    problems = []
    if table in classes.account_owned:
        primary = [r["key_columns"] for r in indexes if r["is_primary"]]
        if not primary or primary[0][0] != "account_id":
            problems.append(f"{table}: primary key {primary[0] if primary else None} does not lead with account_id")
        if account_column_not_null is not True:
            problems.append(f"{table}: account_id is {'nullable' if account_column_not_null is False else 'missing'}")
        problems += [f"{table}: unique index {r['index_name']} {r['key_columns']} does not include account_id"
                     for r in indexes if r["is_unique"] and not r["is_primary"] and "account_id" not in r["key_columns"]
                     and r["index_name"] not in classes.unique_across_accounts]
    elif table in classes.reference and account_column_not_null is not None:
        problems.append(f"{table}: a reference table holds an account_id column")
    return problems


async def tables(conn: asyncpg.Connection) -> set[str]:
    return {r["relname"] for r in await conn.fetch(TABLES)}


async def test_every_table_in_the_schema_has_one_class(conn: asyncpg.Connection) -> None:
    assert await unclassified(conn, CLASSES) == []


@pytest.mark.parametrize("table", CLASSIFIED)
async def test_each_table_is_keyed_as_its_class_says(conn: asyncpg.Connection, table: str) -> None:
    if table not in await tables(conn):
        pytest.skip(f"{table} is not in this schema")
    assert await key_problems(conn, CLASSES, table) == []


async def test_the_uniqueness_kept_across_accounts_is_in_the_schema(conn: asyncpg.Connection) -> None:
    """Each exception names an index of an account-owned table, so none outlives its index."""
    found = {r["indexname"]: r["tablename"] for r in await conn.fetch(
        "SELECT indexname, tablename FROM pg_indexes WHERE schemaname = current_schema()")}
    assert {name: found.get(name) in ACCOUNT_OWNED for name in UNIQUE_ACROSS_ACCOUNTS} == {
        name: True for name in UNIQUE_ACROSS_ACCOUNTS}


async def test_a_table_added_without_a_class_is_found(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE seat_notes (account_id text NOT NULL, id bigint, PRIMARY KEY (account_id, id))")
    assert await unclassified(conn, CLASSES) == ["seat_notes"]


async def test_an_account_owned_table_keyed_otherwise_is_found(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE TABLE seat_notes (id bigserial PRIMARY KEY, account_id text, note text UNIQUE)")
    classes = Classes(ACCOUNT_OWNED | {"seat_notes"}, REFERENCE, KEYED_OTHERWISE, UNIQUE_ACROSS_ACCOUNTS)
    assert await key_problems(conn, classes, "seat_notes") == [
        "seat_notes: primary key ['id'] does not lead with account_id",
        "seat_notes: account_id is nullable",
        "seat_notes: unique index seat_notes_note_key ['note'] does not include account_id",
    ]


async def test_a_reference_table_holding_accounts_is_found(conn: asyncpg.Connection) -> None:
    classes = Classes(ACCOUNT_OWNED - {"purchases"}, {**REFERENCE, "purchases": "misfiled"}, KEYED_OTHERWISE,
                      UNIQUE_ACROSS_ACCOUNTS)
    assert await key_problems(conn, classes, "purchases") == ["purchases: a reference table holds an account_id column"]
