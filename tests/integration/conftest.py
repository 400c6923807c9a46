"""An entitlement service started in-process on a real socket (port 0) over its own database; and
the checkout service in front of it, over real sockets too, with a fake provider."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import checkout_service.app
from checkout_service.catalog_apply import apply
from checkout_service.cli import read_catalog
from checkout_service.settings import Settings as CheckoutSettings
from checkout_service.stripe.signature import sign
from entitlement_service.app import Running, start
from entitlement_service.settings import Settings
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from service_runtime.tracing import NO_TRACING, Tracing
from tests.support.fake_provider import FakeProvider
from tests.support.ports import free_port
from tests.support.provider import EXAMPLE_CATALOG, example_catalog_request
from tests.support.tokens import SERVICE_TOKENS, TOKENS, bearer
from tests.support.waiting import eventually

SECRET = "whsec_checkout_tests"
PRODUCT = {"Authorization": f"Bearer {TOKENS[Role.PRODUCT]}"}


@dataclass
class Client:
    """A stub that presents one role's token on every call."""

    running: Running
    channel: grpc.aio.Channel

    def as_role(self, role: Role) -> entitlement_pb2_grpc.EntitlementServiceStub:
        return _Authed(entitlement_pb2_grpc.EntitlementServiceStub(self.channel), bearer(role))  # type: ignore[return-value]

    @property
    def checkout(self) -> entitlement_pb2_grpc.EntitlementServiceStub:
        return self.as_role(Role.CHECKOUT)

    @property
    def product(self) -> entitlement_pb2_grpc.EntitlementServiceStub:
        return self.as_role(Role.PRODUCT)

    @property
    def operator(self) -> entitlement_pb2_grpc.EntitlementServiceStub:
        return self.as_role(Role.OPERATOR)

    async def apply(self, *events: pb.ProviderEvent) -> list[pb.EventResult]:
        reply = await self.checkout.ApplyProviderEvents(pb.ApplyProviderEventsRequest(events=list(events)))
        return list(reply.results)

    async def entitlements(self, account_id: str = "acct_1", as_of: object = None) -> pb.Entitlements:
        request = pb.GetEntitlementsRequest(account_id=account_id, as_of=as_of)  # type: ignore[arg-type]
        return (await self.product.GetEntitlements(request)).entitlements


class _Authed:
    def __init__(self, stub: object, metadata: tuple[tuple[str, str]]) -> None:
        self._stub, self._metadata = stub, metadata

    def __getattr__(self, name: str) -> Callable[..., Awaitable[object]]:
        method = getattr(self._stub, name)
        return lambda request, **kw: method(request, metadata=self._metadata, **kw)


async def start_service(database_url: str, port: int = 0, env: Mapping[str, str] | None = None,
                        tracing: Tracing = NO_TRACING) -> Client:
    settings = Settings.from_env({"DATABASE_URL": database_url, "SERVICE_TOKENS": SERVICE_TOKENS,
                                  "ENTITLEMENT_GRPC_ADDR": f"127.0.0.1:{port}",
                                  "ENTITLEMENT_METRICS_ADDR": "127.0.0.1:0", **(env or {})})
    running = await start(settings, tracing)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    health = health_pb2_grpc.HealthStub(channel)

    async def serving() -> bool:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False  # still binding, or a restart on the same port not yet reachable
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    await eventually(serving, what="the entitlement service to serve")
    return Client(running, channel)


async def stop_service(client: Client) -> None:
    await client.channel.close()
    await client.running.stop(0)


@asynccontextmanager
async def catalog_service(database_url: str) -> AsyncIterator[Client]:
    """A running service over `database_url` whose catalog is the example catalog."""
    client = await start_service(database_url)
    try:
        await client.operator.UpsertCatalog(example_catalog_request())
        yield client
    finally:
        await stop_service(client)


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[Client]:
    """A running service whose catalog is the example catalog."""
    async with catalog_service(database_url) as client:
        yield client


@pytest.fixture
async def two_replicas(database_url: str) -> AsyncIterator[tuple[Client, Client]]:
    """Two services over one database (the example catalog loaded once)."""
    first = await start_service(database_url)
    second = await start_service(database_url)
    await first.operator.UpsertCatalog(example_catalog_request())
    yield first, second
    await stop_service(first)
    await stop_service(second)


@dataclass
class Stack:
    entitlement: Client
    checkout: checkout_service.app.Running
    provider: FakeProvider
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.checkout.http_port}{path}"

    async def post(self, path: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.post(self.url(path), json=body, headers={**PRODUCT, **(headers or {})}) as r:
            return r.status, await r.json()

    async def webhook(self, event: dict[str, Any], secret: str = SECRET,
                      headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = json.dumps(event).encode()
        at = int(time.time())
        signed = {"Stripe-Signature": f"t={at},v1={sign(raw, secret, at)}", "Content-Type": "application/json"}
        async with self.http.post(self.url("/webhooks/stripe"), data=raw, headers={**signed, **(headers or {})}) as r:
            return r.status, await r.json()


async def start_checkout(entitlement: Client, provider: FakeProvider, env: Mapping[str, str] | None = None,
                         tracing: Tracing = NO_TRACING) -> checkout_service.app.Running:
    """The checkout service in front of `entitlement`, on ports of its own; `env` overrides its settings."""
    settings = CheckoutSettings.from_env({
        "SERVICE_TOKENS": SERVICE_TOKENS, "STRIPE_API_KEY": "sk_test_fake",
        "STRIPE_WEBHOOK_SECRETS": f"whsec_old,{SECRET}",
        "ENTITLEMENT_TARGET": f"127.0.0.1:{entitlement.running.port}", "CHECKOUT_GRPC_ADDR": "127.0.0.1:0",
        "CHECKOUT_HTTP_ADDR": "127.0.0.1:0", **(env or {})})
    return await checkout_service.app.start(settings, provider, tracing)


@asynccontextmanager
async def open_stack(database_url: str, *, entitlement_tracing: Tracing = NO_TRACING,
                     checkout_tracing: Tracing = NO_TRACING) -> AsyncIterator[Stack]:
    """Both services, the example catalog applied to the fake provider and loaded, and an HTTP client."""
    entitlement = await start_service(database_url, free_port(), tracing=entitlement_tracing)
    provider = FakeProvider()
    checkout = await start_checkout(entitlement, provider, tracing=checkout_tracing)
    stack = None
    try:
        await apply(read_catalog(EXAMPLE_CATALOG), provider, entitlement.operator)  # type: ignore[arg-type]
        async with aiohttp.ClientSession() as http:
            stack = Stack(entitlement, checkout, provider, http)
            yield stack
    finally:
        await (stack.checkout if stack is not None else checkout).stop(0)  # a test may have restarted either
        await stop_service(stack.entitlement if stack is not None else entitlement)
