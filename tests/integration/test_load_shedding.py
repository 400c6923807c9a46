"""Caps on work in progress, over real sockets: the checkout service's HTTP port sheds what is
beyond its cap with 503 and Retry-After (probes aside, and counted), and each service's gRPC port
refuses a call beyond its cap with RESOURCE_EXHAUSTED. The requests held in flight wait on a
provider the test blocks, or are WatchEntitlements streams."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
import grpc
import pytest

from checkout_service.app import Running, start
from checkout_service.settings import Settings
from selfserve.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.integration.conftest import Client, start_service, stop_service
from tests.support.fake_provider import FakeProvider
from tests.support.tokens import SERVICE_TOKENS, TOKENS, bearer
from tests.support.waiting import eventually

PRODUCT = {"Authorization": f"Bearer {TOKENS[Role.PRODUCT]}"}
PORTAL = {"account_id": "acct_1", "return_url": "https://app.example/account"}


class HeldProvider(FakeProvider):
    """Portal sessions wait until the test releases them."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0
        self.release = asyncio.Event()

    async def create_portal_session(self, customer_id: str, return_url: str) -> str:
        self.held += 1
        await self.release.wait()
        return await super().create_portal_session(customer_id, return_url)


@dataclass
class Stack:
    entitlement: Client
    checkout: Running
    provider: HeldProvider
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.checkout.http_port}{path}"

    async def portal(self) -> tuple[int, Mapping[str, str], object]:
        async with self.http.post(self.url("/v1/portal/sessions"), json=PORTAL, headers=PRODUCT) as r:
            return r.status, r.headers, await r.json()

    async def shed_total(self) -> float:
        async with self.http.get(self.url("/metrics")) as r:
            assert r.status == 200
            found = re.search(r"^http_requests_shed_total (\S+)$", await r.text(), re.MULTILINE)
        assert found, "http_requests_shed_total is exported"
        return float(found.group(1))

    def held(self, count: int) -> object:
        async def check() -> bool:
            return self.provider.held >= count
        return check


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    entitlement = await start_service(database_url)
    # An account with a provider customer, so a portal session reaches the provider.
    await entitlement.checkout.LinkProviderCustomer(
        pb.LinkProviderCustomerRequest(account_id="acct_1", provider_customer_id="cus_1"))
    provider = HeldProvider()
    settings = Settings.from_env({
        "SERVICE_TOKENS": SERVICE_TOKENS, "STRIPE_API_KEY": "sk_test_fake", "STRIPE_WEBHOOK_SECRETS": "whsec_x",
        "ENTITLEMENT_TARGET": f"127.0.0.1:{entitlement.running.port}", "CHECKOUT_GRPC_ADDR": "127.0.0.1:0",
        "CHECKOUT_HTTP_ADDR": "127.0.0.1:0", "CHECKOUT_HTTP_MAX_IN_FLIGHT": "2", "CHECKOUT_GRPC_MAX_IN_FLIGHT": "1"})
    checkout = await start(settings, provider)
    async with aiohttp.ClientSession() as http:
        yield Stack(entitlement, checkout, provider, http)
        provider.release.set()
        await checkout.stop(0)
    await stop_service(entitlement)


async def test_a_request_beyond_the_http_cap_is_shed_with_503_and_retry_after_and_counted(stack: Stack) -> None:
    shed_before = await stack.shed_total()
    held = [asyncio.create_task(stack.portal()) for _ in range(2)]
    await eventually(stack.held(2), what="two portal sessions to wait on the provider")

    async with asyncio.timeout(10):  # answered at once, not queued behind the two
        status, headers, body = await stack.portal()
    assert status == 503 and headers["Retry-After"] == "1"
    assert body == {"error": {"code": "overloaded", "message": "too many requests in progress; retry shortly"}}
    assert stack.provider.held == 2  # refused before it reached anything
    assert await stack.shed_total() == shed_before + 1
    for probe in ("/healthz", "/readyz"):  # never shed
        async with stack.http.get(stack.url(probe)) as r:
            assert r.status == 200, probe

    stack.provider.release.set()
    assert [status for status, _, _ in await asyncio.gather(*held)] == [201, 201]
    status, _, body = await stack.portal()  # room again
    assert status == 201 and str(body["url"]).startswith("https://portal.test/cus_1")  # type: ignore[index]
    assert await stack.shed_total() == shed_before + 1


async def test_a_call_beyond_the_checkout_grpc_cap_is_refused_with_resource_exhausted(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.checkout.port}") as channel:
        stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
        request = checkout_pb2.CreatePortalSessionRequest(**PORTAL)
        held = stub.CreatePortalSession(request, metadata=bearer(Role.PRODUCT))  # under way at once
        await eventually(stack.held(1), what="a portal session to wait on the provider")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreatePortalSession(request, metadata=bearer(Role.PRODUCT), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stack.provider.held == 1
        stack.provider.release.set()
        assert (await held).url.startswith("https://portal.test/cus_1")


async def test_open_watch_streams_count_against_the_entitlement_grpc_cap(database_url: str) -> None:
    entitlement = await start_service(database_url, env={"ENTITLEMENT_GRPC_MAX_IN_FLIGHT": "2"})
    try:
        stub = entitlement_pb2_grpc.EntitlementServiceStub(entitlement.channel)
        watches = [stub.WatchEntitlements(pb.WatchEntitlementsRequest(account_id=f"acct_{n}"),
                                          metadata=bearer(Role.PRODUCT)) for n in range(2)]
        for watch in watches:
            assert (await watch.read()).entitlements.revision == 0  # open, and answered
        gate = pb.CheckGateRequest(account_id="acct_1", gate="export")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CheckGate(gate, metadata=bearer(Role.PRODUCT), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        watches[0].cancel()

        async def answered() -> bool:
            try:
                await stub.CheckGate(gate, metadata=bearer(Role.PRODUCT))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
            return True

        await eventually(answered, what="a cancelled stream's place to be free again")
        watches[1].cancel()
    finally:
        await stop_service(entitlement)
