"""A real simulator on port 0 in its own thread and event loop (built with `create_app`, as
`python -m provider_sim` builds it), so synchronous SDK calls, asynchronous SDK calls and webhook
receivers in the test's own loop all talk to it over real sockets."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import stripe
from aiohttp import web

from provider_sim.app import create_app
from provider_sim.clock import Clock
from provider_sim.delivery import Deliverer, RetryPolicy
from provider_sim.sim import Options
from provider_sim.store import State
from service_runtime.http_probes import start_site

API_KEY = "sk_test_provider_sim_tests"
FAST_RETRIES = RetryPolicy(max_attempts=5, initial_backoff_s=0.01, max_backoff_s=0.04, timeout_s=2.0)


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are answers to look at (the hosted pages send browsers on), not to follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirects)


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def encode(params: Mapping[str, Any]) -> str:
    """Form-encodes nested parameters exactly as the stripe SDK does."""
    from stripe._encode import _api_encode

    return urlencode(list(_api_encode(params)))


class SimServer:
    def __init__(self, options: Options | None = None, retry: RetryPolicy = FAST_RETRIES) -> None:
        self.options = options or Options()
        self.retry = retry
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.state = State()
        self.clock = Clock()
        self.deliverer: Deliverer | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self.deliverer = Deliverer(self.retry)
        app = create_app(self.state, self.clock, self.deliverer, self.options)
        self.runner, self.port = await start_site(app, "127.0.0.1", 0)

    def start(self) -> SimServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None, *,
                key: str | None = API_KEY, headers: Mapping[str, str] | None = None,
                json_body: Mapping[str, Any] | None = None, raw: bytes | None = None) -> Answer:
        """A raw HTTP request: form-encoded parameters (in the query for GET and DELETE), JSON, or
        `raw` bytes sent as a form body."""
        query, data = "", None
        all_headers = dict(headers or {})
        if key:
            all_headers["Authorization"] = f"Bearer {key}"
        if raw is not None:
            data = raw
            all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        elif params and method in ("GET", "DELETE"):
            query = "?" + encode(params)
        elif params:
            data = encode(params).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        call = urllib.request.Request(self.url + path + query, data=data, method=method, headers=all_headers)
        try:
            with OPENER.open(call, timeout=10) as answer:
                return Answer(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, dict(error.headers), error.read())

    def control(self, path: str, body: Mapping[str, Any] | None = None, *, method: str = "POST") -> Any:
        """A control call that must succeed; answers its JSON."""
        answer = self.request(method, path, key=None, json_body=body if method == "POST" else None,
                              params=body if method == "GET" else None)
        assert answer.status == 200, (path, answer.status, answer.body)
        return answer.json()

    async def acontrol(self, path: str, body: Mapping[str, Any] | None = None, *, method: str = "POST") -> Any:
        """The same from an async test, without blocking the test's loop (where receivers run)."""
        async with aiohttp.ClientSession() as session:
            kwargs: dict[str, Any] = {"json": body or {}} if method == "POST" else {"params": body or {}}
            async with session.request(method, self.url + path, **kwargs) as answer:
                payload = await answer.json()
                assert answer.status == 200, (path, answer.status, payload)
                return payload

    async def wait_idle(self, timeout_ms: int = 5000) -> dict[str, Any]:
        found: dict[str, Any] = await self.acontrol("/_sim/delivery/wait", {"timeout_ms": timeout_ms})
        assert found["idle"], found
        return found

    def stripe_client(self, *, asynchronous: bool = False) -> stripe.StripeClient:
        http_client = stripe.AIOHTTPClient() if asynchronous else stripe.RequestsClient()
        return stripe.StripeClient(API_KEY, base_addresses={"api": self.url}, http_client=http_client,
                                   max_network_retries=0)


@dataclass
class Delivery:
    headers: Mapping[str, str]
    body: bytes

    @property
    def event(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook endpoint in the test's loop: records every request and answers the next status in
    `script` (then 200)."""

    script: list[int] = field(default_factory=list)
    received: list[Delivery] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Delivery(dict(request.headers), await request.read()))
        return web.Response(status=self.script.pop(0) if self.script else 200)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/webhooks", self._handle)
        self.runner, self.port = await start_site(app, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def types(self) -> list[str]:
        return [d.event["type"] for d in self.received]


async def eventually(check: Any, *, timeout_s: float = 5.0, what: str = "condition") -> Any:
    """Polls `check()` (sync) until truthy; tests never sleep to synchronize."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
