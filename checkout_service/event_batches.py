"""Provider events on their way to the entitlement service, sent together when they arrive
together: a burst of webhooks becomes a few ApplyProviderEvents calls (one transaction each on
the other side) instead of one call per webhook.

`send` starts its call when it is called, before the event loop turns again, and returns what to
await for the results. When a call is answered, its slot is freed and the next call sent before
its webhooks are answered: answering them takes the loop for a while (for a full call, longer
than sending the next), and the entitlement service would wait.

An event that arrives while fewer than `max_in_flight` calls are outstanding goes at once, with
the events whose webhooks were read in the same turn of the event loop (its caller lets the loop
turn once, microseconds), or alone when there are none, carrying its caller's request id. The
others wait for the next free call and share it, up to `max_batch` events. Each caller gets its
own event's result. Without that one turn, a call freed under load went out with the first
webhook of the burst its answers set off, and the rest of the burst waited for the next free
call: a quarter of the calls carried one event.

When a shared call fails, what happens next depends on why. Refused as invalid (one event lacks
what every event needs; the message names it, `events[2].created is required`), its events are
sent again one call each, so every webhook is answered for its own event alone. Any other failure,
above all the entitlement service being down, slow or overloaded (`Unavailable`), fails every
caller of the call at once with that same error: sending its events one by one would multiply the
calls to a service that cannot answer the ones it has. Their webhooks answer 503 and the provider
delivers them again later."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence

from checkout_service.errors import InvalidRequest, Unavailable
from selfserve.entitlement.v1 import entitlement_pb2 as pb

Send = Callable[[Sequence[pb.ProviderEvent]], Awaitable[Sequence[pb.EventResult]]]


class EventBatcher:
    def __init__(self, send: Send, *, max_batch: int = 24, max_in_flight: int = 2) -> None:
        self._send, self._max_batch, self._max_in_flight = send, max_batch, max_in_flight
        self._waiting: list[tuple[pb.ProviderEvent, asyncio.Future[pb.EventResult]]] = []
        self._in_flight = 0
        self._shared: set[asyncio.Task[None]] = set()
        # The events joining the call about to go, while its first caller lets the loop turn once.
        self._joining: list[tuple[pb.ProviderEvent, asyncio.Future[pb.EventResult]]] | None = None

    async def apply(self, event: pb.ProviderEvent) -> pb.EventResult:
        result: asyncio.Future[pb.EventResult]
        if self._joining is not None and len(self._joining) < self._max_batch - 1:
            result = asyncio.get_running_loop().create_future()
            self._joining.append((event, result))
            return await result
        if self._in_flight < self._max_in_flight and not self._waiting:
            self._in_flight += 1
            joining = self._joining = []
            try:
                await asyncio.sleep(0)  # the webhooks read in this same turn of the loop join the call
            except BaseException:  # this caller went away: those that joined go without it
                self._joining = None
                if joining:
                    self._share(joining)
                else:
                    self._call_done()
                raise
            self._joining = None
            if not joining:
                # Nothing to share the call with: it goes now, carrying this caller's request id.
                try:
                    return (await self._send([event]))[0]
                finally:
                    self._call_done()
            result = asyncio.get_running_loop().create_future()
            self._share([(event, result), *joining])
            return await result
        result = asyncio.get_running_loop().create_future()
        self._waiting.append((event, result))
        return await result

    def _share(self, batch: list[tuple[pb.ProviderEvent, asyncio.Future[pb.EventResult]]]) -> None:
        """Sends `batch` now on a call already counted in flight. A shared call belongs to no one
        caller: it is sent, and awaited, outside every caller's context."""
        context = contextvars.Context()
        try:
            answer = context.run(self._send, [event for event, _ in batch])
        except Exception as exc:  # the call could not even start: its callers learn why
            answer = _raise(exc)
        task = asyncio.create_task(self._call(batch, answer), context=context)
        self._shared.add(task)
        task.add_done_callback(self._shared.discard)

    def _call_done(self) -> None:
        self._in_flight -= 1
        while self._waiting and self._in_flight < self._max_in_flight:
            batch, self._waiting = self._waiting[:self._max_batch], self._waiting[self._max_batch:]
            self._in_flight += 1
            self._share(batch)

    async def _call(self, batch: list[tuple[pb.ProviderEvent, asyncio.Future[pb.EventResult]]],
                    answer: Awaitable[Sequence[pb.EventResult]]) -> None:
        freed = False
        try:
            try:
                outcome: Sequence[pb.EventResult] | Exception = await answer
            except Exception as exc:
                if len(batch) > 1 and _one_event_to_blame(exc):  # each sent alone, on this call's slot
                    await asyncio.gather(*(self._alone(event, waiter) for event, waiter in batch))
                    return
                outcome = exc
            freed = True
            self._call_done()  # the next call leaves before these webhooks are answered
            results: Sequence[pb.EventResult | Exception] = (
                [outcome] * len(batch) if isinstance(outcome, Exception) else outcome)
            for (_, waiter), result in zip(batch, results, strict=True):
                _settle(waiter, result)
        finally:
            for _, waiter in batch:  # only when the call itself was cancelled, at shutdown
                _settle(waiter, Unavailable("stopped before the entitlement service answered"))
            if not freed:
                self._call_done()

    async def _alone(self, event: pb.ProviderEvent, waiter: asyncio.Future[pb.EventResult]) -> None:
        try:
            _settle(waiter, (await self._send([event]))[0])
        except Exception as exc:
            _settle(waiter, exc)


async def _raise(exc: Exception) -> Sequence[pb.EventResult]:
    raise exc


def _one_event_to_blame(exc: Exception) -> bool:
    """Whether sending a failed call's events one by one can help: only when the entitlement service
    refused the call for one event's sake (INVALID_ARGUMENT, which names it; nothing was applied)."""
    return isinstance(exc, InvalidRequest)


def _settle(waiter: asyncio.Future[pb.EventResult], outcome: pb.EventResult | BaseException) -> None:
    if waiter.done():  # its caller went away
        return
    if isinstance(outcome, BaseException):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)
