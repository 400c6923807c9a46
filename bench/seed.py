"""Accounts with realistic rows, written straight into the schema: one INSERT ... SELECT per table.

Account i holds a base subscription in `core` (Starter when i % 3 = 0, else Pro), with its item, plan
assignment, grant binding (Pro: ai_credits) and three issued monthly grants; every fifth account
also holds a team-seats add-on (3 seats). Four audit rows per subscription. Windows start between 0
and 364 days ago and stay open. Provider events (raw payloads) are not seeded: reads never touch them."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.support.provider import price_id

PRO, STARTER, SEATS = price_id("pro_monthly"), price_id("starter_monthly"), price_id("team_seats_monthly")

# Every statement reads $1..$2 as the range of account numbers. `s` is the subscription's start.
BASE = f"""
SELECT i, 'acct_seed_' || i AS account_id, 'sub_seed_' || i AS sub,
       date_trunc('second', now()) - (i % 365) * interval '1 day' - interval '1 hour' AS s,
       CASE WHEN i % 3 = 0 THEN '{STARTER}' ELSE '{PRO}' END AS price,
       CASE WHEN i % 3 = 0 THEN 'starter' ELSE 'pro' END AS plan,
       CASE WHEN i % 3 = 0 THEN 10 ELSE 20 END AS priority
FROM generate_series($1::bigint, $2::bigint) AS i"""

STATEMENTS = (
    f"""INSERT INTO accounts (account_id, provider_customer_id, revision, created_at)
        SELECT account_id, 'cus_seed_' || i, 4, s FROM ({BASE}) b""",
    f"""INSERT INTO subscriptions (subscription_id, account_id, provider_customer_id, subscription_group, status,
            provider_updated_at, provider_event_id, started_at, current_period_start, current_period_end, metadata)
        SELECT sub, account_id, 'cus_seed_' || i, 'core', 'active', s, 'evt_seed_' || i, s, s, s + interval '30 days',
               jsonb_build_object('account_id', account_id) FROM ({BASE}) b
        UNION ALL
        SELECT sub || '_seats', account_id, 'cus_seed_' || i, 'addons', 'active', s, 'evt_seed_' || i || '_seats',
               s, s, s + interval '30 days', jsonb_build_object('account_id', account_id)
        FROM ({BASE}) b WHERE i % 5 = 0""",
    f"""INSERT INTO subscription_items (account_id, subscription_id, price_id, item_id, product_id, quantity,
            effective, current_period_start, current_period_end)
        SELECT account_id, sub, price, 'si_seed_' || i, plan, 1, tstzrange(s, NULL), s, s + interval '30 days'
        FROM ({BASE}) b
        UNION ALL
        SELECT account_id, sub || '_seats', '{SEATS}', 'si_seed_' || i || '_seats', 'team_seats', 3,
               tstzrange(s, NULL), s, s + interval '30 days' FROM ({BASE}) b WHERE i % 5 = 0""",
    f"""INSERT INTO plan_assignments (account_id, subscription_group, stackable, subscription_id, price_id,
            billing_plan_code, priority, gate_bundle, started_at, effective)
        SELECT account_id, 'core', false, sub, price, plan, priority, plan, s, tstzrange(s, NULL) FROM ({BASE}) b
        UNION ALL
        SELECT account_id, 'addons', true, sub || '_seats', '{SEATS}', 'team_seats', 5, NULL, s, tstzrange(s, NULL)
        FROM ({BASE}) b WHERE i % 5 = 0""",
    f"""INSERT INTO grant_bindings (account_id, subscription_id, subscription_group, price_id, product_id,
            grant_program_code, amount, scale_by_quantity, quantity, source, effective)
        SELECT account_id, sub, 'core', price, plan, 'ai_credits', 1200, false, 1, 'price', tstzrange(s, NULL)
        FROM ({BASE}) b WHERE plan = 'pro'
        UNION ALL
        SELECT account_id, sub || '_seats', 'addons', '{SEATS}', 'team_seats', 'seats', 1, true, 3, 'product',
               tstzrange(s, NULL) FROM ({BASE}) b WHERE i % 5 = 0""",
    f"""INSERT INTO issued_grants (issue_key, account_id, grant_program_code, cadence, unit, amount, source, price_id,
            subscription_id, invoice_id, period, issued_at, provider_event_id)
        SELECT 'in_seed_' || i || '_' || k || ':' || price || ':ai_credits', account_id, 'ai_credits', 'per_period',
               'credit', 1200, 'price', price, sub, 'in_seed_' || i || '_' || k,
               tstzrange(s + (k - 1) * interval '30 days', s + k * interval '30 days'),
               s + (k - 1) * interval '30 days', 'evt_seed_' || i || '_paid_' || k
        FROM ({BASE}) b, generate_series(1, 3) AS k WHERE plan = 'pro'""",
    f"""INSERT INTO audit_log (at, account_id, cause, cause_id, entity, entity_id, action, detail)
        SELECT s, account_id, 'provider_event', 'evt_seed_' || i, e.entity, sub, e.action,
               jsonb_build_object('status', 'active', 'effective_from', s)
        FROM ({BASE}) b, (VALUES ('subscription', 'upsert'), ('subscription_item', 'upsert'),
                                 ('plan_assignment', 'insert'), ('grant_binding', 'insert')) AS e (entity, action)""",
)
TABLES = ("accounts", "subscriptions", "subscription_items", "plan_assignments", "grant_bindings", "issued_grants",
          "audit_log")


CHUNK = 50_000


async def _insert_chunks(database_url: str, chunks: asyncio.Queue[tuple[int, int]]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        while not chunks.empty():
            first, last = chunks.get_nowait()
            async with conn.transaction():
                for statement in STATEMENTS:
                    await conn.execute(statement, first, last)
    finally:
        await conn.close()


async def seed(database_url: str, first: int, last: int, workers: int = 2) -> None:
    """Adds accounts `first`..`last` (inclusive) in chunks over `workers` connections (the GiST
    indexes make each insert CPU-bound), then refreshes the planner's statistics."""
    chunks: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for start in range(first, last + 1, CHUNK):
        chunks.put_nowait((start, min(start + CHUNK - 1, last)))
    await asyncio.gather(*(_insert_chunks(database_url, chunks) for _ in range(workers)))
    conn = await asyncpg.connect(database_url)
    try:
        for table in TABLES:
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()


def account_id(n: int) -> str:
    return f"acct_seed_{n}"
