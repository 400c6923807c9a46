"""The reconciler against real processes and the provider simulator: it sweeps ten thousand
accounts to completion, a page at a time, finding and repairing the drift among them; and a run
for one account funds a renewal whose webhook was lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from selfserve.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.e2e.stack import Stack, start_stack, stop_stack
from tests.support.tokens import bearer

pytestmark = pytest.mark.e2e
ACCOUNTS = 10_000
DAY = 24 * 3600


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url, {"RECONCILE_INTERVAL_S": "0"})
    yield started
    await stop_stack(started)


async def reconcile(stack: Stack, account_id: str = "") -> checkout_pb2.ReconcileResponse:
    async with grpc.aio.insecure_channel(stack.env["CHECKOUT_GRPC_ADDR"]) as channel:
        return await checkout_pb2_grpc.CheckoutServiceStub(channel).Reconcile(
            checkout_pb2.ReconcileRequest(account_id=account_id), metadata=bearer(Role.OPERATOR), timeout=600)


async def provider_customers(stack: Stack, count: int) -> list[str]:
    """Customers created at the provider through its API, a few requests at a time."""
    limit = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {stack.env['STRIPE_API_KEY']}"}

    async def create(n: int) -> str:
        async with limit, stack.http.post(f"{stack.sim}/v1/customers", data={"metadata[account_id]": f"acct_{n:05}"},
                                          headers=headers) as reply:
            assert reply.status == 200, await reply.text()
            return str((await reply.json())["id"])

    return list(await asyncio.gather(*(create(n) for n in range(count))))


async def test_the_reconciler_sweeps_ten_thousand_accounts_to_completion(stack: Stack, database_url: str) -> None:
    drifted = [await stack.bought(f"acct_drift_{n}", "starter_monthly") for n in range(3)]
    customers = await provider_customers(stack, ACCOUNTS)
    conn = await asyncpg.connect(database_url)
    try:  # the accounts the product created and linked over the years
        await conn.copy_records_to_table("accounts", columns=["account_id", "provider_customer_id"],
                                         records=[(f"acct_{n:05}", c) for n, c in enumerate(customers)])
    finally:
        await conn.close()
    await stack.sim_control("delivery", mode="drop")
    for purchase in drifted:
        await stack.sim_control(f"subscriptions/{purchase.subscription_id}/portal", action="change_price",
                                price="pro_monthly")
    # The changes' events are out of the replay's reach: only the sweep's comparison finds them.
    async with stack.http.get(f"{stack.sim}/_sim/clock") as reply:
        provider_now = int((await reply.json())["now"])
    await stack.stub(Role.CHECKOUT).ApplyReconciliation(pb.ApplyReconciliationRequest(
        read_at=Timestamp(seconds=provider_now), events_checkpoint=Timestamp(seconds=provider_now + 1)))

    started = time.perf_counter()
    swept = await reconcile(stack)
    elapsed = time.perf_counter() - started
    print(f"reconciled {swept.accounts_checked} accounts in {elapsed:.1f} s")
    assert swept.sweep_complete
    assert swept.accounts_checked == ACCOUNTS + len(drifted)
    assert (swept.mismatches_found, swept.mismatches_repaired, swept.accounts_unreadable) == (3, 3, 0)
    for n in range(3):
        assert [p.billing_plan_code for p in (await stack.entitlements(f"acct_drift_{n}")).plans] == ["pro"]
    again = await reconcile(stack)  # the sweep starts again from the first account, and finds nothing
    assert again.sweep_complete and again.accounts_checked == swept.accounts_checked
    assert again.mismatches_found == 0


async def test_a_run_for_one_account_funds_a_renewal_whose_webhook_was_lost(stack: Stack) -> None:
    purchase = await stack.bought("acct_renewal", "pro_monthly")  # funds ai_credits every period
    first = (await stack.entitlements("acct_renewal", at_provider_now=True)).funding
    await stack.sim_control("delivery", mode="drop")
    await stack.sim_control("clock/advance", seconds=31 * DAY)  # the renewal: invoice.paid, never delivered
    assert len((await stack.entitlements("acct_renewal", at_provider_now=True)).funding) == len(first)

    report = await reconcile(stack, "acct_renewal")
    assert report.events_replayed >= 1
    funding = (await stack.entitlements("acct_renewal", at_provider_now=True)).funding
    assert len(funding) == len(first) + 1  # the renewal's period, funded once
    assert {f.subscription_id for f in funding} == {purchase.subscription_id}
    assert (await reconcile(stack, "acct_renewal")).events_replayed == 0
