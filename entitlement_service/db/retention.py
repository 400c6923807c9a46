"""The partitions of `provider_events` and the retention of raw payloads (the migration
`partition_provider_events` defines the layout and the functions that change it): month
partitions made ahead, a month past the retention age folded into the compact archive, and the
payloads the archive still holds pruned where they lie. The functions run as their owner, so the
runtime role may call them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from entitlement_service.db.pool import Conn

# An arbitrary constant: one replica at a time changes the partitions.
RETENTION_LOCK_KEY = 0x5E1F7E7E
# How long a step waits for the locks it needs before it gives up until the next run, rather
# than make every statement on provider_events queue behind it.
LOCK_TIMEOUT = "2s"
# Validating the archive's bound reads the whole archive (writes go on meanwhile).
VALIDATE_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Month:
    start: datetime
    end: datetime
    name: str


@dataclass(frozen=True)
class Folded:
    """A month partition moved into the archive."""

    archived: int  # events moved
    payloads_dropped: int
    payloads_kept: int  # of events still rejected


@asynccontextmanager
async def maintenance_connection(url: str, timeout_s: float) -> AsyncIterator[Conn]:
    """A connection of its own, outside the pool: it holds the retention lock for as long as a
    run lasts, and closing it releases the lock whatever happened."""
    conn = await asyncpg.connect(url, timeout=timeout_s)
    try:
        yield conn
    finally:
        await conn.close()


async def try_lock(conn: Conn) -> bool:
    """Takes the retention lock until the session ends; False when another session holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_KEY))


async def months(conn: Conn) -> list[Month]:
    """The month partitions, oldest first."""
    return [Month(r["month_start"], r["month_end"], r["name"])
            for r in await conn.fetch("SELECT month_start, month_end, name FROM provider_event_months()")]


async def add_months(conn: Conn, through: datetime) -> int:
    """Makes the month partitions after the last one up to the month holding `through`; returns
    how many it made."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        return int(await conn.fetchval("SELECT provider_events_add_months($1)", through))


async def bound_archive(conn: Conn, month_end: datetime) -> None:
    """Says, unchecked yet, that the archive holds nothing from `month_end` on."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute("SELECT provider_events_bound_archive($1)", month_end)


async def validate_archive(conn: Conn, month_end: datetime) -> None:
    """Checks that bound against every row of the archive."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute("SELECT provider_events_validate_archive($1)", month_end, timeout=VALIDATE_TIMEOUT_S)


async def fold_month(conn: Conn, month_end: datetime) -> Folded:
    """Moves the oldest month partition, which ends at `month_end`, into the archive without the
    raw payloads of events not rejected, and drops it."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        row = await conn.fetchrow("SELECT * FROM provider_events_fold_month($1)", month_end)
    return Folded(row["archived"], row["payloads_dropped"], row["payloads_kept"])


PRUNE_ARCHIVED_PAYLOADS = """
WITH due AS (
    SELECT provider_event_id, created FROM provider_events_archive
    WHERE created < $1 AND payload IS NOT NULL AND outcome <> 'rejected'
    ORDER BY created LIMIT $2
)
UPDATE provider_events e SET payload = NULL FROM due
WHERE e.provider_event_id = due.provider_event_id AND e.created = due.created AND e.outcome <> 'rejected'"""


async def prune_archived_payloads(conn: Conn, before: datetime, limit: int) -> int:
    """Drops the raw payloads the archive holds of events before `before` that are not rejected
    (recorded before the table was partitioned, or recorded after their month was folded), at most
    `limit` of them; returns how many."""
    done = await conn.execute(PRUNE_ARCHIVED_PAYLOADS, before, limit)
    return int(done.split()[-1])
