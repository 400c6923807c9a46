"""A finalized purchase whose subscription moves to another group, through real processes: the
account's plans follow the subscription into the new group, and the purchase records the new
group by a transition that keeps it finalized and says what happened, in GetPurchase and in
TracePurchase."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.e2e.stack import Stack, start_stack, stop_stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e
FINALIZED = pb.PURCHASE_STATE_FINALIZED


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url)
    yield started
    await stop_stack(started)


async def test_a_subscription_moved_to_another_group_moves_the_plans_and_the_purchase_says_so(stack: Stack) -> None:
    purchase = await stack.bought("acct_move")
    sub = purchase.subscription_id
    assert purchase.subscription_group == "core"
    before = await stack.entitlements("acct_move")
    assert [(p.billing_plan_code, p.subscription_group) for p in before.plans] == [("pro", "core")]

    # The customer switches, in the portal, to a price whose product is in the `addons` group.
    await stack.sim_control("clock/advance", seconds=60)
    await stack.sim_control(f"subscriptions/{sub}/portal", action="change_price", price="team_seats_monthly")
    await stack.delivered()

    async def moved() -> pb.Purchase | None:
        found = await stack.purchase(purchase.purchase_id)
        return found if found.subscription_group == "addons" else None

    after = await eventually(moved, timeout_s=20, what="the purchase to record its subscription's new group")
    assert after.state == FINALIZED
    note = after.transitions[-1]
    assert (note.from_state, note.to_state) == (FINALIZED, FINALIZED)
    assert note.reason == f"{sub} moved from group core to group addons"
    assert note.provider_event_id  # the provider event that moved it
    assert [t.to_state for t in after.transitions].count(FINALIZED) == 2  # finalized once, then the group note

    ent = await stack.entitlements("acct_move", at_provider_now=True)
    assert [(p.billing_plan_code, p.subscription_group, p.subscription_id) for p in ent.plans] == [
        ("team_seats", "addons", sub)]
    assert "api_access" not in ent.gates  # pro's bundle left with pro

    trace = await stack.stub(Role.SUPPORT).TracePurchase(pb.TracePurchaseRequest(purchase_id=purchase.purchase_id))
    assert [(t.from_state, t.to_state, t.reason) for t in trace.purchase.transitions] == [
        (t.from_state, t.to_state, t.reason) for t in after.transitions]
    assert all(t.reason for t in trace.purchase.transitions)
    assert [s.subscription_group for s in trace.subscriptions] == ["addons"]
    assert {a.subscription_group for a in trace.assignments} == {"core", "addons"}  # its history, both groups

    # A later change that keeps the subscription in its group records nothing more.
    await stack.sim_control("clock/advance", seconds=60)
    await stack.sim_control(f"subscriptions/{sub}/portal", action="change_quantity", quantity=2)
    await stack.delivered()
    again = await stack.purchase(purchase.purchase_id)
    assert len(again.transitions) == len(after.transitions)
    assert again.subscription_group == "addons"
