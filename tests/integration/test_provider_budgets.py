"""Budgets on provider calls: the official `stripe` SDK against the simulator over HTTP, the
simulator made slow for the test. One request waits at most STRIPE_TIMEOUT_S, it is tried again
at most STRIPE_MAX_RETRIES times, and the whole call ends by STRIPE_DEADLINE_S with UNAVAILABLE
(503 over HTTP), however slow the provider stays."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from checkout_service.app import start
from checkout_service.catalog_apply import apply
from checkout_service.cli import read_catalog
from checkout_service.errors import Unavailable
from checkout_service.service import provider_call
from checkout_service.settings import Settings
from checkout_service.stripe.gateway import StripeGateway
from service_runtime.auth import Role
from tests.integration.conftest import start_service, stop_service
from tests.provider_sim.harness import API_KEY, SimServer
from tests.support.provider import EXAMPLE_CATALOG
from tests.support.tokens import SERVICE_TOKENS, TOKENS

# Far longer than any budget below: a call that waited for the provider would show it.
SLOW_MS = 2000


@pytest.fixture
def sim() -> Iterator[SimServer]:
    server = SimServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def product(sim: SimServer) -> AsyncIterator[str]:
    gateway = StripeGateway(API_KEY, sim.url, timeout_s=5, max_retries=0, deadline_s=5)
    try:
        created = await gateway.create_product({"id": "pro", "name": "Pro"})
    finally:
        await gateway.close()
    yield str(created["id"])


async def timed_retrieve(gateway: StripeGateway, product_id: str) -> tuple[object, float]:
    started = time.monotonic()
    try:
        return await provider_call(gateway.retrieve_product(product_id)), time.monotonic() - started
    except Unavailable as exc:
        return exc, time.monotonic() - started
    finally:
        await gateway.close()


async def test_a_request_slower_than_its_timeout_is_tried_again_and_the_call_succeeds(
    sim: SimServer, product: str,
) -> None:
    await sim.acontrol("/_sim/latency", {"delay_ms": SLOW_MS, "times": 1})
    found, took = await timed_retrieve(StripeGateway(API_KEY, sim.url, timeout_s=0.3, max_retries=1, deadline_s=5),
                                       product)
    assert isinstance(found, dict) and found["id"] == "pro"
    # 0.3 s for the slow attempt, the SDK's backoff (at least 0.5 s), then a quick answer.
    assert took < SLOW_MS / 1000, took
    assert await sim.acontrol("/_sim/latency", method="GET") == {"delay_ms": SLOW_MS, "times": 0, "delayed": 1}


async def test_a_provider_that_stays_slow_is_tried_max_retries_more_times_then_unavailable(
    sim: SimServer, product: str,
) -> None:
    await sim.acontrol("/_sim/latency", {"delay_ms": SLOW_MS})
    failed, took = await timed_retrieve(StripeGateway(API_KEY, sim.url, timeout_s=0.2, max_retries=1, deadline_s=10),
                                        product)
    assert isinstance(failed, Unavailable), failed
    assert took < SLOW_MS / 1000, took
    assert (await sim.acontrol("/_sim/latency", method="GET"))["delayed"] == 2  # the request and one retry


async def test_the_deadline_bounds_the_whole_call_retries_included(sim: SimServer, product: str) -> None:
    await sim.acontrol("/_sim/latency", {"delay_ms": SLOW_MS})
    failed, took = await timed_retrieve(StripeGateway(API_KEY, sim.url, timeout_s=0.3, max_retries=5, deadline_s=0.6),
                                        product)
    assert isinstance(failed, Unavailable) and "no answer within 0.6 s" in str(failed), failed
    assert 0.6 <= took < 1.5, took  # not five retries' worth
    assert (await sim.acontrol("/_sim/latency", method="GET"))["delayed"] == 1  # the backoff outlasted it


async def test_a_slow_provider_answers_a_checkout_503_within_the_budget(sim: SimServer, database_url: str) -> None:
    entitlement = await start_service(database_url)
    settings = Settings.from_env({
        "SERVICE_TOKENS": SERVICE_TOKENS, "STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": sim.url,
        "STRIPE_WEBHOOK_SECRETS": "whsec_x", "ENTITLEMENT_TARGET": f"127.0.0.1:{entitlement.running.port}",
        "CHECKOUT_GRPC_ADDR": "127.0.0.1:0", "CHECKOUT_HTTP_ADDR": "127.0.0.1:0",
        "STRIPE_TIMEOUT_S": "0.2", "STRIPE_MAX_RETRIES": "1", "STRIPE_DEADLINE_S": "1"})
    checkout = await start(settings)
    try:
        assert checkout.gateway is not None  # the service's own, from its settings
        await apply(read_catalog(EXAMPLE_CATALOG), checkout.gateway, entitlement.operator)
        await sim.acontrol("/_sim/latency", {"delay_ms": SLOW_MS})
        body = {"account_id": "acct_1", "items": [{"price": "pro_monthly", "quantity": 1}],
                "success_url": "https://app.example/done", "cancel_url": "https://app.example/pricing"}
        started = time.monotonic()
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{checkout.http_port}/v1/checkout/sessions", json=body,
                headers={"Authorization": f"Bearer {TOKENS[Role.PRODUCT]}"}) as answer:
            status, reply = answer.status, await answer.json()
        took = time.monotonic() - started
        assert status == 503 and reply["error"]["code"] == "unavailable", reply
        assert "the provider is unavailable" in reply["error"]["message"]
        assert took < SLOW_MS / 1000, took
    finally:
        await checkout.stop(0)
        await stop_service(entitlement)
