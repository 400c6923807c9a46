"""The process's one asyncpg pool, created once the database answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

log = structlog.get_logger("db")

# Failures that mean "the database is not there (yet)", worth waiting for at start-up.
UNREACHABLE = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
               asyncpg.InvalidCatalogNameError, asyncpg.TooManyConnectionsError,
               asyncpg.ConnectionDoesNotExistError)


async def create_pool(url: str, *, min_size: int, max_size: int, timeout_s: float) -> asyncpg.Pool:
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=timeout_s,
                                     command_timeout=30)


def backoff_delays(first_s: float = 0.2, cap_s: float = 5.0) -> Callable[[], float]:
    """Exponential backoff: first_s, 2*first_s, ... capped at cap_s."""
    delay = first_s / 2

    def next_delay() -> float:
        nonlocal delay
        delay = min(delay * 2, cap_s)
        return delay

    return next_delay


async def wait_for_pool(url: str, *, min_size: int, max_size: int, timeout_s: float) -> asyncpg.Pool:
    """Retries until the database accepts connections; logs one line when it first fails and one
    when it recovers, so an outage at start-up is visible without flooding the log."""
    next_delay = backoff_delays()
    attempts = 0
    while True:
        attempts += 1
        try:
            pool = await create_pool(url, min_size=min_size, max_size=max_size, timeout_s=timeout_s)
        except UNREACHABLE as exc:
            if attempts == 1:
                log.warning("database_unreachable", error=f"{type(exc).__name__}: {exc}",
                            retry="exponential backoff from 0.2 s up to 5 s, until it answers")
            await asyncio.sleep(next_delay())
            continue
        if attempts > 1:
            log.info("database_reachable", attempts=attempts)
        return pool
