"""Accounts with realistic rows, written straight into the schema. Every seeding statement and column
list of the benchmarks is here.

`seed` (the reads of scenario d): one INSERT ... SELECT per table. Account i holds a base
subscription in `core` (Starter when i % 3 = 0, else Pro), with its item, plan assignment, grant
binding (Pro: ai_credits) and three issued monthly grants; every fifth account also holds a
team-seats add-on (3 seats). Four audit rows per subscription. Windows start between 0 and 364 days
ago and stay open. Provider events (raw payloads) are not seeded: reads never touch them.

`seed_histories` (webhook_large): accounts with their stored billing history, written with COPY;
see "Stored billing histories" below."""

from __future__ import annotations

import asyncio
import functools
import json
import multiprocessing
import re
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from catalog_rules.model import Cadence, CatalogConfig, ResolvedPrice
from checkout_service.stripe import normalize
from entitlement_service.db import catalog, derived
from entitlement_service.db.pool import init_connection
from entitlement_service.domain.funding import scaled
from entitlement_service.domain.provider import ProviderEvent
from entitlement_service.domain.records import HistoryEntry, RecordedEvent
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


# Stored billing histories ------------------------------------------------------------------------
# Account i of a history seed holds one subscription (Starter when i % 3 = 0, else Pro) renewed
# monthly for `periods(i)` = 1 + i % 10 periods, the last one running now: its purchase
# (`customer.subscription.created`, `invoice.paid`) and each renewal (`customer.subscription.updated`,
# `invoice.paid`), 11 events an account on average, stored as the service stores what the checkout
# service sends (the webhook body as the raw payload, the normalized event as the snapshot), beside
# the rows the service derives from them. The webhooks are the simulator's (bench/provider_history.py)
# with their ids and times moved to the account's.
#
# Each webhook is normalized by the checkout service's normalizer and encoded by the entitlement
# service's encoder once, with stand-in ids and times; an account's copy then takes its own in
# their place in the encoded bytes. Ids have one width for every account and times one encoded
# length, so that copy is exactly what normalizing and encoding the account's webhook gives (each
# template is checked against that when it is made, and a test checks whole accounts).

EVENT_COLUMNS = ("provider_event_id", "type", "created", "received_at", "api_version", "object_id", "subscription_id",
                 "checkout_session_id", "account_id", "provider_customer_id", "outcome", "reason", "payload",
                 "snapshot", "recorded_at")
