"""The product's verification list (issue: checkout), driven through real processes: the provider
simulator, both services and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.e2e.stack import Stack, start_stack, stop_stack
from tests.support.tokens import TOKENS

pytestmark = pytest.mark.e2e
FINALIZED, CONFLICT = pb.PURCHASE_STATE_FINALIZED, pb.PURCHASE_STATE_CONFLICT


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url)
    yield started
    await stop_stack(started)


async def complete(stack: Stack, created: dict[str, object], **params: object) -> None:
    await stack.sim_control(f"checkout/sessions/{created['checkout_session_id']}/complete", **params)


async def test_a_delayed_webhook_keeps_the_purchase_pending_and_the_redirect_alone_grants_nothing(
    stack: Stack,
) -> None:
    await stack.sim_control("delivery", mode="hold")
    status, created = await stack.buy("acct_a")
    assert status == 201, created
    await complete(stack, created)
    return_url = (f"{stack.checkout}/checkout/return?purchase_id={created['purchase_id']}"
                  f"&session_id={created['checkout_session_id']}")
    async with stack.http.get(return_url) as page:
        assert page.status == 200
    purchase = await stack.purchase(str(created["purchase_id"]))
    assert purchase.state == pb.PURCHASE_STATE_RETURNED
    assert not (await stack.entitlements("acct_a")).plans

    await stack.sim_control("delivery/release")
    await stack.wait_state(str(created["purchase_id"]), FINALIZED)
    ent = await stack.entitlements("acct_a")
    assert [p.billing_plan_code for p in ent.plans] == ["pro"] and "api_access" in ent.gates


async def test_the_same_webhooks_delivered_three_times_make_one_transition_and_one_issuance(stack: Stack) -> None:
    await stack.sim_control("delivery", mode="duplicate", count=3)
    _, created = await stack.buy("acct_b")
    await complete(stack, created)
    await stack.delivered()
    purchase = await stack.wait_state(str(created["purchase_id"]), FINALIZED)
    assert [t.to_state for t in purchase.transitions].count(FINALIZED) == 1
    funding = (await stack.entitlements("acct_b")).funding
    assert [(f.grant_program_code, f.amount) for f in funding] == [("ai_credits", 1200)]


async def test_a_subscriptions_events_delivered_in_reverse_end_in_the_right_state(stack: Stack) -> None:
    _, created = await stack.buy("acct_c")
    await complete(stack, created)
    purchase = await stack.wait_state(str(created["purchase_id"]), FINALIZED)
    await stack.sim_control("delivery", mode="hold")
    sub = purchase.subscription_id
    # A customer's portal clicks, a second apart (changes in the same provider second follow the
    # documented tie rule instead).
    for change in ({"action": "change_quantity", "quantity": 4}, {"action": "change_price", "price": "pro_yearly"},
                   {"action": "cancel_at_period_end"}):
        await stack.sim_control("clock/advance", seconds=1)
        await stack.sim_control(f"subscriptions/{sub}/portal", **change)
    await stack.sim_control("delivery/release", order="reverse")
    await stack.delivered()
    ent = await stack.entitlements("acct_c", at_provider_now=True)
    [subscription] = ent.subscriptions
    assert subscription.cancel_at_period_end
    assert [(i.price_id, i.quantity) for i in subscription.items if not i.HasField("effective_until")] == [
        (ent.grant_bindings[0].price_id, 4)]
    catalog = await stack.stub().ListCatalog(pb.ListCatalogRequest())
    yearly = next(p.price.price_id for p in catalog.prices if p.price.lookup_key == "pro_yearly")
    assert ent.grant_bindings[0].price_id == yearly


async def test_a_second_purchase_into_an_occupied_group_gets_a_portal_link_and_a_race_leaves_one_winner(
    stack: Stack,
) -> None:
    # While our starter checkout is open, a second checkout through this service is refused
    # (test_open_checkouts.py); the race is a pro subscription made at the provider directly.
    status, created = await stack.buy("acct_d", "starter_monthly")
    assert status == 201
    await stack.outside_checkout("acct_d", "pro_monthly")
    await complete(stack, created)
    starter = await stack.wait_state(str(created["purchase_id"]), CONFLICT)
    await stack.delivered()
    plans = (await stack.entitlements("acct_d")).plans
    assert [(p.billing_plan_code, p.conflict) for p in plans] == [("pro", False), ("starter", True)]
    pro = next(p for p in plans if p.billing_plan_code == "pro")
    assert pro.subscription_id in starter.reason
    status, refused = await stack.buy("acct_d", "starter_monthly")
    assert status == 409 and refused["error"]["code"] == "group_conflict"
    assert refused["error"]["portal_url"].startswith(stack.sim)


async def test_an_upgrade_then_a_downgrade_within_seconds_resolves_by_provider_time(stack: Stack) -> None:
    _, created = await stack.buy("acct_e", "starter_monthly")
    await complete(stack, created)
    purchase = await stack.wait_state(str(created["purchase_id"]), FINALIZED)
    await stack.sim_control("delivery", mode="hold")
    sub = purchase.subscription_id
    await stack.sim_control(f"subscriptions/{sub}/portal", action="change_price", price="pro_monthly")
    await stack.sim_control("clock/advance", seconds=2)
    await stack.sim_control(f"subscriptions/{sub}/portal", action="change_price", price="starter_monthly")
    await stack.sim_control("delivery/release", order="shuffle", seed=7)
    await stack.delivered()
    ent = await stack.entitlements("acct_e", at_provider_now=True)
    assert [p.billing_plan_code for p in ent.plans] == ["starter"] and ent.gate_bundle == "starter"


async def test_support_follows_a_purchase_to_its_assignment_and_funding_with_grpcurl(stack: Stack) -> None:
    _, created = await stack.buy("acct_f")
    await complete(stack, created)
    await stack.wait_state(str(created["purchase_id"]), FINALIZED)
    await stack.delivered()  # the invoice may follow the subscription
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    target, service = stack.env["ENTITLEMENT_GRPC_ADDR"], "selfserve.entitlement.v1.EntitlementService"
    header = f"authorization: Bearer {TOKENS[Role.SUPPORT]}"

    async def call(method: str, body: dict[str, str]) -> dict[str, object]:
        proc = await asyncio.create_subprocess_exec(grpcurl, "-plaintext", "-H", header, "-d", json.dumps(body),
                                                    target, f"{service}/{method}", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        return dict(json.loads(out))

    purchase = (await call("GetPurchase", {"purchase_id": str(created["purchase_id"])}))["purchase"]
    assert purchase["state"] == "PURCHASE_STATE_FINALIZED" and purchase["subscription_id"]  # type: ignore[index]
    explained = await call("ExplainAccount", {"account_id": "acct_f"})
    plans = explained["entitlements"]["plans"]  # type: ignore[index]
    assert [(p["billing_plan_code"], p["subscription_id"]) for p in plans] == [
        ("pro", purchase["subscription_id"])]  # type: ignore[index]
    funding = explained["entitlements"]["funding"]  # type: ignore[index]
    assert [(f["grant_program_code"], f["amount"]) for f in funding] == [("ai_credits", "1200")]
    assert explained["gate_decision"]["gate_bundle"] == "pro"  # type: ignore[index]


async def test_a_credit_pack_bought_once_funds_once_and_a_failed_async_payment_fails_the_purchase(
    stack: Stack,
) -> None:
    _, created = await stack.buy("acct_g", "credit_pack_500", quantity=2)
    await complete(stack, created)
    await stack.wait_state(str(created["purchase_id"]), FINALIZED)
    funding = (await stack.entitlements("acct_g")).funding
    assert [(f.grant_program_code, f.amount) for f in funding] == [("credit_pack", 1000)]

    _, pending = await stack.buy("acct_g", "credit_pack_500")
    await complete(stack, pending, payment="async_pending")
    await stack.delivered()
    assert (await stack.purchase(str(pending["purchase_id"]))).state == pb.PURCHASE_STATE_PENDING
    await stack.sim_control(f"checkout/sessions/{pending['checkout_session_id']}/async_result", result="failed")
    await stack.wait_state(str(pending["purchase_id"]), pb.PURCHASE_STATE_FAILED)
    assert len((await stack.entitlements("acct_g")).funding) == 1
