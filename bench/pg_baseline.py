"""The database baseline for webhook ingest: one transaction equivalent to an applied subscription
event (dedupe insert, subscription upsert, two item upserts, audit insert) on the project's schema,
run by pgbench at the same concurrency."""

from __future__ import annotations

from pathlib import Path

from .db import execute
from .tools import PgbenchResult, pgbench

ACCOUNTS = 100_000

SCRIPT = """\\set aid random(1, {accounts})
\\set eid random(1, 1000000000000)
BEGIN;
INSERT INTO provider_events (provider_event_id, type, created, received_at, api_version, object_id, subscription_id,
    account_id, provider_customer_id, outcome, payload)
VALUES ('evt_pg_' || :eid, 'customer.subscription.created', now(), now(), '2026-10-28', 'sub_pg_' || :eid,
    'sub_pg_' || :eid, 'acct_pg_' || :aid, 'cus_pg_' || :aid, 'applied', convert_to('{payload}', 'UTF8'))
ON CONFLICT (provider_event_id, created) DO NOTHING;
INSERT INTO subscriptions (subscription_id, account_id, provider_customer_id, subscription_group, status,
    provider_updated_at, provider_event_id, started_at, current_period_start, current_period_end, metadata)
VALUES ('sub_pg_' || :eid, 'acct_pg_' || :aid, 'cus_pg_' || :aid, 'core', 'active', now(), 'evt_pg_' || :eid, now(),
    now(), now() + interval '30 days', jsonb_build_object('account_id', 'acct_pg_' || :aid))
ON CONFLICT (subscription_id) DO UPDATE SET status = excluded.status,
    provider_updated_at = excluded.provider_updated_at, provider_event_id = excluded.provider_event_id,
    updated_at = now()
WHERE subscriptions.provider_event_id IS DISTINCT FROM excluded.provider_event_id;
{items}
INSERT INTO audit_log (account_id, cause, cause_id, entity, entity_id, action, detail)
VALUES ('acct_pg_' || :aid, 'provider_event', 'evt_pg_' || :eid, 'subscription', 'sub_pg_' || :eid, 'upsert',
    jsonb_build_object('status', 'active', 'event', 'evt_pg_' || :eid));
COMMIT;
"""

ITEM = """INSERT INTO subscription_items (account_id, subscription_id, price_id, item_id, product_id, quantity,
    effective, current_period_start, current_period_end)
VALUES ('acct_pg_' || :aid, 'sub_pg_' || :eid, '{price}', 'si_pg_' || :eid || '_{n}', '{product}', 1,
    tstzrange(now(), NULL), now(), now() + interval '30 days')
ON CONFLICT (account_id, subscription_id, price_id) DO UPDATE SET quantity = excluded.quantity,
    effective = excluded.effective, updated_at = now();"""


def script(payload: bytes) -> str:
    """The transaction, storing `payload` (a real webhook body) as the event's raw payload."""
    items = "\n".join(ITEM.format(price=price, n=n, product=product)
                      for n, (price, product) in enumerate((("price_pro_monthly", "pro"),
                                                            ("price_team_seats_monthly", "team_seats"))))
    # pgbench substitutes `:name` only for names it defines (aid, eid); JSON's ": " is left alone.
    literal = payload.decode().replace("'", "''")
    return SCRIPT.format(accounts=ACCOUNTS, payload=literal, items=items)


async def run_baseline(database_url: str, payload: bytes, work: Path, *, clients: int,
                       duration_s: float) -> PgbenchResult:
    """On a migrated database: adds the accounts the transactions reference, then runs pgbench."""
    await execute(database_url, f"""INSERT INTO accounts (account_id, provider_customer_id)
        SELECT 'acct_pg_' || i, 'cus_pg_' || i FROM generate_series(1, {ACCOUNTS}) AS i""", "VACUUM ANALYZE accounts")
    path = work / "baseline.pgbench"
    path.write_text(script(payload))
    return await pgbench(database_url, path, clients=clients, jobs=2, duration_s=duration_s)
