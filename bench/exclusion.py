"""(a, detail) What the database's guard on non-stackable groups costs each plan assignment written:
the schema's exclusion constraint against the same constraint led by the text account id (its
first form) and against no constraint, as the table grows. Rows go in batches of 24 in one
transaction each, as the entitlement service writes a batch's assignments."""

from __future__ import annotations

import time

import asyncpg

from .context import Context
from .report import Row, ratio

NAME = "a. plan assignment insert, group exclusion"
TARGET = "none (reported beside webhook ingest)"
CONSTRAINT = "one_subscription_per_non_stackable_group"
TEXT_LED = ("EXCLUDE USING gist (account_id WITH =, subscription_group WITH =, subscription_id WITH <>, "
            "effective WITH &&) WHERE (NOT stackable AND NOT conflict)")
ROUNDS = 5
ROWS_PER_ROUND = 12_000
BATCH = 24

INSERT = """INSERT INTO {table} (account_id, subscription_group, stackable, subscription_id, price_id,
    billing_plan_code, priority, started_at, effective)
SELECT 'acct_bench_x_' || i, 'core', false, 'sub_bench_x_' || i, 'price_pro_monthly', 'pro', 20, now(),
    tstzrange(now(), NULL)
FROM generate_series($1::bigint, $2::bigint) AS i"""


async def _tables(conn: asyncpg.Connection) -> dict[str, str]:
    """A copy of plan_assignments per variant, its other indexes included (no foreign keys: the
    same for all), by variant."""
    schema = await conn.fetchval("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1", CONSTRAINT)
    variants = {"schema": schema, "text-led": TEXT_LED, "none": None}
    tables = {}
    for n, (variant, definition) in enumerate(variants.items()):
        table = f"assignments_{n}"
        await conn.execute(f"CREATE TABLE {table} (LIKE plan_assignments INCLUDING DEFAULTS INCLUDING INDEXES)")
        copied = await conn.fetchval(
            "SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'x'", table)
        await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {copied}")
        if definition is not None:
            await conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_exclusion {definition}")
        tables[variant] = table
    return tables


async def _round(conn: asyncpg.Connection, table: str, first: int) -> float:
    """Microseconds per row for ROWS_PER_ROUND rows numbered from `first`."""
    statement = INSERT.format(table=table)
    started = time.perf_counter()
    for low in range(first, first + ROWS_PER_ROUND, BATCH):
        async with conn.transaction():
            await conn.execute(statement, low, low + BATCH - 1)
    return (time.perf_counter() - started) * 1e6 / ROWS_PER_ROUND


async def run(ctx: Context) -> list[Row]:
    conn = await asyncpg.connect(await ctx.server.create("exclusion"))
    try:
        tables = await _tables(conn)
        rounds: dict[str, list[float]] = {variant: [] for variant in tables}
        for n in range(ROUNDS):  # the variants take turns, so the machine's drift falls on each alike
            for variant, table in tables.items():
                rounds[variant].append(await _round(conn, table, n * ROWS_PER_ROUND))
    finally:
        await conn.close()
    last = {variant: values[-1] for variant, values in rounds.items()}
    guard = {variant: last[variant] - last["none"] for variant in ("schema", "text-led")}
    shown = {variant: ", ".join(f"{v:.0f}" for v in values) for variant, values in rounds.items()}
    return [Row(
        NAME, f"{last['schema']:.0f} µs per row with the schema's exclusion ({guard['schema']:.0f} µs for the guard)",
        f"{last['text-led']:.0f} µs led by the text account id ({guard['text-led']:.0f} µs for the guard); "
        f"{last['none']:.0f} µs with none",
        ratio(last["schema"], last["text-led"]), TARGET, None,
        f"{ROUNDS} rounds of {ROWS_PER_ROUND:,} rows per variant, in turns, {BATCH} rows per transaction",
        f"µs per row at 0–{ROUNDS * ROWS_PER_ROUND:,} rows, round by round: schema {shown['schema']}; "
        f"text-led {shown['text-led']}; none {shown['none']}",
        {"rounds_us": rounds})]
