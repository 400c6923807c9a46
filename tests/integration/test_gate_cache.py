"""The CheckGate cache over a real pool: bounded whatever the number of accounts it hears about,
and never keeping an answer read before a change it was told of meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from entitlement_service.db.pool import PoolHandle, create_pool
from entitlement_service.service.gates import GateCache
from tests.support.waiting import eventually

HOUR = timedelta(hours=1)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[PoolHandle]:
    handle = PoolHandle()
    handle.set(await create_pool(database_url, min_size=1, max_size=1, timeout_s=5))
    yield handle
    await handle.close()


async def test_the_cache_stays_bounded_however_many_accounts_it_loads_or_hears_about(pool: PoolHandle) -> None:
    cache = GateCache(pool, now, HOUR, max_entries=5)
    cache.trust(True)
    for n in range(20):
        await cache.check(f"acct_{n}", "api_access")
    for n in range(10_000):
        cache.invalidate(f"acct_heard_{n}", n + 1)
    assert cache.tracked == 5
    assert cache.cached("acct_19", "api_access") is not None  # the most recent are kept
    assert cache.cached("acct_0", "api_access") is None


async def test_an_answer_read_before_a_change_announced_meanwhile_is_not_kept(pool: PoolHandle) -> None:
    cache = GateCache(pool, now, HOUR)
    cache.trust(True)
    async with pool.acquire():  # the only connection: the load waits for it
        loading = asyncio.create_task(cache.check("acct_1", "api_access"))

        async def load_in_flight() -> bool:
            return cache.tracked == 1

        await eventually(load_in_flight, what="the load to start")
        cache.invalidate("acct_1", 1)  # revision 1 committed elsewhere; the load will read revision 0
    assert not (await loading).allowed
    assert cache.cached("acct_1", "api_access") is None  # read before the change: answered, not kept
    assert cache.tracked == 0  # nor the notice, once the load finished
    await cache.check("acct_1", "api_access")
    assert cache.cached("acct_1", "api_access") is not None


async def test_nothing_is_kept_while_notifications_are_unproven(pool: PoolHandle) -> None:
    cache = GateCache(pool, now, HOUR)
    await cache.check("acct_1", "api_access")
    assert cache.cached("acct_1", "api_access") is None
    cache.trust(True)
    await cache.check("acct_1", "api_access")
    assert cache.cached("acct_1", "api_access") is not None
    cache.trust(False)
    assert cache.cached("acct_1", "api_access") is None
