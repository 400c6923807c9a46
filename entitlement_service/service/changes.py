"""The streams watching each account, woken by the change notifications (db/listener.py).

A stream is woken, not queued to: however many changes arrive before it reads again, it reads
once, so what it holds is one flag whatever the rate of changes. A change to everything (a catalog
change, notifications lost and found again) wakes every stream, each after its own random delay
within the spread: `min_spread_s`, or longer when there are more streams than `wakes_per_s` can
read in that time, so the re-reads cost the same share of the process however many streams are
open. Every stream's reads share `reads_at_once` connections: a thousand watchers reading again
at once would otherwise take every pooled connection and the CPU from CheckGate.

A stream watching many accounts passes one `stream` event to each of its subscriptions: any of its
accounts' wake-ups sets it, so the stream waits on one event and then reads the accounts whose
wake-up is pending. `proven` says whether the notifications can be trusted right now (db/listener.py);
a stream sends heartbeats only while they are."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from entitlement_service.db.listener import EVERYTHING


class Wake:
    """One stream's wake-up: set by any number of changes, taken once."""

    def __init__(self, stream: asyncio.Event | None = None) -> None:
        self._set = asyncio.Event()
        self._stream = stream
        self._everything = False

    @property
    def pending(self) -> bool:
        return self._set.is_set()

    @property
    def everything(self) -> bool:
        """Whether a change to everything is among those pending."""
        return self._everything

    def set(self, everything: bool) -> None:
        self._everything |= everything
        self._set.set()
        if self._stream is not None:
            self._stream.set()

    def take(self) -> None:
        """Ready to be woken again, before a read: a change committed from then on wakes it again."""
        self._set.clear()
        self._everything = False

    async def wait(self, timeout_s: float | None, spread_s: float) -> None:
        """Until woken (after a random delay within `spread_s` when everything changed) or
        `timeout_s` has passed; then ready to be woken again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._set.wait(), timeout=timeout_s)
        if self._everything:
            await asyncio.sleep(random.uniform(0, spread_s))
        self._set.clear()  # before the read: a change committed from here on wakes it again
        self._everything = False


class Watchers:
    """Per account, the wake-ups of the streams watching it, and the share of connections their
    reads may hold at once."""

    def __init__(self, reads_at_once: int = 2, min_spread_s: float = 1.0, wakes_per_s: float = 200.0) -> None:
        self._streams: dict[str, set[Wake]] = {}
        self._reads = asyncio.Semaphore(reads_at_once)
        self._min_spread_s = min_spread_s
        self._wakes_per_s = wakes_per_s
        self.proven = False
        self.streams = 0  # streams open, however many accounts each watches

    @property
    def spread_s(self) -> float:
        """How long a change to everything takes to reach every stream."""
        return max(self._min_spread_s, len(self) / self._wakes_per_s)

    @asynccontextmanager
    async def subscribe(self, account_id: str, stream: asyncio.Event | None = None) -> AsyncIterator[Wake]:
        wake = Wake(stream)
        self._streams.setdefault(account_id, set()).add(wake)
        try:
            yield wake
        finally:
            self._streams[account_id].discard(wake)
            if not self._streams[account_id]:
                del self._streams[account_id]

    def __len__(self) -> int:
        """Streams watching."""
        return sum(len(wakes) for wakes in self._streams.values())

    def reading(self) -> asyncio.Semaphore:
        """Held by a stream while it reads."""
        return self._reads

    def notify(self, account_id: str, revision: int) -> None:
        everything = account_id == EVERYTHING
        targets = self._streams.values() if everything else [self._streams.get(account_id, set())]
        for wakes in targets:
            for wake in wakes:
                wake.set(everything)
