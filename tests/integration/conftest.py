"""An entitlement service started in-process on a real socket (port 0) over its own database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from entitlement_service.app import Running, start
from entitlement_service.settings import Settings
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.support.provider import example_catalog_request
from tests.support.tokens import SERVICE_TOKENS, bearer
from tests.support.waiting import eventually


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


async def start_service(database_url: str, port: int = 0, env: Mapping[str, str] | None = None) -> Client:
    settings = Settings.from_env({"DATABASE_URL": database_url, "SERVICE_TOKENS": SERVICE_TOKENS,
                                  "ENTITLEMENT_GRPC_ADDR": f"127.0.0.1:{port}",
                                  "ENTITLEMENT_METRICS_ADDR": "127.0.0.1:0", **(env or {})})
    running = await start(settings)
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
        await client.checkout.UpsertCatalog(example_catalog_request())
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
    await first.checkout.UpsertCatalog(example_catalog_request())
    yield first, second
    await stop_service(first)
    await stop_service(second)
