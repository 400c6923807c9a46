"""One-time packs need no subscription group: a catalog holding one applies through `catalog apply`,
the pack is bought through the checkout service and paid at the simulator, and its purchase
finalizes and funds. A gate bundle that could only be dropped is refused before anything is
written."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.e2e.stack import Stack, start_stack, stop_stack
from tests.support.provider import EXAMPLE_CATALOG, ROOT

pytestmark = pytest.mark.e2e

# The example catalog with one more one-time pack: no subscription_group on the product or its price.
BOOST_PACK = """
[grant_programs.boost]
cadence = "one_time"
unit = "credit"

[[products]]
id = "boost_pack"
name = "Boost pack"
[products.metadata]
grants = '[{"grant_program_code": "boost", "amount": 250}]'

[[products.prices]]
lookup_key = "boost_pack_250"
unit_amount = 700
currency = "usd"
"""


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url)
    yield started
    await stop_stack(started)


async def catalog_apply(env: dict[str, str], path: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "checkout_service", "catalog", "apply", str(path), cwd=ROOT,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    return int(process.returncode or 0), out.decode()


async def test_a_one_time_pack_without_a_group_applies_is_bought_finalizes_and_funds(
    stack: Stack, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(EXAMPLE_CATALOG.read_text(encoding="utf-8") + BOOST_PACK, encoding="utf-8")
    code, out = await catalog_apply(stack.env, catalog)
    assert code == 0, out
    await stack.delivered()
    listed = await stack.stub().ListCatalog(pb.ListCatalogRequest())
    [boost] = [p for p in listed.prices if p.price.lookup_key == "boost_pack_250"]
    assert (boost.valid, boost.purchasability.purchasable, boost.subscription_group) == (True, True, "")
    assert not boost.price.interval

    status, created = await stack.buy("acct_boost", "boost_pack_250", quantity=3)
    assert status == 201, created
    purchase_id = str(created["purchase_id"])
    registered = await stack.purchase(purchase_id)
    assert (registered.mode, registered.subscription_group) == (pb.PURCHASE_MODE_PAYMENT, "")

    await stack.sim_control(f"checkout/sessions/{created['checkout_session_id']}/complete")
    purchase = await stack.wait_state(purchase_id, pb.PURCHASE_STATE_FINALIZED)
    await stack.delivered()
    assert purchase.subscription_group == "" and not purchase.subscription_id
    assert [t.to_state for t in purchase.transitions][-1] == pb.PURCHASE_STATE_FINALIZED
    assert all(t.reason for t in purchase.transitions)

    ent = await stack.entitlements("acct_boost")
    assert [(f.grant_program_code, f.amount, f.checkout_session_id) for f in ent.funding] == [
        ("boost", 750, created["checkout_session_id"])]
    assert not ent.plans and not ent.gates  # a pack changes what the account can spend, not its plan

    trace = await stack.stub(Role.SUPPORT).TracePurchase(pb.TracePurchaseRequest(purchase_id=purchase_id))
    assert [(f.grant_program_code, f.amount) for f in trace.funding] == [("boost", 750)]
    assert trace.purchase.state == pb.PURCHASE_STATE_FINALIZED


async def test_catalog_apply_refuses_a_gate_bundle_without_a_plan_naming_the_price_and_the_fix(
    tmp_path: Path,
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(EXAMPLE_CATALOG.read_text(encoding="utf-8")
                       + BOOST_PACK.replace("[products.metadata]\n", '[products.metadata]\n"gating.bundle" = "pro"\n'),
                       encoding="utf-8")
    # The file is refused before any connection is made: no provider, no service, nothing written.
    code, out = await catalog_apply({"STRIPE_API_BASE": "http://127.0.0.1:9", "ENTITLEMENT_TARGET": "127.0.0.1:9"},
                                    catalog)
    assert code == 2, out
    assert out.splitlines() == [
        "catalog refused, nothing was written:",
        f"{catalog}: products[4] (id 'boost_pack') price 'boost_pack_250': gating.bundle 'pro' needs a "
        "billing_plan_code on the price or its product: a gate bundle grants its gates only through a plan; set "
        "billing_plan_code or remove gating.bundle",
    ]
