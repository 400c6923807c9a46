"""Numbered, forward-only SQL migrations, applied under an advisory lock so that several replicas
(or a migration job) starting at once apply each migration exactly once; the grants that let a
runtime role use the schema and nothing more; and the check that a schema is current."""

from __future__ import annotations

import asyncio
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


# How often a service that does not migrate looks again at a schema that is behind.
SCHEMA_RECHECK_S = 1.0


class MigrationError(RuntimeError):
    pass


class DatabaseUnreachable(ConnectionError):
    """The migration command could not connect (no server, a wrong host, user, password or database)."""


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
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
        except asyncpg.InsufficientPrivilegeError as exc:
            raise MigrationError(f"{exc}: this database role may not migrate; run `python -m entitlement_service "
                                 "migrate` as the owner role, and the service with MIGRATE_ON_START=false") from None
        applied = await _applied(conn)
        done: list[int] = []
        for migration in todo:
            if migration.version in applied:
                _refuse_if_changed(migration, applied[migration.version])
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


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    """Version -> checksum of every migration applied; none when there is no `schema_migrations` yet."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


def _refuse_if_changed(migration: Migration, applied_checksum: str) -> None:
    if applied_checksum != migration.checksum:
        raise MigrationError(f"migration {migration.version:04d}_{migration.name} changed after it was applied")


async def pending_migrations(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[Migration]:
    """The shipped migrations not applied yet: none when the schema is current. Refused, as by
    `migrate`: a shipped migration whose text changed after it was applied."""
    todo = load_migrations() if migrations is None else migrations
    applied = await _applied(conn)
    for migration in todo:
        if migration.version in applied:
            _refuse_if_changed(migration, applied[migration.version])
    return [m for m in todo if m.version not in applied]


async def wait_for_schema(pool: asyncpg.Pool, migrations: list[Migration] | None = None,
                          recheck_s: float = SCHEMA_RECHECK_S) -> None:
    """Returns once every shipped migration is applied, by the migration command run as the owner
    role. Until then it looks again every `recheck_s`, and logs one line each time what it finds
    changes: `schema_behind` with the versions, or `schema_unreadable` (the runtime role not yet
    granted, the database gone for a moment)."""
    todo = load_migrations() if migrations is None else migrations
    expected = todo[-1].version if todo else 0
    last: tuple[str, object] | None = None
    while True:
        try:
            async with pool.acquire() as conn:
                pending = await pending_migrations(conn, todo)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if last != ("unreadable", error):
                log.warning("schema_unreadable", error=error, retry_s=recheck_s)
            last = ("unreadable", error)
        else:
            if not pending:
                if last is not None:
                    log.info("schema_current", version=expected)
                return
            versions = [m.version for m in pending]
            if last != ("behind", versions):
                done = [m.version for m in todo if m.version not in versions]
                log.warning("schema_behind", schema_version=max(done, default=0), expected_version=expected,
                            pending=versions, waiting_for="python -m entitlement_service migrate")
            last = ("behind", versions)
        await asyncio.sleep(recheck_s)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def check_runtime_role(conn: asyncpg.Connection, role: str) -> str:
    """Refuses a runtime role that grants could not confine: one that does not exist, a superuser,
    the migration role itself or a member of it, a role owning the schema or anything in it.
    Returns the schema the migrations use (the connection's current schema)."""
    row = await conn.fetchrow(
        """SELECT r.rolsuper AS superuser,
                  pg_has_role(r.oid, (SELECT oid FROM pg_roles WHERE rolname = current_user), 'MEMBER') AS migrator,
                  n.nspowner = r.oid OR EXISTS (SELECT 1 FROM pg_class c
                                                WHERE c.relnamespace = n.oid AND c.relowner = r.oid) AS owner,
                  n.nspname AS schema
           FROM pg_roles r, pg_namespace n
           WHERE r.rolname = $1 AND n.nspname = current_schema()""", role)
    if row is None:
        raise MigrationError(f"DATABASE_RUNTIME_ROLE names the role {role!r}, which does not exist")
    if row["superuser"]:
        raise MigrationError(f"DATABASE_RUNTIME_ROLE names {role!r}, a superuser, which no grant can restrict")
    if row["migrator"]:
        raise MigrationError(f"DATABASE_RUNTIME_ROLE names {role!r}, which is (or is a member of) the role that "
                             "runs the migrations (DATABASE_URL's user): it would own the tables")
    schema: str = row["schema"]
    if row["owner"]:
        raise MigrationError(f"DATABASE_RUNTIME_ROLE names {role!r}, which owns schema {schema!r} or objects in it: "
                             "an owner may alter and drop them")
    return schema


async def grant_runtime_role(conn: asyncpg.Connection, role: str) -> None:
    """Lets `role` do what the running service does, and nothing more, in the schema the migrations
    created: use the schema; read and write the rows of every table (only read `schema_migrations`);
    use its sequences and run the routines this role owns there; the same on whatever later
    migrations create, through this role's default privileges. What `role` held there before is
    revoked first, in the same transaction, so the grants are exactly these; it never gets CREATE
    or owns anything."""
    schema = await check_runtime_role(conn, role)
    to, where = quote_identifier(role), quote_identifier(schema)
    routines = await conn.fetch(
        """SELECT p.oid::regprocedure::text AS signature FROM pg_proc p
           WHERE p.pronamespace = $1::regnamespace
             AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)""", schema)
    async with conn.transaction():
        for statement in (
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {where} FROM {to}",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {where} FROM {to}",
            f"REVOKE ALL ON SCHEMA {where} FROM {to}",
            f"GRANT USAGE ON SCHEMA {where} TO {to}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {where} TO {to}",
            f"REVOKE INSERT, UPDATE, DELETE ON TABLE {where}.schema_migrations FROM {to}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {where} TO {to}",
            *(f"GRANT EXECUTE ON ROUTINE {r['signature']} TO {to}" for r in routines),
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {where} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {to}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {where} GRANT USAGE, SELECT ON SEQUENCES TO {to}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {where} GRANT EXECUTE ON ROUTINES TO {to}",
        ):
            await conn.execute(statement)
    log.info("runtime_role_granted", role=role, schema=schema)


async def migrate_database(url: str, runtime_role: str | None, *, connect_timeout_s: float) -> list[int]:
    """The migration command's work: connects to `url` as the owner role, applies the migrations
    not yet applied and, given `runtime_role`, grants it what the service needs (the role is
    checked before anything is applied). Returns the versions applied."""
    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout_s)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnreachable(f"{type(exc).__name__}: {exc}") from None
    try:
        if runtime_role is not None:
            await check_runtime_role(conn, runtime_role)
        applied = await migrate(conn)
        if runtime_role is not None:
            await grant_runtime_role(conn, runtime_role)
        return applied
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise MigrationError(f"{type(exc).__name__}: {exc}") from None
    finally:
        await conn.close()
