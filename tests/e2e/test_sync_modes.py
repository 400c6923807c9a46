"""Webhook endpoints pinned to an older API version, and the refetch sync mode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.e2e.stack import Stack, start_stack, stop_stack

pytestmark = pytest.mark.e2e


@pytest.fixture
async def old_api_stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url, {"PROVIDER_SIM_WEBHOOK_API_VERSION": "2024-06-20"})
    yield started
    await stop_stack(started)


@pytest.fixture
async def refetch_stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url, {"STRIPE_SYNC_MODE": "refetch"})
    yield started
    await stop_stack(started)


async def test_events_in_an_older_api_shape_finalize_and_fund_like_current_ones(old_api_stack: Stack) -> None:
    stack = old_api_stack
    _, created = await stack.buy("acct_old")
    await stack.sim_control(f"checkout/sessions/{created['checkout_session_id']}/complete")
    await stack.wait_state(str(created["purchase_id"]), pb.PURCHASE_STATE_FINALIZED)
    await stack.delivered()  # the invoice may follow the subscription
    ent = await stack.entitlements("acct_old")
    assert [p.billing_plan_code for p in ent.plans] == ["pro"]
    assert [(f.grant_program_code, f.amount) for f in ent.funding] == [("ai_credits", 1200)]


async def test_refetch_mode_applies_the_providers_present_state_even_for_changes_in_one_second(
    refetch_stack: Stack,
) -> None:
    stack = refetch_stack
    _, created = await stack.buy("acct_refetch", "starter_monthly")
    await stack.sim_control(f"checkout/sessions/{created['checkout_session_id']}/complete")
    purchase = await stack.wait_state(str(created["purchase_id"]), pb.PURCHASE_STATE_FINALIZED)
    await stack.sim_control("delivery", mode="hold")
    sub = purchase.subscription_id
    await stack.sim_control(f"subscriptions/{sub}/portal", action="change_price", price="pro_monthly")
    await stack.sim_control(f"subscriptions/{sub}/portal", action="change_quantity", quantity=2)
    await stack.sim_control(f"subscriptions/{sub}/portal", action="change_price", price="starter_monthly")
    await stack.sim_control("delivery/release", order="reverse")
    await stack.delivered()
    [subscription] = (await stack.entitlements("acct_refetch", at_provider_now=True)).subscriptions
    current = [(i.price_id, i.quantity) for i in subscription.items if not i.HasField("effective_until")]
    catalog = await stack.stub().ListCatalog(pb.ListCatalogRequest())
    starter = next(p.price.price_id for p in catalog.prices if p.price.lookup_key == "starter_monthly")
    assert current == [(starter, 2)]
