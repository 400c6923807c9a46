"""The load balancer in front of the checkout replicas: the provider delivers every webhook here
and each delivery goes to the next replica in turn. A replica that cannot be reached (killed, not
yet listening) is skipped for the other one, as a load balancer retries a refused connection; a
replica's own answer (a 503 while its entitlement service is down, say) goes back to the provider
as it is, and the provider delivers again later.

Deliveries of the events the run decided never to deliver are answered 503 and never forwarded,
however often the provider tries: it gives up after its last attempt, and only the reconciler's
replay can bring them in. Every delivery is recorded, with the event's subscription and time, to
count what arrived out of order."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

FORWARDED_HEADERS = ("Content-Type", "Stripe-Signature", "User-Agent")


@dataclass(frozen=True)
class Arrival:
    event_id: str
    subscription_id: str
    created: int
    status: int  # the answer the provider got; 0 when no replica could be reached


@dataclass
class Relay:
    upstreams: list[str]  # each replica's webhook URL
    lost: set[str] = field(default_factory=set)  # event ids never to be delivered
    arrivals: list[Arrival] = field(default_factory=list)
    refused: int = 0  # deliveries of lost events answered 503
    _turn: itertools.count[int] = field(default_factory=itertools.count)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self, port: int) -> str:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/webhooks/stripe", self._deliver)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return f"http://127.0.0.1:{port}/webhooks/stripe"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _deliver(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id, subscription_id, created = _about(body)
        if event_id in self.lost:
            self.refused += 1
            return web.json_response({"error": "not delivered (the run withholds this event)"}, status=503)
        headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
        first = next(self._turn)
        for attempt in range(len(self.upstreams)):
            upstream = self.upstreams[(first + attempt) % len(self.upstreams)]
            try:
                assert self._session is not None
                async with self._session.post(upstream, data=body, headers=headers) as answer:
                    text = await answer.read()
                    self.arrivals.append(Arrival(event_id, subscription_id, created, answer.status))
                    return web.Response(status=answer.status, body=text, content_type="application/json")
            except (aiohttp.ClientConnectionError, TimeoutError):
                continue  # killed or restarting: the other replica takes it
        self.arrivals.append(Arrival(event_id, subscription_id, created, 0))
        return web.json_response({"error": "no checkout replica answered"}, status=502)


def _about(body: bytes) -> tuple[str, str, int]:
    """The event's id, the subscription it is about (if any) and its provider time."""
    try:
        event: Any = json.loads(body)
        obj = event["data"]["object"]
        if obj.get("object") == "subscription":
            subscription = obj["id"]
        else:
            parent = (obj.get("parent") or {}).get("subscription_details") or {}
            subscription = parent.get("subscription") or obj.get("subscription") or ""
        return str(event["id"]), str(subscription or ""), int(event["created"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", "", 0


def out_of_order(arrivals: list[Arrival]) -> int:
    """Events first answered 2xx after an event of the same subscription with a later provider
    time had been: what the service may count as late (it counts those still applied)."""
    latest: dict[str, int] = {}
    seen: set[str] = set()
    found = 0
    for arrival in arrivals:
        if not (200 <= arrival.status < 300) or not arrival.subscription_id or arrival.event_id in seen:
            continue
        seen.add(arrival.event_id)
        if arrival.created < latest.get(arrival.subscription_id, 0):
            found += 1
        latest[arrival.subscription_id] = max(latest.get(arrival.subscription_id, 0), arrival.created)
    return found
