"""Retention of provider events' raw payloads. `provider_events` is partitioned by the provider's
time in UTC months: a run makes the month partitions ahead, folds each month whose events are all
older than the retention age into the compact archive (its raw payloads dropped with it, except
those of events still rejected, which ReplayEvents and ReplayUnreadableEvents apply again), and
prunes the payloads the archive still holds past that age. Everything else about an event stays:
ids, type, times, account, outcome, reason, deliveries and the normalized snapshot accounts are
derived from. One replica runs at a time; the others skip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from entitlement_service.db import retention
from entitlement_service.db.pool import DATABASE_ERRORS, Conn
from entitlement_service.service.metrics import (
    EVENT_PARTITIONS_CHANGED,
    EVENT_PAYLOADS_PRUNED,
    EVENT_RETENTION_RUNS,
)

log = structlog.get_logger("retention")

# Month partitions exist ahead of the provider's time by this much (so events land in their own
# month, not the default partition, even when runs are far apart).
AHEAD = timedelta(days=62)
# Payloads pruned in the archive per statement, so no statement runs long.
ARCHIVE_BATCH = 1000


@dataclass
class Pruned:
    """What one run did."""

    partitions_created: int = 0
    partitions_folded: int = 0
    events_archived: int = 0
    payloads_dropped: int = 0  # with their month's partition, and in the archive
    payloads_kept: int = 0  # of rejected events, in the months folded


async def prune_events(conn: Conn, retention_age: timedelta, now: datetime) -> Pruned | None:
    """One run on `conn`, a connection of its own: the retention lock it takes is held until that
    connection closes. None when another replica is running one."""
    if not await retention.try_lock(conn):
        return None
    done = Pruned()
    done.partitions_created = await retention.add_months(conn, now + AHEAD)
    horizon = now - retention_age
    while len(months := await retention.months(conn)) > 1 and months[0].end <= horizon:
        oldest = months[0]
        await retention.bound_archive(conn, oldest.end)
        await retention.validate_archive(conn, oldest.end)
        folded = await retention.fold_month(conn, oldest.end)
        log.info("event_partition_folded", partition=oldest.name, events=folded.archived,
                 payloads_dropped=folded.payloads_dropped, payloads_kept=folded.payloads_kept)
        done.partitions_folded += 1
        done.events_archived += folded.archived
        done.payloads_dropped += folded.payloads_dropped
        done.payloads_kept += folded.payloads_kept
    while pruned := await retention.prune_archived_payloads(conn, horizon, ARCHIVE_BATCH):
        done.payloads_dropped += pruned
    return done


async def run_once(url: str, connect_timeout_s: float, retention_age: timedelta, now: datetime) -> Pruned | None:
    """A run over a connection of its own, counted and logged."""
    started = time.perf_counter()
    try:
        async with retention.maintenance_connection(url, connect_timeout_s) as conn:
            done = await prune_events(conn, retention_age, now)
    except BaseException as exc:
        if not isinstance(exc, asyncio.CancelledError):
            EVENT_RETENTION_RUNS.labels("failed").inc()
        raise
    if done is None:
        EVENT_RETENTION_RUNS.labels("skipped").inc()
        log.info("event_retention", result="skipped", reason="another replica is running it")
        return None
    EVENT_RETENTION_RUNS.labels("completed").inc()
    EVENT_PARTITIONS_CHANGED.labels("created").inc(done.partitions_created)
    EVENT_PARTITIONS_CHANGED.labels("folded").inc(done.partitions_folded)
    EVENT_PAYLOADS_PRUNED.inc(done.payloads_dropped)
    log.info("event_retention", result="completed", retention_days=retention_age / timedelta(days=1),
             partitions_created=done.partitions_created, partitions_folded=done.partitions_folded,
             events_archived=done.events_archived, payloads_dropped=done.payloads_dropped,
             payloads_kept=done.payloads_kept, duration_ms=round((time.perf_counter() - started) * 1000, 1))
    return done


async def keep_events_pruned(url: str, connect_timeout_s: float, retention_age: timedelta, interval_s: float,
                             clock: Callable[[], datetime]) -> None:
    """A run every `interval_s` seconds, the first at once; a failed run is logged, and the next
    one tries again."""
    while True:
        try:
            await run_once(url, connect_timeout_s, retention_age, clock())
        except (*DATABASE_ERRORS, TimeoutError) as exc:
            log.warning("event_retention_failed", error=f"{type(exc).__name__}: {exc}", retry_s=interval_s)
        await asyncio.sleep(interval_s)
