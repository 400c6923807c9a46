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
wake-up is due; a change to everything gives it one turn for all of them, so it wakes once.
`proven` says whether the notifications can be trusted right now (db/listener.py); a stream sends
heartbeats only while they are."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from entitlement_service.db.listener import EVERYTHING


class Wake:
    """One stream's wake-up for one account: set by any number of changes, taken once.

    A change to the account is due at once. A change to everything is pending at once (the stream
    must not tell its client it is current) but due only at the stream's turn (`Watchers.notify`)."""

    def __init__(self, stream: asyncio.Event | None = None) -> None:
        self._due = asyncio.Event()
        self._stream = stream
        self._turn_awaited = False

    @property
    def stream(self) -> object:
        """What the stream's wake-ups share: its event, or this wake-up when it watches one account."""
        return self._stream if self._stream is not None else self

    @property
    def due(self) -> bool:
        """Whether the stream should read its account now."""
        return self._due.is_set()

    @property
    def pending(self) -> bool:
        """Whether a change the stream has not read is due, or waiting for its turn."""
        return self._turn_awaited or self._due.is_set()

    def set(self) -> None:
        """A change to this account: due now (a read now also covers a change waiting its turn)."""
        self._turn_awaited = False
        self._due.set()
        if self._stream is not None:
            self._stream.set()

    def await_turn(self) -> bool:
        """A change to everything: pending until `turn`. False when a read is already due or waiting."""
        if self.pending:
            return False
        self._turn_awaited = True
        return True

    def turn(self) -> None:
        """The stream's turn: due now, unless read (or ended) since."""
        if self._turn_awaited:
            self.set()

    def take(self) -> None:
        """Ready to be woken again, before a read: a change committed from then on wakes it again."""
        self._turn_awaited = False
        self._due.clear()


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
        # One turn per stream, a timer: a stream watching many accounts reads them together.
        waiting: dict[object, list[Wake]] = {}
        for wakes in self._streams.values():
            for wake in wakes:
                if wake.await_turn():
                    waiting.setdefault(wake.stream, []).append(wake)
        loop, spread_s = asyncio.get_running_loop(), self.spread_s
        for stream_wakes in waiting.values():
            loop.call_later(random.uniform(0, spread_s), _turn, stream_wakes)


def _turn(wakes: list[Wake]) -> None:
    for wake in wakes:
        wake.turn()
