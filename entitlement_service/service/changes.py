"""Change notifications: one LISTEN connection per replica feeding the gate cache and watchers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import structlog

from entitlement_service.db import queries as q
from entitlement_service.db.pool import backoff_delays

log = structlog.get_logger("changes")

# Payload "<revision>:<account_id>"; revision 0 with account "*" means "everything may have changed".
Listener = Callable[[str, int], None]
EVERYTHING = "*"


class Watchers:
    """Per account, the queues of the streams watching it."""

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[int]]] = {}

    @asynccontextmanager
    async def subscribe(self, account_id: str) -> AsyncIterator[asyncio.Queue[int]]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        self._queues.setdefault(account_id, set()).add(queue)
        try:
            yield queue
        finally:
            self._queues[account_id].discard(queue)
            if not self._queues[account_id]:
                del self._queues[account_id]

    def notify(self, account_id: str, revision: int) -> None:
        targets = self._queues.values() if account_id == EVERYTHING else [self._queues.get(account_id, set())]
        for queues in list(targets):
            for queue in queues:
                queue.put_nowait(revision)

    @property
    def count(self) -> int:
        return sum(len(qs) for qs in self._queues.values())


def parse(payload: str) -> tuple[str, int]:
    revision, _, account_id = payload.partition(":")
    return account_id, int(revision) if revision.isdigit() else 0


async def listen(url: str, listeners: list[Listener], ready: asyncio.Event | None = None) -> None:
    """Holds a LISTEN connection for the life of the process. When it drops, every listener hears
    "everything changed" (notifications may have been missed) and it reconnects with backoff."""
    next_delay = backoff_delays()

    def on_notify(_: object, __: int, ___: str, payload: str) -> None:
        account_id, revision = parse(payload)
        for listener in listeners:
            listener(account_id, revision)

    while True:
        try:
            conn = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("listen_connect_failed", error=str(exc))
            await asyncio.sleep(next_delay())
            continue
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _, signal=lost: signal.set())
        try:
            await conn.add_listener(q.CHANGES_CHANNEL, on_notify)
            for listener in listeners:
                listener(EVERYTHING, 0)
            if ready is not None:
                ready.set()
            next_delay = backoff_delays()
            await lost.wait()
            log.warning("listen_connection_lost")
        finally:
            if not conn.is_closed():
                await conn.close()
