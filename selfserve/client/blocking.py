"""BlockingEntitlementsClient: the asyncio client for code without an event loop. It runs its
own loop on a daemon thread; every method hands its work to that loop and waits for the answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from selfserve.client.entitlements import EntitlementsClient
from selfserve.entitlement.v1 import entitlement_pb2 as pb

T = TypeVar("T")


class BlockingEntitlementsClient:
    """The same options as EntitlementsClient; `close()` (or `with`) stops the thread."""

    def __init__(self, target: str, token: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="selfserve-client", daemon=True)
        self._thread.start()

        async def make() -> EntitlementsClient:
            return EntitlementsClient(target, token, **options)

        self._client = self._run(make())

    def __enter__(self) -> BlockingEntitlementsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    @property
    def client(self) -> EntitlementsClient:
        """The asyncio client, for code running on its loop."""
        return self._client

    def check(self, account_id: str, gate: str) -> bool:
        """EntitlementsClient.check, waited for."""
        return self._run(self._client.check(account_id, gate))

    def entitlements(self, account_id: str) -> pb.Entitlements:
        """EntitlementsClient.entitlements, waited for."""
        return self._run(self._client.entitlements(account_id))

    def preview(self, account_id: str, **selection: Any) -> pb.PreviewPurchaseResponse:
        """EntitlementsClient.preview, waited for."""
        return self._run(self._client.preview(account_id, **selection))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
