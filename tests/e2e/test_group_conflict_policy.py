"""Two live subscriptions in one non-stackable group anyway (one made at the provider outside
this checkout), under each `conflict_policy`, through real processes: the simulator (with its
refunds), both services, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from selfserve.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.e2e.stack import Stack, start_stack, stop_stack
from tests.support.provider import EXAMPLE_CATALOG, ROOT
from tests.support.tokens import bearer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url, {"RECONCILE_INTERVAL_S": "0"})
    yield started
    await stop_stack(started)


async def apply_policy(stack: Stack, tmp_path: Path, policy: str) -> None:
    text = EXAMPLE_CATALOG.read_text(encoding="utf-8").replace(
        "[groups.core]\n", f'[groups.core]\nconflict_policy = "{policy}"\n', 1)
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(text, encoding="utf-8")
    apply = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "checkout_service", "catalog", "apply", str(catalog), cwd=ROOT,
        env={**os.environ, **stack.env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await apply.communicate()
    assert apply.returncode == 0, out.decode()


async def reconcile(stack: Stack, account_id: str) -> None:
    async with grpc.aio.insecure_channel(stack.env["CHECKOUT_GRPC_ADDR"]) as channel:
        await checkout_pb2_grpc.CheckoutServiceStub(channel).Reconcile(
            checkout_pb2.ReconcileRequest(account_id=account_id), metadata=bearer(Role.OPERATOR), timeout=120)


async def duplicate_race(stack: Stack, account_id: str) -> pb.Purchase:
    """Our starter checkout, and a pro subscription made at the provider meanwhile: the starter
    purchase loses the group."""
    status, created = await stack.buy(account_id, "starter_monthly")
    assert status == 201, created
    await stack.outside_checkout(account_id, "pro_monthly")
    await stack.sim_control(f"checkout/sessions/{created['checkout_session_id']}/complete")
    starter = await stack.wait_state(str(created["purchase_id"]), pb.PURCHASE_STATE_CONFLICT)
    await stack.delivered()
    return starter


async def test_flag_shows_support_both_subscriptions_and_touches_nothing_at_the_provider(
    stack: Stack, tmp_path: Path,
) -> None:
    await apply_policy(stack, tmp_path, "flag")
    starter = await duplicate_race(stack, "acct_flag")
    support = stack.stub(Role.SUPPORT)
    found = await support.ListMismatches(pb.ListMismatchesRequest(account_id="acct_flag"))
    [duplicate] = [m for m in found.mismatches if m.kind == "duplicate_subscription_in_group"]
    diff = json.loads(duplicate.diff)
    assert duplicate.subscription_id == starter.subscription_id and diff["conflict_policy"] == "flag"
    assert starter.subscription_id in diff["subscriptions"] and len(diff["subscriptions"]) == 2
    await reconcile(stack, "acct_flag")
    provider = stack.provider()
    try:
        loser = await provider.retrieve_subscription(starter.subscription_id)
    finally:
        await provider.close()
    assert loser["status"] == "active"


async def test_cancel_and_refund_cancels_and_refunds_the_loser_once_and_the_winner_keeps_its_plan(
    stack: Stack, tmp_path: Path,
) -> None:
    await apply_policy(stack, tmp_path, "cancel_and_refund")
    starter = await duplicate_race(stack, "acct_refund")
    for _ in range(2):  # a second run finds nothing left to do
        await reconcile(stack, "acct_refund")
    await stack.delivered()
    provider = stack.provider()
    try:
        loser = await provider.retrieve_subscription(starter.subscription_id)
        invoice = await provider.retrieve_invoice_payments(str(loser["latest_invoice"]))
    finally:
        await provider.close()
    assert loser["status"] == "canceled"
    [paid] = invoice["payments"]["data"]
    intent = paid["payment"]["payment_intent"]
    async with stack.http.get(f"{stack.sim}/v1/refunds", params={"payment_intent": intent},
                              headers={"Authorization": f"Bearer {stack.env['STRIPE_API_KEY']}"}) as response:
        refunds = (await response.json())["data"]
    assert len(refunds) == 1 and refunds[0]["amount"] == invoice["amount_paid"]

    async def traced() -> pb.TracePurchaseResponse | None:
        trace = await stack.stub(Role.SUPPORT).TracePurchase(pb.TracePurchaseRequest(purchase_id=starter.purchase_id))
        done = [a for a in trace.conflict_actions if a.state == pb.CONFLICT_ACTION_STATE_REFUNDED]
        return trace if done else None

    trace = await eventually(traced, timeout_s=20, what="the loser's trace to show its refund")
    [action] = trace.conflict_actions
    assert action.refund_id == refunds[0]["id"]
    assert [a.action for a in trace.audit if a.entity == "conflict_action"] == ["decided", "canceled", "refunded"]
    assert "customer.subscription.deleted" in {e.type for e in trace.events}
    ent = await stack.entitlements("acct_refund")
    assert [(p.billing_plan_code, p.conflict) for p in ent.plans if not p.HasField("effective_until")] == [
        ("pro", False)]
