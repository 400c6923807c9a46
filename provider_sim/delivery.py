"""Webhook delivery: signed POSTs from a background queue per endpoint, retried with bounded
exponential backoff, shaped by `shaping` rules (hold, drop, duplicate, delay, stale signature).

API requests never wait for delivery: they hand events over and return. Each endpoint's queue is
sent in order, one request at a time; a failed attempt goes back to the tail after its backoff,
so later events overtake it, as they do at Stripe. `wait_idle` lets tests wait without sleeping."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from provider_sim.model import WebhookEndpoint
from provider_sim.shaping import Shaper
from provider_sim.signing import signature_header

log = structlog.get_logger("provider_sim.delivery")
PENDING = frozenset({"queued", "scheduled", "sending", "retrying"})
ORDERS = ("fifo", "reverse", "shuffle")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    timeout_s: float = 10.0

    def backoff(self, attempts: int) -> float:
        return float(min(self.initial_backoff_s * 2 ** (attempts - 1), self.max_backoff_s))


@dataclass
class Attempt:
    at: float
    signature_timestamp: int
    status: int | None
    error: str | None
    duration_ms: float


@dataclass
class Delivery:
    id: str
    event_id: str
    event_type: str
    endpoint_id: str
    url: str
    secret: str
    body: bytes
    copy: int = 1
    stale_s: int = 0
    state: str = "queued"
    attempts: list[Attempt] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "event": self.event_id, "type": self.event_type, "endpoint": self.endpoint_id,
            "url": self.url, "state": self.state, "copy": self.copy, "stale_seconds": self.stale_s,
            "attempts": [vars(a) for a in self.attempts],
        }


class Deliverer:
    def __init__(self, policy: RetryPolicy | None = None, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.policy = policy or RetryPolicy()
        self.shaper = Shaper()
        self.deliveries: dict[str, Delivery] = {}
        self._wall_clock = wall_clock
        self._ids = itertools.count(1)
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, event_id: str, event_type: str, endpoint: WebhookEndpoint, body: bytes, *,
               shaped: bool = True) -> list[Delivery]:
        """Hands one event's body for one endpoint over to delivery, as the shaping rules say."""
        plan = self.shaper.plan(endpoint.id, event_type) if shaped else None
        made = []
        for copy in range(1, (plan.copies if plan else 1) + 1):
            delivery = Delivery(id=f"dlv_{next(self._ids)}", event_id=event_id, event_type=event_type,
                                endpoint_id=endpoint.id, url=endpoint.url, secret=endpoint.secret, body=body,
                                copy=copy, stale_s=plan.stale_s if plan else 0)
            self.deliveries[delivery.id] = delivery
            if plan and (plan.hold or plan.drop):
                delivery.state = "held" if plan.hold else "dropped"
            elif plan and plan.delay_s:
                self._schedule(delivery, plan.delay_s, "scheduled")
            else:
                self._enqueue(delivery)
            made.append(delivery)
        self._settle()
        return made

    def release(self, order: str = "fifo", *, endpoint: str | None = None, event_type: str | None = None,
                seed: int | None = None) -> list[Delivery]:
        """Sends held and dropped deliveries now, in creation order, reversed or shuffled."""
        chosen = [d for d in self.deliveries.values() if d.state in ("held", "dropped")
                  and (endpoint is None or d.endpoint_id == endpoint)
                  and (event_type is None or d.event_type == event_type)]
        if order == "reverse":
            chosen.reverse()
        elif order == "shuffle":
            random.Random(seed).shuffle(chosen)
        for delivery in chosen:
            self._enqueue(delivery)
        self._settle()
        return chosen

    def counts(self) -> dict[str, int]:
        found = {state: 0 for state in ("pending", "held", "dropped", "succeeded", "failed")}
        for delivery in self.deliveries.values():
            found["pending" if delivery.state in PENDING else delivery.state] += 1
        return found

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once nothing is queued, scheduled, being sent or awaiting a retry (held and dropped
        deliveries wait for a release and do not count); False after `timeout_s`."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._queues.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def reset(self) -> None:
        await self.close()
        self.deliveries.clear()
        self.shaper = Shaper()
        self._settle()

    def _settle(self) -> None:
        if any(d.state in PENDING for d in self.deliveries.values()):
            self._idle.clear()
        else:
            self._idle.set()

    def _spawn(self, work: Any) -> None:
        # Background work outlives the request that started it: it must not log that request's id.
        context = contextvars.copy_context()
        context.run(structlog.contextvars.unbind_contextvars, "request_id")
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _enqueue(self, delivery: Delivery) -> None:
        delivery.state = "queued"
        queue = self._queues.get(delivery.endpoint_id)
        if queue is None:
            queue = self._queues[delivery.endpoint_id] = asyncio.Queue()
            self._spawn(self._work(queue))
        queue.put_nowait(delivery)

    def _schedule(self, delivery: Delivery, after_s: float, state: str) -> None:
        delivery.state = state
        self._spawn(self._later(delivery, after_s))

    async def _later(self, delivery: Delivery, after_s: float) -> None:
        await asyncio.sleep(after_s)
        if delivery.state in ("scheduled", "retrying"):
            self._enqueue(delivery)

    async def _work(self, queue: asyncio.Queue[Delivery]) -> None:
        while True:
            delivery = await queue.get()
            if delivery.state == "queued":
                await self._send(delivery)

    async def _post(self, delivery: Delivery, header: str) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header,
                   "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)", "Cache-Control": "no-cache",
                   "Accept": "*/*; q=0.5, application/xml"}
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_s)
        async with self._session.post(delivery.url, data=delivery.body, headers=headers, timeout=timeout) as answer:
            await answer.read()
            return answer.status

    async def _send(self, delivery: Delivery) -> None:
        delivery.state = "sending"
        timestamp = int(self._wall_clock()) - delivery.stale_s
        started = time.perf_counter()
        status, error = None, None
        try:
            status = await self._post(delivery, signature_header(delivery.secret, timestamp, delivery.body))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        delivery.attempts.append(Attempt(self._wall_clock(), timestamp, status, error, duration_ms))
        if status is not None and 200 <= status < 300:
            delivery.state = "succeeded"
        elif len(delivery.attempts) >= self.policy.max_attempts:
            delivery.state = "failed"
        else:
            self._schedule(delivery, self.policy.backoff(len(delivery.attempts)), "retrying")
        log.info("webhook_delivery", delivery_id=delivery.id, provider_event_id=delivery.event_id,
                 event_type=delivery.event_type, endpoint=delivery.endpoint_id, attempt=len(delivery.attempts),
                 status=status, error=error, outcome=delivery.state, duration_ms=duration_ms)
        self._settle()
