"""The streams watching each account, woken by the change notifications (db/listener.py).

A stream is woken, not queued to: however many changes arrive before it reads again, it reads
once, so what it holds is one flag whatever the rate of changes. A change to everything (a catalog
change, notifications lost and found again) wakes every stream, each after its own random delay
within the spread: `min_spread_s`, or longer when there are more streams than `wakes_per_s` can
read in that time, so the re-reads cost the same share of the process however many streams are
open. The delay is a timer per stream, set when the change is heard: a stream does not run until
its turn, since a thousand streams resuming together, each only to go back to sleep, would hold the
event loop, and every CheckGate behind it, for tens of milliseconds. Every stream's reads share
`reads_at_once` connections: a thousand watchers reading again at once would otherwise take every
pooled connection and the CPU from CheckGate.

A stream watching many accounts passes one `stream` event to each of its subscriptions: any of its
accounts' wake-ups sets it, so the stream waits on one event and then reads the accounts whose
wake-up is due. `proven` says whether the notifications can be trusted right now (db/listener.py);
a stream sends heartbeats only while they are."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from entitlement_service.db.listener import EVERYTHING


class Wake:
    """One stream's wake-up: set by any number of changes, taken once.

    A change to its account is due at once. A change to everything is pending at once (the stream
    must not tell its client it is current) but due only after this stream's own delay: a timer, so
    the streams do not all wake together, each only to go back to sleep until its turn."""

    def __init__(self, stream: asyncio.Event | None = None) -> None:
        self._due = asyncio.Event()
        self._stream = stream
        self._later: asyncio.TimerHandle | None = None

    @property
    def due(self) -> bool:
        """Whether the stream should read its account now."""
        return self._due.is_set()

    @property
    def pending(self) -> bool:
        """Whether a change the stream has not read is due, or waiting for its turn."""
        return self._due.is_set() or self._later is not None

    def set(self) -> None:
        """A change to this account: due now (a read now also covers a change waiting its turn)."""
        self._cancel_later()
        self._due.set()
        if self._stream is not None:
            self._stream.set()

    def set_after(self, delay_s: float) -> None:
        """A change to everything: due after `delay_s`, unless a read is already due or waiting."""
        if not self.pending:
            self._later = asyncio.get_running_loop().call_later(delay_s, self.set)

    def take(self) -> None:
        """Ready to be woken again, before a read: a change committed from then on wakes it again."""
        self._cancel_later()
        self._due.clear()

    def _cancel_later(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None


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
            wake.take()  # a change to everything waiting for its turn wakes no stream that ended
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
        if account_id != EVERYTHING:
            for wake in self._streams.get(account_id, ()):
                wake.set()
            return
        spread_s = self.spread_s
        for wakes in self._streams.values():
            for wake in wakes:
                wake.set_after(random.uniform(0, spread_s))
