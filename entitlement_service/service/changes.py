"""The streams watching each account, woken by the change notifications (db/listener.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from entitlement_service.db.listener import EVERYTHING


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
