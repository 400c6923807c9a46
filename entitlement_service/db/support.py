"""Support and reconciliation: the audit trail, mismatches between the provider's view and the
state held, the reconciler's checkpoint and the operational counts."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from entitlement_service.db.columns import Column, Shape
from entitlement_service.db.derived import AUDIT, stored_account
from entitlement_service.db.pool import Conn
from entitlement_service.domain.records import AuditEntry, Finding, MismatchRecord, OperationsCounts, Resolution

FINDING = Shape(Finding, (
    Column("kind", "text"), Column("account_id", "text"), Column("subscription_id", "text"),
    Column("fingerprint", "text"), Column("diff", "jsonb"),
))

MISMATCH = Shape(MismatchRecord, (
    Column("mismatch_id", "bigint"), Column("kind", "text"), Column("account_id", "text"),
    Column("subscription_id", "text"), Column("fingerprint", "text"), Column("diff", "jsonb"),
    Column("opened_at", "timestamptz"), Column("closed_at", "timestamptz"), Column("resolution", "text"),
))


AUDIT_FOR = f"""SELECT {AUDIT.select()} FROM audit_log
WHERE account_id = ANY($1::text[]) AND (cause_id = ANY($2::text[]) OR entity_id = ANY($3::text[]))
ORDER BY id"""


async def audit_for(conn: Conn, account_ids: Collection[str | None], cause_ids: Sequence[str],
                    entity_ids: Sequence[str]) -> list[AuditEntry]:
    """The audit rows of these accounts (None: the rows about no account) caused by `cause_ids` or
    about `entity_ids`, oldest first. Read along the primary key: what it reads grows with these
    accounts' rows, not with the log."""
    found = await conn.fetch(AUDIT_FOR, sorted({stored_account(a) for a in account_ids}), list(cause_ids),
                             list(entity_ids))
    return [AUDIT.read(r) for r in found]


OPEN_MISMATCHES = f"""
INSERT INTO mismatches ({FINDING.select()}) VALUES ({FINDING.placeholders()})
ON CONFLICT (fingerprint) WHERE closed_at IS NULL
DO UPDATE SET last_seen_at = now(), diff = excluded.diff"""


async def open_mismatches(conn: Conn, findings: Sequence[Finding]) -> None:
    """Opens each finding, or marks the open mismatch with its fingerprint seen again."""
    if findings:
        await conn.executemany(OPEN_MISMATCHES, [FINDING.encoded(f) for f in findings])


CLOSE_MISMATCHES = """
UPDATE mismatches m SET closed_at = now(), resolution = v.resolution
FROM unnest($1::text[], $2::text[]) AS v(fingerprint, resolution)
WHERE m.fingerprint = v.fingerprint AND m.closed_at IS NULL
RETURNING m.fingerprint"""


async def close_mismatches(conn: Conn, resolutions: Sequence[Resolution]) -> int:
    """Closes the open mismatches named; returns how many were open."""
    if not resolutions:
        return 0
    closed = await conn.fetch(CLOSE_MISMATCHES, [r.fingerprint for r in resolutions],
                              [r.resolution for r in resolutions])
    return len(closed)


async def list_mismatches(conn: Conn, account_id: str | None, include_closed: bool, after_id: int,
                          limit: int) -> list[MismatchRecord]:
    found = await conn.fetch(
        f"""SELECT {MISMATCH.select()} FROM mismatches
           WHERE ($1::text IS NULL OR account_id = $1) AND ($2 OR closed_at IS NULL) AND mismatch_id > $3
           ORDER BY mismatch_id LIMIT $4""", account_id, include_closed, after_id, limit)
    return [MISMATCH.read(r) for r in found]


async def checkpoint(conn: Conn, name: str) -> datetime | None:
    return await conn.fetchval("SELECT last_event_created FROM reconciler_checkpoints WHERE name = $1", name)


async def save_checkpoint(conn: Conn, name: str, at: datetime) -> None:
    await conn.execute(
        """INSERT INTO reconciler_checkpoints (name, last_event_created) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET last_event_created = greatest(reconciler_checkpoints.last_event_created,
               excluded.last_event_created), updated_at = now()""", name, at)


async def sweep_position(conn: Conn, name: str) -> str:
    return await conn.fetchval("SELECT sweep_position FROM reconciler_checkpoints WHERE name = $1", name) or ""


async def save_sweep_position(conn: Conn, name: str, position: str) -> None:
    await conn.execute(
        """INSERT INTO reconciler_checkpoints (name, sweep_position) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET sweep_position = excluded.sweep_position, updated_at = now()""",
        name, position)


async def take_lease(conn: Conn, name: str, holder: str, ttl: timedelta) -> tuple[str, datetime] | None:
    """Takes or renews the lease for `holder` unless another holds it unexpired; returns who holds
    it now and until when (None when nobody does, after `holder` gave it up with a zero `ttl`)."""
    if ttl <= timedelta(0):
        await conn.execute("DELETE FROM reconciler_leases WHERE name = $1 AND holder = $2", name, holder)
    else:
        await conn.execute(
            """INSERT INTO reconciler_leases AS l (name, holder, expires_at) VALUES ($1, $2, now() + $3::interval)
               ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
               WHERE l.holder = excluded.holder OR l.expires_at <= now()""", name, holder, ttl)
    row = await conn.fetchrow(
        "SELECT holder, expires_at FROM reconciler_leases WHERE name = $1 AND expires_at > now()", name)
    return (row["holder"], row["expires_at"]) if row else None


async def operations_counts(conn: Conn, now: datetime) -> OperationsCounts:
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM mismatches WHERE closed_at IS NULL),
                  (SELECT count(*) FROM purchases WHERE state IN ('pending', 'returned')),
                  (SELECT count(*) FROM purchases WHERE state IN ('pending', 'returned') AND timeout_at < $1)""", now)
    return OperationsCounts(*row)
