"""Accounts with realistic rows, written straight into the schema: one INSERT ... SELECT per table.

Account i holds a base subscription in `core` (Starter when i % 3 = 0, else Pro), with its item, plan
assignment, grant binding (Pro: ai_credits) and three issued monthly grants; every fifth account
also holds a team-seats add-on (3 seats). Four audit rows per subscription. Windows start between 0
and 364 days ago and stay open. Provider events (raw payloads) are not seeded: reads never touch them."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from catalog_rules.model import Cadence, CatalogConfig, ResolvedPrice
from checkout_service.stripe import normalize
from entitlement_service.db import catalog
from entitlement_service.db.pool import init_connection
from entitlement_service.domain.funding import scaled
from entitlement_service.domain.provider import InvoiceSnapshot, ProviderEvent, SubscriptionSnapshot
from entitlement_service.domain.records import RecordedEvent
from entitlement_service.grpc.convert_in import provider_event
from provider_sim.billing import add_interval
from tests.support.provider import price_id

from .provider_history import Captured, PlanHistory

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
    f"""INSERT INTO subscription_items (subscription_id, price_id, item_id, product_id, quantity, effective,
            current_period_start, current_period_end)
        SELECT sub, price, 'si_seed_' || i, plan, 1, tstzrange(s, NULL), s, s + interval '30 days' FROM ({BASE}) b
        UNION ALL
        SELECT sub || '_seats', '{SEATS}', 'si_seed_' || i || '_seats', 'team_seats', 3, tstzrange(s, NULL), s,
               s + interval '30 days' FROM ({BASE}) b WHERE i % 5 = 0""",
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


# Stored billing histories -----------------------------------------------------------------------
# Account i of a history seed holds one subscription (Starter when i % 3 = 0, else Pro) renewed
# monthly for PERIODS(i) = 1 + i % 10 periods, the last one running now: its purchase
# (`customer.subscription.created`, `invoice.paid`) and each renewal (`customer.subscription.updated`,
# `invoice.paid`), 11 events an account on average, stored as the service stores what the checkout
# service sends: the webhook body as the raw payload, the normalized event as the snapshot. The
# webhooks are the simulator's (bench/provider_history.py) with their ids and times moved to the
# account's; each is normalized by the checkout service's normalizer and encoded by the entitlement
# service's, one by one. Beside them, the rows the service derives from them.

EVENT_COLUMNS = ("provider_event_id", "type", "created", "received_at", "api_version", "object_id", "subscription_id",
                 "checkout_session_id", "account_id", "provider_customer_id", "outcome", "reason", "payload",
                 "snapshot", "recorded_at")
# The history derivation reads, where the schema has it (one row per applied snapshot).
HISTORY_COLUMNS = ("account_id", "provider_event_id", "subscription_id", "provider_at", "ended_at", "reaches",
                   "snapshot")

SLOT = re.compile(r"@@(\w+)@@")
DAY = 86_400
RECEIVED_AFTER_S = 1  # a webhook's receipt, after its provider time


def periods(i: int) -> int:
    return 1 + i % 10


def plan_of(i: int) -> str:
    return "starter_monthly" if i % 3 == 0 else "pro_monthly"


def boundaries(i: int, now: int) -> list[int]:
    """Account i's period boundaries (the first is its start): monthly from a start chosen so its
    last period runs at `now`, started 0 to 26 days and up to an hour apart."""
    count = periods(i)
    start = add_interval(now, "month", 1 - count) - (i % 27) * DAY - i % 3600
    return [add_interval(start, "month", m) for m in range(count + 1)]


@dataclass(frozen=True)
class _Webhook:
    """A captured webhook whose ids and times are slots: `parts` alternates text and slot names.
    Slots: acct, cus, sub, si, price, evt, start (when the subscription started); in<n>, il<n>
    (the invoice, and its line, of the webhook's period moved by n - `period`); t<n> (the boundary
    n periods on from the start, moved likewise)."""

    parts: tuple[str, ...]
    period: int  # 1: sent for the purchase, 2: for the first renewal

    def render(self, values: Mapping[str, str]) -> bytes:
        parts = self.parts
        return "".join(parts[n] if n % 2 == 0 else values[parts[n]] for n in range(len(parts))).encode()


# The times that say when a subscription (or its item) started, not which period a webhook is about.
STARTED = ("created", "start_date", "billing_cycle_anchor")


def _slotted(event: dict[str, Any], times: dict[int, str], ids: dict[str, str], period: int) -> _Webhook:
    start = min(times)

    def walk(value: Any, started: bool = False) -> Any:
        if isinstance(value, dict):
            subscription = value.get("object") in ("subscription", "subscription_item")
            return {k: walk(v, subscription and k in STARTED) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool) and value in times:
            return "@@start@@" if started and value == start else f"@@{times[value]}@@"
        return value

    text = re.sub(r'"(@@\w+@@)"', r"\1", json.dumps(walk(event)))
    for found, slot in ids.items():
        text = text.replace(found, f"@@{slot}@@")
    return _Webhook(tuple(SLOT.split(text)), period)


@dataclass(frozen=True)
class HistoryPlan:
    """One plan's four webhooks, slotted, and the database's id for its price."""

    price_id: str
    webhooks: tuple[_Webhook, _Webhook, _Webhook, _Webhook]  # purchase, its payment, renewal, its payment


def history_plan(captured: PlanHistory, price_id: str) -> HistoryPlan:
    created, paid, renewed, renewal_paid = (captured.created, captured.first_paid, captured.renewed,
                                            captured.renewal_paid)
    sub = created["data"]["object"]
    item = sub["items"]["data"][0]
    renewed_item = renewed["data"]["object"]["items"]["data"][0]
    times = {sub["start_date"]: "t0", item["current_period_end"]: "t1", renewed_item["current_period_end"]: "t2"}
    ids = {sub["id"]: "sub", sub["customer"]: "cus", sub["metadata"]["account_id"]: "acct", item["id"]: "si",
           captured.price_id: "price"}
    for n, invoice in ((1, paid), (2, renewal_paid)):
        ids[invoice["data"]["object"]["id"]] = f"in{n}"
        ids[invoice["data"]["object"]["lines"]["data"][0]["id"]] = f"il{n}"
    webhooks = tuple(_slotted(event, times, {event["id"]: "evt", **ids}, period)
                     for event, period in ((created, 1), (paid, 1), (renewed, 2), (renewal_paid, 2)))
    return HistoryPlan(price_id, webhooks)  # type: ignore[arg-type]


@dataclass(frozen=True)
class HistorySeed:
    plans: dict[str, HistoryPlan]  # by lookup key
    products: dict[str, Any]  # what the checkout service passes the normalizer
    now: int  # the provider time every account's last period runs at


def history_seed(captured: Captured, price_ids: Mapping[str, str], now: int) -> HistorySeed:
    """The captured webhooks for a database whose prices have `price_ids` (by lookup key)."""
    return HistorySeed({key: history_plan(plan, price_ids[key]) for key, plan in captured.plans.items()},
                       captured.products, now)


def account_events(seed: HistorySeed, i: int) -> list[ProviderEvent]:
    """Account i's webhooks as the entitlement service records them, in the order sent."""
    plan = seed.plans[plan_of(i)]
    bounds = boundaries(i, seed.now)
    values = {"acct": f"acct_seed_{i}", "cus": f"cus_seed_{i}", "sub": f"sub_seed_{i}", "si": f"si_seed_{i}",
              "price": plan.price_id, "start": str(bounds[0])}
    sent = [(plan.webhooks[0], 1), (plan.webhooks[1], 1)]
    sent += [(plan.webhooks[n], k) for k in range(2, periods(i) + 1) for n in (2, 3)]
    out = []
    for j, (webhook, k) in enumerate(sent):
        shift = k - webhook.period
        values.update({f"t{n}": str(bounds[n + shift]) for n in range(3) if 0 <= n + shift < len(bounds)})
        values.update({f"in{n}": f"in_seed_{i}_{n + shift}" for n in (1, 2)})
        values.update({f"il{n}": f"il_seed_{i}_{n + shift}" for n in (1, 2)})
        values["evt"] = f"evt_seed_{i}_{j}"
        raw = webhook.render(values)
        body = json.loads(raw)
        received = datetime.fromtimestamp(body["created"] + RECEIVED_AFTER_S, UTC)
        products = {p: seed.products[p] for p in normalize.product_ids(body["type"], body["data"]["object"])}
        out.append(provider_event(normalize.normalize(body, raw, received, products)))
    return out


