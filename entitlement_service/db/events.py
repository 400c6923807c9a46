"""Provider events: recorded once under their id, in the transaction of the change they cause,
with their outcome, raw payload and normalized snapshot. The table is partitioned by the
provider's time (`created`; the migration `partition_provider_events`): a statement that knows
an event's time names it, so it reads one partition."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from entitlement_service.db.columns import Column, Shape
from entitlement_service.db.derived import SUBSCRIPTION
from entitlement_service.db.pool import Conn
from entitlement_service.domain.model import Outcome
from entitlement_service.domain.records import (
    EventRecord,
    EventResult,
    RecordedEvent,
    RejectedEvent,
    SubscriptionRecord,
)

RECORDED = Shape(RecordedEvent, (
    Column("provider_event_id", "text"), Column("type", "text"), Column("created", "timestamptz"),
    Column("received_at", "timestamptz"), Column("api_version", "text"), Column("object_id", "text"),
    Column("subscription_id", "text"), Column("checkout_session_id", "text"), Column("account_id", "text"),
    Column("provider_customer_id", "text"), Column("outcome", "text"), Column("reason", "text"),
    Column("payload", "bytea"), Column("snapshot", "bytea"),
))

TRACED = Shape(EventRecord, (
    Column("provider_event_id", "text"), Column("type", "text"), Column("created", "timestamptz"),
    Column("received_at", "timestamptz"), Column("outcome", "text", decode=Outcome), Column("reason", "text"),
    Column("account_id", "text"), Column("object_id", "text"), Column("deliveries", "int"),
))

REJECTED = Shape(RejectedEvent, (
    Column("provider_event_id", "text"), Column("type", "text"), Column("created", "timestamptz"),
    Column("reason", "text"), Column("account_id", "text"), Column("snapshot", "bytea"), Column("payload", "bytea"),
))

# Ties the transaction-scoped locks on event ids (`first_times`) to this use: the other advisory
# locks take one bigint key, these two int keys, so they never meet.
EVENT_ID_LOCK_CLASS = 0x5E1F

INSERT_EVENTS = f"""
WITH recorded AS (
    INSERT INTO provider_events ({RECORDED.select()}) SELECT * FROM {RECORDED.recordset(1)}
    ON CONFLICT (provider_event_id, created) DO NOTHING
    RETURNING provider_event_id, subscription_id
), held AS (  -- through the primary key, however few rows the statistics last saw
    SELECT * FROM subscriptions WHERE subscription_id = ANY(${1 + RECORDED.width}::text[])
)
SELECT r.provider_event_id AS recorded, {SUBSCRIPTION.select("h")}
FROM recorded r LEFT JOIN held h ON h.subscription_id = r.subscription_id"""


async def insert_events(conn: Conn, events: Sequence[RecordedEvent]) -> dict[str, SubscriptionRecord | None]:
    """Records each event under its unique id, in one statement. Returns the events recorded now
    (not duplicates, even concurrent ones: a second insert waits for the first to commit), each
    with the row of the subscription it names as that statement found it (None when none is held,
    or the event names none)."""
    found = await conn.fetch(INSERT_EVENTS, *RECORDED.parameters(events), [e.subscription_id for e in events])
    return {r["recorded"]: SUBSCRIPTION.read(r, 1) if r["subscription_id"] is not None else None for r in found}


async def first_times(conn: Conn, event_ids: Sequence[str]) -> dict[str, datetime]:
    """The time each of these events was recorded with, for those already recorded, looked for in
    every partition. Until the transaction ends, another transaction asking about the same ids
    waits, so that of two recording one id at once the second finds the first's row."""
    ids = sorted(set(event_ids))
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext(id)) FROM unnest($2::text[]) AS id",
                       EVENT_ID_LOCK_CLASS, ids)
    found = await conn.fetch("SELECT provider_event_id, created FROM provider_events "
                             "WHERE provider_event_id = ANY($1::text[])", ids)
    return {r["provider_event_id"]: r["created"] for r in found}


# Rejected events taken to be applied again: marked applied, as a new event is recorded (the
# outcome is corrected in the same transaction when it is not), with the account now found for
# it, and locked, so two replays of one event queue and the second finds it no longer rejected (a
# duplicate). Answers as INSERT_EVENTS does.
TAKE_REJECTED = f"""
WITH taken AS (
    UPDATE provider_events e SET outcome = 'applied', reason = '', account_id = coalesce(v.account_id, e.account_id)
    FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS v(provider_event_id, created, account_id)
    WHERE e.provider_event_id = v.provider_event_id AND e.created = v.created AND e.outcome = 'rejected'
    RETURNING e.provider_event_id, e.subscription_id
), held AS (
    SELECT * FROM subscriptions WHERE subscription_id = ANY($4::text[])
)
SELECT t.provider_event_id AS recorded, {SUBSCRIPTION.select("h")}
FROM taken t LEFT JOIN held h ON h.subscription_id = t.subscription_id"""


async def take_rejected(conn: Conn, taken: Sequence[tuple[str, datetime, str | None]],
                        subscription_ids: Sequence[str | None]) -> dict[str, SubscriptionRecord | None]:
    """Of `taken` (event id, created, the account found for it now), the events still rejected, each
    with the row of the subscription it names (of `subscription_ids`)."""
    found = await conn.fetch(TAKE_REJECTED, [e for e, _, _ in taken], [c for _, c, _ in taken],
                             [a for _, _, a in taken], [s for s in subscription_ids if s])
    return {r["recorded"]: SUBSCRIPTION.read(r, 1) if r["subscription_id"] is not None else None for r in found}