# The history derivation reads, where the schema has that table (a row per applied snapshot).
HISTORY_COLUMNS = tuple(derived.HISTORY.names)
# The columns each table is written with, in the order `account_rows` gives its values; the tables
# in an order their foreign keys accept. A schema change is an edit here and in `account_rows`.
HISTORY_TABLES: dict[str, tuple[str, ...]] = {
    "accounts": ("account_id", "provider_customer_id", "revision", "created_at", "updated_at"),
    "subscriptions": ("subscription_id", "account_id", "provider_customer_id", "subscription_group", "status",
                      "provider_updated_at", "provider_event_id", "started_at", "current_period_start",
                      "current_period_end", "metadata", "updated_at"),
    "subscription_items": ("account_id", "subscription_id", "price_id", "item_id", "product_id", "quantity",
                           "effective", "current_period_start", "current_period_end", "updated_at"),
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

DAY = 86_400
RECEIVED_AFTER_S = 1  # a webhook's receipt, after its provider time
WIDTH = 7  # digits of an account number in its ids
# Which period of the subscription each captured webhook was sent for.
PURCHASE, PURCHASE_PAID, RENEWAL, RENEWAL_PAID = range(4)
SENT_FOR = (1, 1, 2, 2)


def periods(i: int) -> int:
    return 1 + i % 10


def plan_of(i: int) -> str:
    return "starter_monthly" if i % 3 == 0 else "pro_monthly"


def history_account(i: int) -> str:
    return f"acct_hist_{i:0{WIDTH}d}"


def boundaries(i: int, now: int) -> list[int]:
    """Account i's period boundaries, its start first: monthly (as the simulator bills) from a
    start chosen so its last period runs at `now`; accounts start 0 to 26 days and up to an hour
    apart."""
    count = periods(i)
    start = add_interval(now, "month", 1 - count) - (i % 27) * DAY - i % 3600
    return [add_interval(start, "month", m) for m in range(count + 1)]


def _sent(i: int) -> list[tuple[int, int]]:
    """(captured webhook, period) for each webhook account i was sent, in order."""
    return [(PURCHASE, 1), (PURCHASE_PAID, 1), *((n, k) for k in range(2, periods(i) + 1) for n in (RENEWAL,
                                                                                                   RENEWAL_PAID))]


def _values(i: int, j: int, k: int, sent_for: int, bounds: list[int]) -> dict[str, str]:
    """The slots of webhook j of account i, sent for period k, from a template sent for period
    `sent_for`: its invoices and boundaries are counted from that period."""
    n = f"{i:0{WIDTH}d}"
    shift = k - sent_for
    values = {"acct": history_account(i), "cus": f"cus_hist_{n}", "sub": f"sub_hist_{n}", "si": f"si_hist_{n}",
              "evt": f"evt_hist_{n}_{j:02d}", "start": str(bounds[0]),
              "received": str(bounds[k - 1] + RECEIVED_AFTER_S)}
    for m in (1, 2):
        values[f"in{m}"] = f"in_hist_{n}_{m + shift:02d}"
        values[f"il{m}"] = f"il_hist_{n}_{m + shift:02d}"
    for m in range(3):
        if 0 <= m + shift < len(bounds):
            values[f"t{m}"] = str(bounds[m + shift])
    return values


TIME_SLOTS = ("start", "t0", "t1", "t2", "received")
SLOT = re.compile(r"@@(\w+)@@")


@dataclass(frozen=True)
class _Slotted:
    """Text (or bytes) with slots: `parts` alternates literal pieces and slot names."""

    parts: tuple[Any, ...]

    def fill(self, values: Mapping[str, Any]) -> Any:
        parts = self.parts
        return parts[0][:0].join(parts[n] if n % 2 == 0 else values[parts[n]] for n in range(len(parts)))


# The times that say when a subscription (or its item) started, not which period a webhook is about.
STARTED = ("created", "start_date", "billing_cycle_anchor")


def _slotted_json(event: dict[str, Any], times: dict[int, str], ids: dict[str, str]) -> _Slotted:
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
    return _Slotted(tuple(SLOT.split(text)))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _encoded_values(values: Mapping[str, str]) -> dict[str, bytes]:
    """Slot values as the encoded event holds them: text as UTF-8, times as Timestamp seconds."""
    return {k: _varint(int(v)) if k in TIME_SLOTS else v.encode() for k, v in values.items()}


@dataclass(frozen=True)
class _Webhook:
    """One captured webhook, ready to be made for any account: its body, its encoded normalized
    event, its provider_events and account_history rows (each value a slot or a constant)."""

    payload: _Slotted
    snapshot: _Slotted
    event_row: tuple[tuple[bool, Any], ...]  # (is a slot, slot name or value)
    history_row: tuple[tuple[bool, Any], ...]
    sent_for: int


def _row_of(row: tuple[Any, ...], slots: Mapping[Any, str]) -> tuple[tuple[bool, Any], ...]:
    return tuple((True, slots[v]) if isinstance(v, str | bytes | datetime) and v in slots else (False, v)
                 for v in row)


def _made(row: tuple[tuple[bool, Any], ...], values: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(values[v] if slot else v for slot, v in row)


def _stand_ins(webhook: int) -> dict[str, str]:
    """Slot values no real account has, distinct from each other, in the order real times are."""
    values = _values(10 ** WIDTH - 1, 99, SENT_FOR[webhook], SENT_FOR[webhook],
                     [1_600_000_000 + 1_000_003 * m for m in range(3)])
    values.update(start=str(1_590_000_000), received=str(1_700_000_000))
    return values


def normalized(body: bytes, received_at: int, products: Mapping[str, Any]) -> ProviderEvent:
    """What the services make of a webhook: the checkout service's normalized event (with the
    products it fetches for it), as the entitlement service records it."""
    event = json.loads(body)
    wanted = {p: products[p] for p in normalize.product_ids(event["type"], event["data"]["object"])}
    return provider_event(normalize.normalize(event, body, datetime.fromtimestamp(received_at, UTC), wanted))


def _history_row(account: str, event: ProviderEvent) -> tuple[Any, ...]:
    return astuple(HistoryEntry.of(event, account))


def _webhook(payload: _Slotted, webhook: int, products: Mapping[str, Any]) -> _Webhook:
    stand_in = _stand_ins(webhook)
    body = payload.fill(stand_in).encode()
    event = normalized(body, int(stand_in["received"]), products)
    encoded = _encoded_values(stand_in)
    found = re.compile(b"|".join(re.escape(v) for v in sorted(set(encoded.values()), key=len, reverse=True)))
    slot_of = {v: k for k, v in encoded.items()}
    pieces = found.split(event.snapshot)
    names = [slot_of[m.group()] for m in found.finditer(event.snapshot)]
    snapshot = _Slotted(tuple(x for pair in zip(pieces, [*names, None], strict=True) for x in pair)[:-1])
    slots: dict[Any, str] = {v: k for k, v in stand_in.items()}
    slots.update({datetime.fromtimestamp(int(v), UTC): k for k, v in stand_in.items() if k in TIME_SLOTS})
    slots.update({body: "payload", event.snapshot: "snapshot"})
    recorded = RecordedEvent.of(event, stand_in["acct"])
    made = _Webhook(payload, snapshot,
                    _row_of((*(getattr(recorded, c) for c in EVENT_COLUMNS[:-1]), event.received_at), slots),
                    _row_of(_history_row(stand_in["acct"], event), slots), SENT_FOR[webhook])
    # Made for a real account, the copy must be exactly what normalizing and encoding gives.
    values = _values(1, webhook, SENT_FOR[webhook], SENT_FOR[webhook], boundaries(1, 1_800_000_000)[:3])
    if snapshot.fill(_encoded_values(values)) != normalized(payload.fill(values).encode(), int(values["received"]),
                                                             products).snapshot:
        raise RuntimeError(f"webhook {webhook}'s normalized event cannot be copied by replacing its ids and times")
    return made


@dataclass(frozen=True)
class HistoryPlan:
    """One price's captured webhooks, each ready to be made for any account."""

    price_id: str
    webhooks: tuple[_Webhook, ...]  # PURCHASE, PURCHASE_PAID, RENEWAL, RENEWAL_PAID
    status: str  # the subscription's, in every webhook
    quantity: int  # its one item's


def history_plan(captured: PlanHistory, price_id: str, products: Mapping[str, Any]) -> HistoryPlan:
    events = (captured.created, captured.first_paid, captured.renewed, captured.renewal_paid)
    sub = captured.created["data"]["object"]
    item = sub["items"]["data"][0]
    renewed_item = captured.renewed["data"]["object"]["items"]["data"][0]
    times = {sub["start_date"]: "t0", item["current_period_end"]: "t1", renewed_item["current_period_end"]: "t2"}
    ids = {sub["id"]: "sub", sub["customer"]: "cus", sub["metadata"]["account_id"]: "acct", item["id"]: "si"}
    for m, paid in ((1, captured.first_paid), (2, captured.renewal_paid)):
        ids[paid["data"]["object"]["id"]] = f"in{m}"
        ids[paid["data"]["object"]["lines"]["data"][0]["id"]] = f"il{m}"
    # The database's id for the price, in every account's webhooks.
    events = tuple(json.loads(json.dumps(e).replace(captured.price_id, price_id)) for e in events)
    webhooks = tuple(_webhook(_slotted_json(event, times, {event["id"]: "evt", **ids}), n, products)
                     for n, event in enumerate(events))
    return HistoryPlan(price_id, webhooks, sub["status"], int(item["quantity"]))


@dataclass(frozen=True)
class HistorySeed:
    plans: dict[str, HistoryPlan]  # by lookup key
    now: int  # the provider time every account's last period runs at


def history_seed(captured: Captured, price_ids: Mapping[str, str], now: int) -> HistorySeed:
    """The captured webhooks for a database whose prices have `price_ids` (by lookup key)."""
    return HistorySeed({key: history_plan(plan, price_ids[key], captured.products)
                        for key, plan in captured.plans.items()}, now)


def account_webhooks(seed: HistorySeed, i: int) -> list[tuple[bytes, bytes]]:
    """Account i's webhooks in the order sent: (body, encoded normalized event)."""
    plan, bounds = seed.plans[plan_of(i)], boundaries(i, seed.now)
    out = []
    for j, (n, k) in enumerate(_sent(i)):
        webhook = plan.webhooks[n]
        values = _values(i, j, k, webhook.sent_for, bounds)
        out.append((webhook.payload.fill(values).encode(), webhook.snapshot.fill(_encoded_values(values))))
    return out


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


def _time(seconds: str | int) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)


def _open(start: datetime, end: datetime | None = None) -> asyncpg.Range:
    return asyncpg.Range(start, end, lower_inc=True, upper_inc=False)


def _audited(audit: list[tuple[Any, ...]], at: datetime, account: str, event: str, entity: str, entity_id: str,
             action: str, detail: dict[str, Any]) -> None:
    audit.append((at, account, "provider_event", event, entity, entity_id, action, json.dumps(detail)))


def account_rows(seed: HistorySeed, known: Catalog, i: int) -> dict[str, list[tuple[Any, ...]]]:
    """Account i's rows in every table, as applying its webhooks one by one leaves them: each
    audited as the service audits it, at its receipt."""
    plan, bounds = seed.plans[plan_of(i)], boundaries(i, seed.now)
    price = known.prices[plan.price_id]
    group = price.subscription_group or ""
    billing = known.config.plans[price.billing_plan_code or ""]
    programs = [(g, known.config.grant_programs[g.grant_program_code]) for g in price.grants]
    at = [_time(b) for b in bounds]
    start, now, ends = at[0], at[-2], at[-1]  # the current period: [now, ends)
    account, customer = history_account(i), f"cus_hist_{i:0{WIDTH}d}"
    window = {"effective_from": start.isoformat(), "effective_until": None}
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in HISTORY_TABLES}
    audit = rows["audit_log"]
    changes = 0
    for j, (n, k) in enumerate(_sent(i)):
        webhook = plan.webhooks[n]
        values = _values(i, j, k, webhook.sent_for, bounds)
        received = _time(values["received"])
        filled = {**values, **{t: _time(values[t]) for t in TIME_SLOTS if t in values},
                  "payload": webhook.payload.fill(values).encode(),
                  "snapshot": webhook.snapshot.fill(_encoded_values(values))}
        rows["provider_events"].append(_made(webhook.event_row, filled))
        rows["account_history"].append(_made(webhook.history_row, filled))
        sub, event = values["sub"], values["evt"]
        note = functools.partial(_audited, audit, received, account, event)
        audited = len(audit)
        if n in (PURCHASE, RENEWAL):
            note("subscription", sub, "upsert", {"status": plan.status, "provider_updated_at": at[k - 1].isoformat(),
                                                 "event": event, "subscription_group": group})
            note("subscription_item", f"{sub}/{plan.price_id}", "upsert", {"quantity": plan.quantity, **window})
            if n == PURCHASE:  # the plan and the grants, open from the start
                note("plan_assignment", f"{sub}/{plan.price_id}", "insert", {"billing_plan_code": billing.code,
                                                                             **window})
                for grant, _ in programs:
                    note("grant_binding", f"{sub}/{plan.price_id}/{grant.grant_program_code}", "insert",
                         {"amount": grant.amount, "quantity": plan.quantity, "source": grant.source.value, **window})
            latest = (event, received)
        else:  # a paid period funds its per-period grants
            for grant, program in programs:
                if program.cadence is Cadence.PER_PERIOD:
                    key = f"{sub}:{program.code}:{at[k].isoformat()}"
                    amount = scaled(grant.amount, grant.scale_by_quantity, plan.quantity)
                    rows["issued_grants"].append((
                        key, account, program.code, program.cadence.value, program.unit, amount, grant.source.value,
                        plan.price_id, sub, values[f"in{webhook.sent_for}"], _open(at[k - 1], at[k]), at[k - 1],
                        event, received, "period"))
                    note("issued_grant", key, "insert",
                         {"grant_program_code": program.code, "amount": amount, "basis": "period"})
        if len(audit) > audited:
            changes += 1
            changed_at = received
    sub, item = values["sub"], values["si"]
    rows["accounts"].append((account, customer, changes, rows["provider_events"][0][3], changed_at))
    rows["subscriptions"].append((sub, account, customer, group, plan.status, now, latest[0], start, now, ends,
                                  json.dumps({"account_id": account}), latest[1]))
    rows["subscription_items"].append((account, sub, plan.price_id, item, price.price.product_id, plan.quantity,
                                       _open(start), now, ends, latest[1]))
    rows["plan_assignments"].append((account, group, known.config.groups[group].stackable, sub, plan.price_id,
                                     billing.code, billing.priority, price.gate_bundle, start, _open(start),
                                     rows["provider_events"][0][3]))
    rows["grant_bindings"].extend(
        (account, sub, group, plan.price_id, price.price.product_id, grant.grant_program_code, grant.amount,
         grant.scale_by_quantity, plan.quantity, grant.source.value, _open(start), rows["provider_events"][0][3])
        for grant, _ in programs)
    return rows