# The columns each table is written with, in the order `account_rows` gives its values; tables in
# an order their foreign keys accept. A schema change is an edit here and in `account_rows`.
HISTORY_TABLES: dict[str, tuple[str, ...]] = {
    "accounts": ("account_id", "provider_customer_id", "revision", "created_at", "updated_at"),
    "subscriptions": ("subscription_id", "account_id", "provider_customer_id", "subscription_group", "status",
                      "provider_updated_at", "provider_event_id", "started_at", "current_period_start",
                      "current_period_end", "metadata", "updated_at"),
    "subscription_items": ("subscription_id", "price_id", "item_id", "product_id", "quantity", "effective",
                           "current_period_start", "current_period_end", "updated_at"),
    "plan_assignments": ("account_id", "subscription_group", "stackable", "subscription_id", "price_id",
                         "billing_plan_code", "priority", "gate_bundle", "started_at", "effective", "created_at"),
    "grant_bindings": ("account_id", "subscription_id", "subscription_group", "price_id", "product_id",
                       "grant_program_code", "amount", "scale_by_quantity", "quantity", "source", "effective",
                       "created_at"),
    "issued_grants": ("issue_key", "account_id", "grant_program_code", "cadence", "unit", "amount", "source",
                      "price_id", "subscription_id", "invoice_id", "period", "issued_at", "provider_event_id",
                      "recorded_at", "basis"),
    "audit_log": ("at", "account_id", "cause", "cause_id", "entity", "entity_id", "action", "detail"),
    "provider_events": EVENT_COLUMNS,
    "account_history": HISTORY_COLUMNS,
}


