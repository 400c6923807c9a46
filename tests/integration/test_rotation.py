"""Rotation drills: a new token or webhook secret is accepted beside the old one while callers
move to it, then the old one is refused; at no step is a caller holding the current one turned away.

Each step restarts a service with its new settings, as a rolling restart of a deployment does."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import grpc
import pytest

from checkout_service.app import Running as CheckoutRunning
from checkout_service.catalog_apply import apply
from checkout_service.cli import read_catalog
from checkout_service.stripe.signature import sign
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.integration.conftest import Client, Stack, open_stack, start_checkout, start_service, stop_service
from tests.support.fake_provider import FakeProvider
from tests.support.ports import free_port
from tests.support.provider import EXAMPLE_CATALOG
from tests.support.tokens import TOKENS
from tests.support.waiting import eventually

PRODUCT_OLD, PRODUCT_NEW = "product-token-before-rotation-0001", "product-token-after-rotation-0002"
CHECKOUT_OLD, CHECKOUT_NEW = "checkout-token-before-rotation-0001", "checkout-token-after-rotation-0002"
OPERATOR = TOKENS[Role.OPERATOR]


def digests(*entries: tuple[Role, str]) -> str:
    """`SERVICE_TOKENS` as a deployment gives it: every token by its SHA-256 digest alone."""
    return ",".join(f"{role.value}:sha256:{hashlib.sha256(token.encode()).hexdigest()}" for role, token in entries)


async def grpc_answer(client: Client, token: str) -> grpc.StatusCode:
    stub = entitlement_pb2_grpc.EntitlementServiceStub(client.channel)
    try:
        await stub.GetEntitlements(pb.GetEntitlementsRequest(account_id="acct_1"),
                                   metadata=(("authorization", f"Bearer {token}"),), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def http_answer(http: aiohttp.ClientSession, checkout: CheckoutRunning, token: str) -> int:
    """The catalog through the checkout service: its own check of the product token, then its call
    to the entitlement service with the token it presents."""
    url = f"http://127.0.0.1:{checkout.http_port}/v1/catalog?account_id=acct_1"
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status


class Deployment:
    """One entitlement service and one checkout service over a database, restarted one at a time."""

    def __init__(self, database_url: str, http: aiohttp.ClientSession) -> None:
        self.database_url, self.http, self.port = database_url, http, free_port()
        self.provider = FakeProvider()
        self.entitlement: Client | None = None
        self.checkout: CheckoutRunning | None = None

    async def roll_entitlement(self, *tokens: tuple[Role, str]) -> None:
        if self.entitlement is not None:
            await stop_service(self.entitlement)
        self.entitlement = await start_service(self.database_url, self.port,
                                               env={"SERVICE_TOKENS": digests(*tokens, (Role.OPERATOR, OPERATOR))})

    async def roll_checkout(self, presents: str, *tokens: tuple[Role, str]) -> None:
        assert self.entitlement is not None
        if self.checkout is not None:
            await self.checkout.stop(0)
        self.checkout = await start_checkout(self.entitlement, self.provider,
                                             env={"SERVICE_TOKENS": digests(*tokens), "ENTITLEMENT_TOKEN": presents})

    async def direct(self, token: str) -> grpc.StatusCode:
        assert self.entitlement is not None
        return await grpc_answer(self.entitlement, token)

    async def through_checkout(self, token: str) -> int:
        """Waits out the moment a restarted entitlement service takes to be reached again."""
        assert self.checkout is not None
        checkout = self.checkout

        async def settled() -> int | None:
            status = await http_answer(self.http, checkout, token)
            return None if status == 503 else status

        return await eventually(settled, what="the checkout service to reach the entitlement service")

    async def stop(self) -> None:
        if self.checkout is not None:
            await self.checkout.stop(0)
        if self.entitlement is not None:
            await stop_service(self.entitlement)


@pytest.fixture
async def deployment(database_url: str) -> AsyncIterator[Deployment]:
    async with aiohttp.ClientSession() as http:
        deployment = Deployment(database_url, http)
        try:
            yield deployment
        finally:
            await deployment.stop()


async def test_token_rotation_drill_old_and_new_together_then_the_old_refused(deployment: Deployment) -> None:
    ok, refused = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED
    await deployment.roll_entitlement((Role.PRODUCT, PRODUCT_OLD), (Role.CHECKOUT, CHECKOUT_OLD))
    assert deployment.entitlement is not None
    await apply(read_catalog(EXAMPLE_CATALOG), deployment.provider, deployment.entitlement.operator)  # type: ignore[arg-type]
    await deployment.roll_checkout(CHECKOUT_OLD, (Role.PRODUCT, PRODUCT_OLD))
    assert await deployment.direct(PRODUCT_OLD) == ok and await deployment.through_checkout(PRODUCT_OLD) == 200
    assert await deployment.direct(PRODUCT_NEW) == refused and await deployment.through_checkout(PRODUCT_NEW) == 401

    # 1. Every service that checks tokens lists the new digests beside the old.
    both = ((Role.PRODUCT, PRODUCT_OLD), (Role.PRODUCT, PRODUCT_NEW),
            (Role.CHECKOUT, CHECKOUT_OLD), (Role.CHECKOUT, CHECKOUT_NEW))
    await deployment.roll_entitlement(*both)
    assert await deployment.through_checkout(PRODUCT_OLD) == 200  # still presenting the old checkout token
    await deployment.roll_checkout(CHECKOUT_OLD, (Role.PRODUCT, PRODUCT_OLD), (Role.PRODUCT, PRODUCT_NEW))
    for token in (PRODUCT_OLD, PRODUCT_NEW):
        assert await deployment.direct(token) == ok and await deployment.through_checkout(token) == 200

    # 2. The callers move: the checkout service presents its new token.
    await deployment.roll_checkout(CHECKOUT_NEW, (Role.PRODUCT, PRODUCT_OLD), (Role.PRODUCT, PRODUCT_NEW))
    assert await deployment.through_checkout(PRODUCT_NEW) == 200

    # 3. The old digests are dropped: the old tokens are refused everywhere, the new ones serve.
    await deployment.roll_entitlement((Role.PRODUCT, PRODUCT_NEW), (Role.CHECKOUT, CHECKOUT_NEW))
    await deployment.roll_checkout(CHECKOUT_NEW, (Role.PRODUCT, PRODUCT_NEW))
    assert await deployment.direct(PRODUCT_OLD) == refused and await deployment.direct(CHECKOUT_OLD) == refused
    assert await deployment.through_checkout(PRODUCT_OLD) == 401
    assert await deployment.direct(PRODUCT_NEW) == ok and await deployment.through_checkout(PRODUCT_NEW) == 200


WEBHOOK_OLD, WEBHOOK_NEW = "whsec_before_rotation", "whsec_after_rotation"


async def deliver(stack: Stack, event_id: str, secret: str) -> int:
    raw = json.dumps({"id": event_id, "object": "event", "type": "charge.refunded", "created": 1_767_225_600,
                      "data": {"object": {"id": "ch_rotation"}}}).encode()
    at = int(time.time())
    headers = {"Stripe-Signature": f"t={at},v1={sign(raw, secret, at)}", "Content-Type": "application/json"}
    async with stack.http.post(stack.url("/webhooks/stripe"), data=raw, headers=headers) as response:
        return response.status


async def test_webhook_secret_rotation_drill_old_and_new_together_then_the_old_refused(database_url: str) -> None:
    async with open_stack(database_url) as stack:
        async def roll(*secrets: str) -> None:
            await stack.checkout.stop(0)
            stack.checkout = await start_checkout(stack.entitlement, stack.provider,
                                                  env={"STRIPE_WEBHOOK_SECRETS": ",".join(secrets)})

        await roll(WEBHOOK_OLD)
        assert await deliver(stack, "evt_rot_1", WEBHOOK_OLD) == 200
        assert await deliver(stack, "evt_rot_2", WEBHOOK_NEW) == 400

        # The provider signs with both while its rotation window lasts; each secret verifies alone.
        await roll(WEBHOOK_OLD, WEBHOOK_NEW)
        assert await deliver(stack, "evt_rot_3", WEBHOOK_OLD) == 200
        assert await deliver(stack, "evt_rot_4", WEBHOOK_NEW) == 200

        await roll(WEBHOOK_NEW)
        assert await deliver(stack, "evt_rot_5", WEBHOOK_OLD) == 400
        assert await deliver(stack, "evt_rot_6", WEBHOOK_NEW) == 200
    conn = await asyncpg.connect(database_url)
    try:
        recorded = await conn.fetch("SELECT provider_event_id FROM provider_events WHERE provider_event_id LIKE "
                                    "'evt_rot_%' ORDER BY provider_event_id")
    finally:
        await conn.close()
    assert [r["provider_event_id"] for r in recorded] == ["evt_rot_1", "evt_rot_3", "evt_rot_4", "evt_rot_6"]
