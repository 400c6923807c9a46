"""The process's one asyncpg pool, created once the database answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import asyncpg
import orjson
import structlog
from opentelemetry.trace import Tracer

from entitlement_service.db.tracing import traced_connection_class

log = structlog.get_logger("db")

Conn: TypeAlias = asyncpg.Connection

# The database went away (a restart, a failover, a cut connection) or refused the connection
# mid-call: the caller may retry, and nothing was half-written, since every use case runs in one
# transaction.
# asyncpg's InternalClientError is a connection left mid-operation as the server shut down.
CONNECTION_LOST = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                   asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, ConnectionResetError,
                   asyncpg.InternalClientError)
# The transaction lost to another (a deadlock, a serialization failure) and was rolled back whole.
CONFLICTED = asyncpg.TransactionRollbackError
# What a use case that is safe to run again (its effects deduplicated) retries by itself.
RETRYABLE = (*CONNECTION_LOST, CONFLICTED)
POOL_EXHAUSTED = asyncpg.TooManyConnectionsError
# Text the database cannot hold (a NUL character, in a text column or in JSON) that the request's
# own checks let through: the caller's data, and the transaction is rolled back whole.
UNSTORABLE_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)
# Anything a background task talking to the database may meet and outlive.
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

# Failures that mean "the database is not there (yet)", worth waiting for at start-up.
UNREACHABLE = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
               asyncpg.InvalidCatalogNameError, asyncpg.TooManyConnectionsError,
               asyncpg.ConnectionDoesNotExistError)


class DatabaseNotReady(ConnectionError):
    """The database has not answered yet; callers get UNAVAILABLE and may retry."""


class PoolBusy(ConnectionError):
    """No pooled connection came free in time: the service is overloaded; callers get UNAVAILABLE
    and may retry."""


class PoolHandle:
    """The pool as the rest of the process sees it: usable from start-up, answering only once the
    database has answered and been migrated. A caller waits at most `acquire_timeout_s` for a
    connection."""

    def __init__(self, acquire_timeout_s: float = 5.0) -> None:
        self._pool: asyncpg.Pool | None = None
        self._acquire_timeout_s = acquire_timeout_s

    def set(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def ready(self) -> bool:
        return self._pool is not None

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise DatabaseNotReady("the database is not reachable yet")
        try:
            conn = await self._pool.acquire(timeout=self._acquire_timeout_s)
        except TimeoutError as exc:
            raise PoolBusy(f"no database connection free within {self._acquire_timeout_s:g} s") from exc
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


# What orjson writes exactly as the standard library does, up to spacing and escapes that
# PostgreSQL reads back to the same jsonb: text, booleans, nulls and 64-bit integers.
_FLAT_TYPES = frozenset({str, bool, type(None)})


def encode_json(value: Any) -> str:
    """A value as jsonb text. Most values written (audit details, metadata) are flat objects of
    text, booleans, nulls and integers: orjson writes those several times faster. Anything else
    (floats, whose NaN orjson would write as null; larger integers; nesting; keys that are not
    text; subclasses; a lone surrogate) is written by json.dumps, as before."""
    if type(value) is dict and all(
            type(k) is str and (type(v) in _FLAT_TYPES or (type(v) is int and -2**63 <= v < 2**64))
            for k, v in value.items()):
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass
    return json.dumps(value)


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python values, for every connection of the pool."""
    await conn.set_type_codec("jsonb", encoder=encode_json, decoder=json.loads, schema="pg_catalog")


async def keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool beyond asyncpg's own cleanup (which ends
    any open transaction): nothing. Pooled work never LISTENs, never SETs and takes only
    transaction-scoped advisory locks, so the default reset statement would be one more round
    trip per use for nothing."""


async def create_pool(url: str, *, min_size: int, max_size: int, timeout_s: float,
                      tracer: Tracer | None = None) -> asyncpg.Pool:
    """With `tracer`, each statement run while serving a traced request is a span of it; without,
    the connections are asyncpg's own, and statements cost nothing more."""
    connection_class = asyncpg.Connection if tracer is None else traced_connection_class(
        tracer, urlsplit(url).path.lstrip("/"))
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=timeout_s,
                                     command_timeout=30, init=init_connection, reset=keep_session,
                                     connection_class=connection_class)


def backoff_delays(first_s: float = 0.2, cap_s: float = 5.0) -> Callable[[], float]:
    """Exponential backoff: first_s, 2*first_s, ... capped at cap_s."""
    delay = first_s / 2

    def next_delay() -> float:
        nonlocal delay
        delay = min(delay * 2, cap_s)
        return delay

    return next_delay


async def wait_for_pool(url: str, *, min_size: int, max_size: int, timeout_s: float,
                        tracer: Tracer | None = None) -> asyncpg.Pool:
    """Retries until the database accepts connections; logs one line when it first fails and one
    when it recovers, so an outage at start-up is visible without flooding the log."""
    next_delay = backoff_delays()
    attempts = 0
    while True:
        attempts += 1
        try:
            pool = await create_pool(url, min_size=min_size, max_size=max_size, timeout_s=timeout_s, tracer=tracer)
        except UNREACHABLE as exc:
            if attempts == 1:
                log.warning("database_unreachable", error=f"{type(exc).__name__}: {exc}",
                            retry="exponential backoff from 0.2 s up to 5 s, until it answers")
            await asyncio.sleep(next_delay())
            continue
        if attempts > 1:
            log.info("database_reachable", attempts=attempts)
        return pool
