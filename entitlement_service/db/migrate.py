"""Numbered, forward-only SQL migrations, applied at start-up under an advisory lock so that
several replicas starting at once apply each migration exactly once."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg
import structlog

log = structlog.get_logger("db")

# An arbitrary constant: every replica of this service takes the same lock.
MIGRATION_LOCK_KEY = 0x5E1F5E12
FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migrations shipped in `entitlement_service/db/migrations/`."""
    return read_migrations(resources.files("entitlement_service.db.migrations").iterdir())


def read_migrations(entries: Iterable[Traversable]) -> list[Migration]:
    """The `.sql` files among `entries`, in version order. Refused: a file not named
    NNNN_verb_noun.sql, and versions that do not run 1..n without gaps or repeats."""
    found: list[Migration] = []
    for entry in entries:
        if not entry.name.endswith(".sql"):
            continue
        match = FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name} must be named NNNN_verb_noun.sql")
        found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must run 1..n without gaps, found {versions}")
    return found


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Applies every migration not yet applied, each in its own transaction; returns their versions.
    A shipped migration whose text changed is refused: migrations never change once applied."""
    todo = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        done: list[int] = []
        for migration in todo:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    label = f"{migration.version:04d}_{migration.name}"
                    raise MigrationError(f"migration {label} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                                   migration.version, migration.name, migration.checksum)
            log.info("migration_applied", version=migration.version, name=migration.name)
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