async def has_table(conn: asyncpg.Connection, table: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT FROM information_schema.tables WHERE table_schema = current_schema() "
        "AND table_name = $1)", table))


HISTORY_CHUNK = 2_000  # accounts a transaction


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
    their `account_history` rows where the schema has that table: each of `workers` processes
    makes its share of the accounts' rows and writes them with COPY, a chunk of accounts per
    transaction. Then refreshes the planner's statistics. Returns the number of events stored."""
    known = await Catalog.read(database_url, [p.price_id for p in seed.plans.values()])
    conn = await asyncpg.connect(database_url)
    try:
        history = await has_table(conn, "account_history")
    finally:
        await conn.close()
    tables = tuple(t for t in HISTORY_TABLES if t != "account_history" or history)
    chunks = [(start, min(start + HISTORY_CHUNK - 1, last)) for start in range(first, last + 1, HISTORY_CHUNK)]
    loop = asyncio.get_running_loop()
    # Processes started afresh (not forked from this one and its threads): the rows are made in
    # Python, which one process would hold to one core.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, _copy_worker, database_url, seed, known,
                                                    chunks[n::workers], tables) for n in range(workers)))
    conn = await asyncpg.connect(database_url)
    try:
        for table in tables:
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()
    return sum(len(_sent(i)) for i in range(first, last + 1))