@dataclass(frozen=True)
class Catalog:
    """What the database's catalog resolves the seeded prices to."""

    prices: dict[str, ResolvedPrice]
    config: CatalogConfig

    @classmethod
    async def read(cls, database_url: str, price_ids: list[str]) -> Catalog:
        conn = await asyncpg.connect(database_url)
        try:
            await init_connection(conn)  # as the service reads it
            return cls(await catalog.load_prices(conn, price_ids), await catalog.load_config(conn))
        finally:
            await conn.close()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _open(start: datetime, end: datetime | None = None) -> asyncpg.Range:
    return asyncpg.Range(start, end, lower_inc=True, upper_inc=False)


def account_rows(seed: HistorySeed, known: Catalog, i: int) -> dict[str, list[tuple[Any, ...]]]:
    """Account i's rows in every table, as applying its events one by one leaves them: each event
    audited as the service audits it, at its receipt."""
    events = account_events(seed, i)
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in HISTORY_TABLES}
    account, customer = f"acct_seed_{i}", f"cus_seed_{i}"
    resolved = seed.plans[plan_of(i)].price_id
    price = known.prices[resolved]
    group = price.subscription_group or ""
    plan = known.config.plans[price.billing_plan_code or ""]
    programs = [(g, known.config.grant_programs[g.grant_program_code]) for g in price.grants]
    first = events[0].received_at
    changes = 0
    latest: tuple[ProviderEvent, SubscriptionSnapshot] | None = None

    def audit(event: ProviderEvent, entity: str, entity_id: str, action: str, detail: dict[str, Any]) -> None:
        rows["audit_log"].append((event.received_at, account, "provider_event", event.provider_event_id, entity,
                                  entity_id, action, json.dumps(detail)))

    for event in events:
        obj = event.object
        audited = len(rows["audit_log"])
        if isinstance(obj, SubscriptionSnapshot):
            item = obj.items[0]
            window = {"effective_from": _iso(obj.start_date), "effective_until": None}
            audit(event, "subscription", obj.subscription_id, "upsert",
                  {"status": obj.status.value, "provider_updated_at": _iso(obj.at), "event": event.provider_event_id,
                   "subscription_group": group})
            audit(event, "subscription_item", f"{obj.subscription_id}/{resolved}", "upsert",
                  {"quantity": item.quantity, **window})
            if latest is None:  # the purchase: the plan and the grants, open from the start
                audit(event, "plan_assignment", f"{obj.subscription_id}/{resolved}", "insert",
                      {"billing_plan_code": plan.code, **window})
                for grant, _ in programs:
                    audit(event, "grant_binding", f"{obj.subscription_id}/{resolved}/{grant.grant_program_code}",
                          "insert", {"amount": grant.amount, "quantity": item.quantity, "source": grant.source.value,
                                     **window})
            latest = (event, obj)
        elif isinstance(obj, InvoiceSnapshot):
            for line in obj.lines:
                for grant, program in programs:
                    if program.cadence is not Cadence.PER_PERIOD:
                        continue
                    key = f"{obj.subscription_id}:{program.code}:{line.period_end.isoformat()}"
                    amount = scaled(grant.amount, grant.scale_by_quantity, line.quantity)
                    rows["issued_grants"].append((
                        key, account, program.code, program.cadence.value, program.unit, amount, grant.source.value,
                        line.price_id, obj.subscription_id, obj.invoice_id, _open(line.period_start, line.period_end),
                        obj.paid_at or obj.at, event.provider_event_id, event.received_at, "period"))
                    audit(event, "issued_grant", key, "insert",
                          {"grant_program_code": program.code, "amount": amount, "basis": "period"})
        if len(rows["audit_log"]) > audited:
            changes += 1
            changed_at = event.received_at
        record = RecordedEvent.of(event, account)
        rows["provider_events"].append((*(getattr(record, column) for column in EVENT_COLUMNS[:-1]),
                                        event.received_at))
        rows["account_history"].append(_history_row(account, event))
    assert latest is not None
    event, sub = latest
    item = sub.items[0]
    start = sub.start_date or sub.at
    rows["accounts"].append((account, customer, changes, first, changed_at))
    rows["subscriptions"].append((
        sub.subscription_id, account, customer, group, sub.status.value, sub.at, event.provider_event_id, start,
        item.current_period_start, item.current_period_end, json.dumps(sub.metadata), event.received_at))
    rows["subscription_items"].append((
        sub.subscription_id, resolved, item.item_id, price.price.product_id, item.quantity, _open(start),
        item.current_period_start, item.current_period_end, event.received_at))
    rows["plan_assignments"].append((account, group, known.config.groups[group].stackable, sub.subscription_id,
                                     resolved, plan.code, plan.priority, price.gate_bundle, start, _open(start), first))
    rows["grant_bindings"].extend(
        (account, sub.subscription_id, group, resolved, price.price.product_id, grant.grant_program_code, grant.amount,
         grant.scale_by_quantity, item.quantity, grant.source.value, _open(start), first) for grant, _ in programs)
    return rows


