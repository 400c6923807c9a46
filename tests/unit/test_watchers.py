"""A watching stream is woken, not queued to: any number of changes before it reads again make one
read, and what it holds stays one flag whatever the rate of changes."""

from __future__ import annotations

import asyncio
import contextlib

from entitlement_service.db.listener import EVERYTHING
from entitlement_service.service.changes import Watchers


async def test_many_changes_before_a_read_wake_the_stream_once() -> None:
    watchers = Watchers(min_spread_s=0)
    async with watchers.subscribe("acct_1") as wake:
        for revision in range(1, 1001):
            watchers.notify("acct_1", revision)
        await asyncio.wait_for(wake.wait(None, watchers.spread_s), timeout=1)
        await wake.wait(0, watchers.spread_s)  # nothing left to take: it only times out
        watchers.notify("acct_1", 1001)
        await asyncio.wait_for(wake.wait(None, watchers.spread_s), timeout=1)


async def test_a_change_wakes_only_its_accounts_streams_and_everything_wakes_all() -> None:
    watchers = Watchers(min_spread_s=0)
    async with watchers.subscribe("acct_1") as first, watchers.subscribe("acct_2") as second:
        watchers.notify("acct_1", 1)
        assert (first.pending, second.pending) == (True, False)
        await asyncio.wait_for(first.wait(None, 0), timeout=1)
        assert not first.pending
        watchers.notify(EVERYTHING, 0)
        assert (first.pending, second.pending) == (True, True)


async def test_a_stream_that_ends_leaves_nothing_behind() -> None:
    watchers = Watchers()
    async with watchers.subscribe("acct_1"), watchers.subscribe("acct_1"):
        assert len(watchers) == 2
    assert len(watchers) == 0
    watchers.notify("acct_1", 1)  # no stream left to wake, and no error


async def test_a_change_to_everything_is_spread_over_longer_when_more_streams_watch() -> None:
    watchers = Watchers(min_spread_s=1, wakes_per_s=2)
    async with watchers.subscribe("acct_1"):
        assert watchers.spread_s == 1
        async with contextlib.AsyncExitStack() as streams:
            for n in range(2, 7):
                await streams.enter_async_context(watchers.subscribe(f"acct_{n}"))
            assert watchers.spread_s == 3  # six streams at two re-reads a second