async def rejected_events(conn: Conn, *, event_ids: Sequence[str], reason: str | None, account_id: str | None,
                          created_from: datetime | None, created_until: datetime | None, limit: int
                          ) -> list[RejectedEvent]:
    """Rejected events with a stored snapshot matching every filter given, oldest first."""
    found = await conn.fetch(
        f"""SELECT {REJECTED.select()} FROM provider_events
           WHERE outcome = 'rejected' AND snapshot IS NOT NULL
             AND (cardinality($1::text[]) = 0 OR provider_event_id = ANY($1::text[]))
             AND ($2::text IS NULL OR starts_with(reason, $2))
             AND ($3::text IS NULL OR account_id = $3)
             AND ($4::timestamptz IS NULL OR created >= $4) AND ($5::timestamptz IS NULL OR created < $5)
           ORDER BY created, provider_event_id LIMIT $6""",
        list(event_ids), reason, account_id, created_from, created_until, limit)
    return [REJECTED.read(r) for r in found]


# Rejected `unreadable` events normalized again by the checkout service: each takes its new
# snapshot and what it names, and stays rejected until it is applied (as a replayed event).
RENORMALIZE = f"""
UPDATE provider_events e SET snapshot = v.snapshot, api_version = v.api_version, object_id = v.object_id,
    subscription_id = v.subscription_id, checkout_session_id = v.checkout_session_id,
    account_id = coalesce(v.account_id, e.account_id), provider_customer_id = v.provider_customer_id
FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
    AS v(provider_event_id, snapshot, api_version, object_id, subscription_id, checkout_session_id, account_id,
         provider_customer_id)
WHERE e.provider_event_id = v.provider_event_id AND e.outcome = 'rejected' AND starts_with(e.reason, $9)
RETURNING {REJECTED.select("e")}"""


async def renormalize(conn: Conn, renormalized: Sequence[RecordedEvent], prefix: str) -> list[RejectedEvent]:
    """Stores the new snapshots of the events still rejected with a reason starting with `prefix`;
    answers those events (with the reason they had)."""
    found = await conn.fetch(RENORMALIZE, [e.provider_event_id for e in renormalized],
                             [e.snapshot for e in renormalized], [e.api_version for e in renormalized],
                             [e.object_id for e in renormalized], [e.subscription_id for e in renormalized],
                             [e.checkout_session_id for e in renormalized], [e.account_id for e in renormalized],
                             [e.provider_customer_id for e in renormalized], prefix)
    return [REJECTED.read(r) for r in found]


async def insert_event(conn: Conn, event: RecordedEvent) -> bool:
    """False when the event was already recorded."""
    return bool(await insert_events(conn, [event]))


COUNT_DELIVERIES = """
UPDATE provider_events e SET deliveries = deliveries + d.times
FROM (SELECT id, created, count(*) AS times FROM unnest($1::text[], $2::timestamptz[]) AS v(id, created)
      GROUP BY id, created) d
WHERE e.provider_event_id = d.id AND e.created = d.created"""


async def count_deliveries(conn: Conn, events: Sequence[tuple[str, datetime]]) -> None:
    """One more delivery for each (event id, created), as often as it is listed."""
    if events:
        await conn.execute(COUNT_DELIVERIES, [i for i, _ in events], [c for _, c in events])


SET_OUTCOMES = """
UPDATE provider_events e SET outcome = v.outcome, reason = v.reason, account_id = coalesce(v.account_id, e.account_id)
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[])
    AS v(provider_event_id, created, outcome, reason, account_id)
WHERE e.provider_event_id = v.provider_event_id AND e.created = v.created"""


async def set_event_outcomes(conn: Conn, results: Sequence[tuple[datetime, EventResult]]) -> None:
    """Each (event's created, its result)."""
    if results:
        await conn.execute(SET_OUTCOMES, [r.provider_event_id for _, r in results], [c for c, _ in results],
                           [r.outcome for _, r in results], [r.reason for _, r in results],
                           [r.account_id for _, r in results])


async def events_for(conn: Conn, *, subscription_id: str | None, checkout_session_id: str | None,
                     purchase_id: str | None) -> list[EventRecord]:
    """Every provider event about a checkout session, its purchase and its subscription (its
    invoices included), in provider order."""
    found = await conn.fetch(
        f"""SELECT {TRACED.select()} FROM provider_events
           WHERE (subscription_id = $1 AND $1 IS NOT NULL) OR (checkout_session_id = $2 AND $2 IS NOT NULL)
              OR (object_id = ANY(ARRAY[$1, $2, $3]::text[]))
           ORDER BY created, provider_event_id""", subscription_id, checkout_session_id, purchase_id)
    return [TRACED.read(r) for r in found]


async def subscription_ids_for_session(conn: Conn, checkout_session_id: str) -> list[str]:
    return [r["subscription_id"] for r in await conn.fetch(
        "SELECT DISTINCT subscription_id FROM provider_events WHERE checkout_session_id = $1 "
        "AND subscription_id IS NOT NULL AND subscription_id <> ''", checkout_session_id)]