def _history_row(account: str, event: ProviderEvent) -> tuple[Any, ...]:
    obj = event.object
    if isinstance(obj, InvoiceSnapshot):
        return (account, event.provider_event_id, obj.subscription_id or "", obj.at, None,
                max(line.period_end for line in obj.lines), event.snapshot)
    assert isinstance(obj, SubscriptionSnapshot)
    return (account, event.provider_event_id, obj.subscription_id, obj.at, obj.ended_at, None, event.snapshot)


async def has_table(conn: asyncpg.Connection, table: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT FROM information_schema.tables WHERE table_schema = current_schema() "
        "AND table_name = $1)", table))


HISTORY_CHUNK = 2_000


async def _copy_chunks(database_url: str, seed: HistorySeed, known: Catalog, chunks: list[tuple[int, int]],
                       tables: tuple[str, ...]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for first, last in chunks:
            rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in tables}
            for i in range(first, last + 1):
                for table, found in account_rows(seed, known, i).items():
                    if table in rows:
                        rows[table] += found
            async with conn.transaction():
                for table in tables:
                    await conn.copy_records_to_table(table, records=rows[table], columns=HISTORY_TABLES[table])
    finally:
        await conn.close()


def _copy_worker(database_url: str, seed: HistorySeed, known: Catalog, chunks: list[tuple[int, int]],
                 tables: tuple[str, ...]) -> None:
    asyncio.run(_copy_chunks(database_url, seed, known, chunks, tables))


async def seed_histories(database_url: str, seed: HistorySeed, first: int, last: int, workers: int = 2) -> int:
    """Adds accounts `first`..`last` (inclusive) with their stored events and derived rows, and
    `account_history` rows where the schema has that table: each worker process makes its share of
    the accounts' rows and writes them with COPY, a chunk of accounts per transaction. Then
    refreshes the planner's statistics. Returns the number of events stored."""
    known = await Catalog.read(database_url, [p.price_id for p in seed.plans.values()])
    conn = await asyncpg.connect(database_url)
    try:
        history = await has_table(conn, "account_history")
        tables = tuple(t for t in HISTORY_TABLES if t != "account_history" or history)
    finally:
        await conn.close()
    chunks = [(start, min(start + HISTORY_CHUNK - 1, last)) for start in range(first, last + 1, HISTORY_CHUNK)]
    loop = asyncio.get_running_loop()
    # Processes of their own (started afresh, not forked from this one and its threads): the rows
    # are made in Python, so one process would hold the seeding to one core.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, _copy_worker, database_url, seed, known,
                                                    chunks[n::workers], tables) for n in range(workers)))
    conn = await asyncpg.connect(database_url)
    try:
        for table in tables:
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()
    return sum(2 * periods(i) for i in range(first, last + 1))
