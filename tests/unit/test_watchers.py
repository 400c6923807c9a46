"""A watching stream is woken, not queued to: any number of changes before it reads again make one
read, and what it holds stays one flag whatever the rate of changes. A change to everything reaches
each stream at its own turn within the spread, and no stream runs before its turn."""

from __future__ import annotations

import asyncio
import contextlib

from entitlement_service.db.listener import EVERYTHING
from entitlement_service.service.changes import Watchers


async def test_many_changes_before_a_read_wake_the_stream_once() -> None:
    watchers = Watchers(min_spread_s=0)
    stream = asyncio.Event()
    async with watchers.subscribe("acct_1", stream) as wake:
        for revision in range(1, 1001):
            watchers.notify("acct_1", revision)
        assert wake.due and stream.is_set()
        wake.take()
        assert not wake.due and not wake.pending  # nothing left to take
        watchers.notify("acct_1", 1001)
        assert wake.due


async def test_a_change_wakes_only_its_accounts_streams_and_everything_wakes_all() -> None:
    watchers = Watchers(min_spread_s=0)
    async with watchers.subscribe("acct_1") as first, watchers.subscribe("acct_2") as second:
        watchers.notify("acct_1", 1)
        assert (first.due, second.due) == (True, False)
        first.take()
        watchers.notify(EVERYTHING, 0)
        assert (first.pending, second.pending) == (True, True)


async def test_a_change_to_everything_wakes_each_stream_at_its_own_turn_not_all_at_once() -> None:
    watchers = Watchers(min_spread_s=0.3)
    async with contextlib.AsyncExitStack() as streams:
        events = [asyncio.Event() for _ in range(50)]
        wakes = [await streams.enter_async_context(watchers.subscribe(f"acct_{n}", event))
                 for n, event in enumerate(events)]
        loop = asyncio.get_running_loop()
        heard = loop.time()
        watchers.notify(EVERYTHING, 0)
        # Pending at once, so no stream tells its client it is current; but none woken yet.
        assert all(wake.pending and not wake.due for wake in wakes)
        assert not any(event.is_set() for event in events)

        async def woken_at(event: asyncio.Event) -> float:
            await event.wait()
            return loop.time() - heard

        turns = await asyncio.wait_for(asyncio.gather(*(woken_at(event) for event in events)), timeout=5)
    assert max(turns) <= 0.3 + 0.2
    assert len({round(turn, 3) for turn in turns}) > 10  # spread over the window, not one instant


async def test_a_stream_watching_many_accounts_has_one_turn_for_all_of_them() -> None:
    watchers = Watchers(min_spread_s=0.3)
    stream = asyncio.Event()
    async with contextlib.AsyncExitStack() as subscriptions:
        wakes = [await subscriptions.enter_async_context(watchers.subscribe(f"acct_{n}", stream)) for n in range(20)]
        watchers.notify(EVERYTHING, 0)
        assert all(wake.pending and not wake.due for wake in wakes)
        await asyncio.wait_for(stream.wait(), timeout=5)
        assert all(wake.due for wake in wakes)  # woken once, with every account to read


async def test_a_change_to_the_account_does_not_wait_for_the_turn_and_the_turn_does_not_wake_it_again() -> None:
    watchers = Watchers(min_spread_s=0)  # every turn due at once, in the order the streams subscribed
    stream, later = asyncio.Event(), asyncio.Event()
    async with watchers.subscribe("acct_1", stream) as wake, watchers.subscribe("acct_2", later):
        watchers.notify(EVERYTHING, 0)
        watchers.notify("acct_1", 1)
        assert wake.due and stream.is_set()
        wake.take()  # the read now covers the change to everything too
        stream.clear()
        await asyncio.wait_for(later.wait(), timeout=5)  # the turns have come ...
        assert not wake.pending and not stream.is_set()  # ... and the one already read woke nothing


async def test_a_stream_that_ends_leaves_nothing_behind() -> None:
    watchers = Watchers()
    async with watchers.subscribe("acct_1") as first, watchers.subscribe("acct_1"):
        assert len(watchers) == 2
        watchers.notify(EVERYTHING, 0)
        assert first.pending
    assert len(watchers) == 0
    assert not first.pending  # its turn will wake nothing
    watchers.notify("acct_1", 1)  # no stream left to wake, and no error


async def test_a_change_to_everything_is_spread_over_longer_when_more_streams_watch() -> None:
    watchers = Watchers(min_spread_s=1, wakes_per_s=2)
    async with watchers.subscribe("acct_1"):
        assert watchers.spread_s == 1
        async with contextlib.AsyncExitStack() as streams:
            for n in range(2, 7):
                await streams.enter_async_context(watchers.subscribe(f"acct_{n}"))
            assert watchers.spread_s == 3  # six streams at two re-reads a second
