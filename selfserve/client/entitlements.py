"""EntitlementsClient: gate checks answered in-process, kept fresh by one WatchEntitlements stream.

The client holds, per account it was asked about, the entitlements and gate schedule the watch
stream last sent (at most `max_accounts`, least recently used evicted). One stream per client
watches every held account; when the set changes, a new stream is opened with the revisions held
(`known_revisions`), so it sends only what changed, and the old one is cancelled once the new one
has caught up (its first heartbeat). `check` answers from what is held when it is fresh (see
cache.fresh) and its schedule covers the current time, else calls CheckGate. Window boundaries in
the schedule (a plan ending at period end) are honoured locally, with no call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration

from selfserve.client.cache import Accounts, Entry, Liveness, fresh, spans_of
from selfserve.client.options import RetryPolicy, Tls
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc

# The most accounts the service lets one stream watch.
MAX_ACCOUNTS_PER_STREAM = 1000

Reply = TypeVar("Reply")


@dataclass
class Stats:
    """What the client did, for metrics and tests."""

    streams_opened: int = 0  # watch streams that caught up and became the one in use
    stream_failures: int = 0  # streams that failed, went silent or never caught up
    fallbacks: int = 0  # checks answered by CheckGate because nothing fresh was held


@dataclass(eq=False)
class _Stream:
    accounts: frozenset[str]
    call: Any  # grpc.aio.UnaryStreamCall
    alive_at: float
    synced: bool = False
    ended: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # synced or ended
    reader: asyncio.Task[None] | None = None


class EntitlementsClient:
    """A product backend's view of the entitlement service.

    `target` is the service's address (host:port); `token` a `product` token, sent as
    `authorization: Bearer <token>`. `tls` turns on TLS (plaintext when None). Each unary call has
    `deadline_s` and is retried by `retry`. `max_staleness_s` bounds how old an answer `check` may
    give: never older than that, measured from the last moment the stream was known to be alive for
    the account. `heartbeat_interval_s` (default: a quarter of `max_staleness_s`, 0.1 s to 30 s) is
    how often the service proves the stream alive; a stream silent for two intervals is replaced,
    on a new connection. Use inside a running event loop; `close()` when done."""

    def __init__(self, target: str, token: str, *, tls: Tls | None = None, deadline_s: float = 2.0,
                 retry: RetryPolicy | None = None, max_accounts: int = MAX_ACCOUNTS_PER_STREAM,
                 max_staleness_s: float = 5.0, heartbeat_interval_s: float | None = None,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
                 channel_options: Sequence[tuple[str, Any]] = (),
                 wall_clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= max_accounts <= MAX_ACCOUNTS_PER_STREAM:
            raise ValueError(f"max_accounts must be from 1 to {MAX_ACCOUNTS_PER_STREAM}")
        if max_staleness_s <= 0:
            raise ValueError("max_staleness_s must be positive")
        self._target, self._tls = target, tls
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._deadline_s = deadline_s
        self._retry = retry or RetryPolicy()
        self._max_staleness_s = max_staleness_s
        self._heartbeat_s = heartbeat_interval_s or min(max(max_staleness_s / 4, 0.1), 30.0)
        self._silence_s = 2 * self._heartbeat_s
        self._interceptors = list(interceptors)
        self._channel_options = list(channel_options)
        self._wall, self._monotonic = wall_clock, monotonic
        self._channel = self._new_channel()
        self._stub = entitlement_pb2_grpc.EntitlementServiceStub(self._channel)
        self._watch_channel = self._new_channel()
        self._accounts = Accounts(max_accounts)
        self._live = Liveness()
        self._stream: _Stream | None = None
        self._listeners: dict[str, set[asyncio.Queue[pb.Entitlements]]] = {}
        self._changed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.stats = Stats()

    async def __aenter__(self) -> EntitlementsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reads -------------------------------------------------------------------------------

    def cached(self, account_id: str, gate: str) -> bool | None:
        """The answer from what is held, when it is fresh; None otherwise. No call, no await."""
        entry = self._accounts.entries.get(account_id)
        if entry is None or not fresh(entry, account_id, self._live, self._monotonic(), self._max_staleness_s):
            return None
        span = entry.span_at(self._wall())
        if span is None:
            return None
        self._accounts.entries.move_to_end(account_id)
        return gate in span.gates

    async def check(self, account_id: str, gate: str) -> bool:
        """Is `gate` allowed for the account now. Answered in-process when a fresh answer is held;
        otherwise by CheckGate, and the account is added to the watch stream so the next checks
        are answered in-process. Raises grpc.aio.AioRpcError when the call fails after its retries."""
        answer = self.cached(account_id, gate)
        if answer is not None:
            return answer
        self._want(account_id)
        self.stats.fallbacks += 1
        reply: pb.CheckGateResponse = await self._call(self._stub.CheckGate,
                                                       pb.CheckGateRequest(account_id=account_id, gate=gate))
        return reply.allowed

    async def entitlements(self, account_id: str) -> pb.Entitlements:
        """The account's entitlements: the held message while it is fresh and no window boundary
        has passed since it was computed, else GetEntitlements (and the account is watched)."""
        entry = self._accounts.get(account_id)
        if entry is not None and fresh(entry, account_id, self._live, self._monotonic(), self._max_staleness_s):
            span = entry.span_at(self._wall())
            if span is not None and entry.index == 0:
                self._accounts.touch(account_id)
                return entry.entitlements
        self._want(account_id)
        reply: pb.GetEntitlementsResponse = await self._call(self._stub.GetEntitlements,
                                                             pb.GetEntitlementsRequest(account_id=account_id))
        return reply.entitlements

    async def preview(self, account_id: str, *, items: Sequence[tuple[str, int]] | None = None,
                      change: pb.SubscriptionChange | None = None,
                      as_of: datetime | None = None) -> pb.PreviewPurchaseResponse:
        """PreviewPurchase: what buying `items` (price id or lookup key, quantity) or making
        `change` would give the account, without doing it. Exactly one of them."""
        if (items is None) == (change is None):
            raise ValueError("exactly one of items and change is required")
        request = pb.PreviewPurchaseRequest(account_id=account_id)
        if change is not None:
            request.change.CopyFrom(change)
        else:
            request.items.items.extend(pb.PurchaseItem(price=p, quantity=n) for p, n in items or ())
        if as_of is not None:
            request.as_of.FromDatetime(as_of)
        reply: pb.PreviewPurchaseResponse = await self._call(self._stub.PreviewPurchase, request)
        return reply

    async def watch(self, account_id: str) -> AsyncIterator[pb.Entitlements]:
        """The account's entitlements as held, then each newer message the shared stream sends
        about it. While someone watches it, the account is never evicted."""
        queue: asyncio.Queue[pb.Entitlements] = asyncio.Queue()
        self._listeners.setdefault(account_id, set()).add(queue)
        self._accounts.pinned[account_id] = self._accounts.pinned.get(account_id, 0) + 1
        self._want(account_id)
        try:
            entry = self._accounts.get(account_id)
            if entry is not None:
                yield entry.entitlements
            while True:
                yield await queue.get()
        finally:
            self._listeners[account_id].discard(queue)
            if not self._listeners[account_id]:
                del self._listeners[account_id]
            self._accounts.pinned[account_id] -= 1
            if not self._accounts.pinned[account_id]:
                del self._accounts.pinned[account_id]

    @property
    def watched(self) -> frozenset[str]:
        """The accounts the stream in use covers."""
        return self._live.accounts

    async def close(self) -> None:
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._stream is not None:
            await self._end(self._stream)
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self._watch_channel.close()
        await self._channel.close()

    # -- unary calls -------------------------------------------------------------------------

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: object) -> Reply:
        failures = 0
        while True:
            try:
                return await method(request, timeout=self._deadline_s, metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                failures += 1
                if error.code() not in self._retry.retry_on or failures >= self._retry.attempts:
                    raise
            await asyncio.sleep(self._retry.backoff_s(failures))

    def _new_channel(self) -> grpc.aio.Channel:
        # A channel of its own connection: the watch stream's can be replaced without the other's.
        options = [("grpc.use_local_subchannel_pool", 1), *(self._tls.options() if self._tls else []),
                   *self._channel_options]
        if self._tls is not None:
            return grpc.aio.secure_channel(self._target, self._tls.credentials(), options,
                                           interceptors=self._interceptors)
        return grpc.aio.insecure_channel(self._target, options, interceptors=self._interceptors)

    # -- the watch stream --------------------------------------------------------------------

    def _want(self, account_id: str) -> None:
        if account_id in self._accounts:
            return
        self._accounts.want(account_id)
        self._changed.set()
        if self._supervisor is None and not self._closed:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    def _healthy(self, stream: _Stream | None) -> bool:
        return stream is not None and not stream.ended and self._monotonic() - stream.alive_at <= self._silence_s

    async def _supervise(self) -> None:
        """Keeps one caught-up stream over the held accounts: opens a new one when the set changes
        or the one in use ends or goes silent, with backoff between failures."""
        failures = 0
        while not self._closed:
            self._changed.clear()
            wanted = frozenset(self._accounts)
            current = self._stream
            if wanted and (not self._healthy(current) or current is None or current.accounts != wanted):
                if current is not None and not self._healthy(current):
                    self.stats.stream_failures += 1
                    self._replace_watch_channel()  # a silent connection may be dead without anyone told
                opened = await self._open(wanted)
                if opened is None:
                    self.stats.stream_failures += 1
                    failures += 1
                    await asyncio.sleep(self._retry.backoff_s(failures))
                    continue
                failures = 0
                self._promote(opened)
            current = self._stream
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._changed.wait())]
            timeout = None
            if current is not None:
                waits.append(asyncio.ensure_future(self._ended(current)))
                timeout = max(current.alive_at + self._silence_s - self._monotonic(), 0.0) + 0.001
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            if self._changed.is_set():
                await asyncio.sleep(0.005)  # a burst of new accounts joins one new stream

    async def _ended(self, stream: _Stream) -> None:
        if stream.reader is not None:
            await asyncio.shield(stream.reader)

    async def _open(self, accounts: frozenset[str]) -> _Stream | None:
        """A new stream over `accounts`, once it has caught up; None when it failed or did not
        catch up in time."""
        interval = Duration()
        interval.FromNanoseconds(int(self._heartbeat_s * 1e9))
        request = pb.WatchEntitlementsRequest(account_ids=sorted(accounts),
                                              known_revisions=self._accounts.known_revisions(self._wall()),
                                              heartbeat_interval=interval)
        stub = entitlement_pb2_grpc.EntitlementServiceStub(self._watch_channel)
        stream = _Stream(accounts, stub.WatchEntitlements(request, metadata=self._metadata), self._monotonic())
        stream.reader = asyncio.get_running_loop().create_task(self._read(stream))
        catch_up_s = max(self._deadline_s, self._silence_s) + 0.005 * len(accounts)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.settled.wait(), catch_up_s)
        if not stream.synced:
            await self._end(stream)
            return None
        return stream

    def _promote(self, stream: _Stream) -> None:
        old, self._stream = self._stream, stream
        self._live = Liveness(stream.accounts, stream.alive_at)
        self.stats.streams_opened += 1
        if old is not None:
            self._closing.add(task := asyncio.get_running_loop().create_task(self._end(old)))
            task.add_done_callback(self._closing.discard)

    async def _end(self, stream: _Stream) -> None:
        stream.call.cancel()
        if stream.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await stream.reader

    def _replace_watch_channel(self) -> None:
        old, self._watch_channel = self._watch_channel, self._new_channel()
        self._closing.add(task := asyncio.get_running_loop().create_task(old.close()))
        task.add_done_callback(self._closing.discard)

    async def _read(self, stream: _Stream) -> None:
        try:
            async for message in stream.call:
                mono = self._monotonic()
                stream.alive_at = mono
                if stream is self._stream:
                    self._live.alive_at = mono
                if message.HasField("heartbeat_at"):
                    if not stream.synced:
                        stream.synced = True
                        stream.settled.set()
                    continue
                self._receive(message, mono)
        except grpc.aio.AioRpcError:
            pass  # the supervisor opens another
        except asyncio.CancelledError:
            pass
        finally:
            stream.ended = True
            stream.settled.set()
            if stream is self._stream:
                self._changed.set()

    def _receive(self, message: pb.WatchEntitlementsResponse, mono: float) -> None:
        entry = Entry(message.entitlements, spans_of(message.gate_schedule), mono)
        if self._accounts.put(entry):
            for queue in self._listeners.get(message.entitlements.account_id, ()):
                queue.put_nowait(message.entitlements)
