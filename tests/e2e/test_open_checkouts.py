"""Two tabs, one group: checkouts into a non-stackable group at the same instant, through real
processes (the provider simulator, both services, PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.e2e.stack import Stack, start_stack, stop_stack

pytestmark = pytest.mark.e2e


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url)
    yield started
    await stop_stack(started)


async def test_two_checkouts_for_one_price_at_the_same_instant_answer_one_session(stack: Stack) -> None:
    answers = await asyncio.gather(stack.buy("acct_tabs"), stack.buy("acct_tabs"))
    assert [status for status, _ in answers] == [201, 201], answers
    (_, first), (_, second) = answers
    assert (first["purchase_id"], first["url"], first["checkout_session_id"]) == (
        second["purchase_id"], second["url"], second["checkout_session_id"])
    assert sorted([first["open_purchase_reused"], second["open_purchase_reused"]]) == [False, True]
    await stack.sim_control(f"checkout/sessions/{first['checkout_session_id']}/complete")
    await stack.wait_state(str(first["purchase_id"]), pb.PURCHASE_STATE_FINALIZED)
    await stack.delivered()
    ent = await stack.entitlements("acct_tabs")
    assert [(p.billing_plan_code, p.conflict) for p in ent.plans] == [("pro", False)]
    assert len(ent.subscriptions) == 1


async def test_a_checkout_for_another_price_while_one_is_open_is_refused_naming_it(stack: Stack) -> None:
    answers = await asyncio.gather(stack.buy("acct_other", "pro_monthly"), stack.buy("acct_other", "starter_monthly"))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201, 409], answers
    created = next(body for status, body in answers if status == 201)
    refused = next(body for status, body in answers if status == 409)
    assert refused["error"]["code"] == "checkout_in_progress"
    assert refused["error"]["open_purchase_id"] == created["purchase_id"]
    assert str(created["purchase_id"]) in refused["error"]["message"]
    # A later attempt for yet another price is refused the same way.
    status, again = await stack.buy("acct_other", "pro_yearly")
    assert status == 409 and again["error"]["open_purchase_id"] == created["purchase_id"]


async def test_once_the_first_session_expires_a_new_checkout_proceeds(stack: Stack) -> None:
    status, first = await stack.buy("acct_later", "pro_monthly")
    assert status == 201
    status, refused = await stack.buy("acct_later", "starter_monthly")
    assert status == 409 and refused["error"]["open_purchase_id"] == first["purchase_id"]
    await stack.sim_control(f"checkout/sessions/{first['checkout_session_id']}/expire")
    await stack.wait_state(str(first["purchase_id"]), pb.PURCHASE_STATE_EXPIRED)
    status, second = await stack.buy("acct_later", "starter_monthly")
    assert status == 201 and not second["open_purchase_reused"]
    assert second["purchase_id"] != first["purchase_id"] and second["url"] != first["url"]
    await stack.sim_control(f"checkout/sessions/{second['checkout_session_id']}/complete")
    await stack.wait_state(str(second["purchase_id"]), pb.PURCHASE_STATE_FINALIZED)
    assert [p.billing_plan_code for p in (await stack.entitlements("acct_later")).plans] == ["starter"]


@pytest.mark.parametrize("ended", ["expire", "complete"])
async def test_an_open_session_the_provider_already_ended_is_never_handed_out_again(stack: Stack, ended: str) -> None:
    """The provider expired (or completed) the open purchase's session, and the event saying so has
    not arrived: a second checkout learns it from the provider instead of answering a url nobody
    can pay."""
    account = f"acct_ended_{ended}"
    status, first = await stack.buy(account, "pro_monthly")
    assert status == 201
    await stack.sim_control("delivery", mode="hold")
    await stack.sim_control(f"checkout/sessions/{first['checkout_session_id']}/{ended}")
    status, second = await stack.buy(account, "pro_monthly")
    if ended == "expire":
        assert status == 201 and not second["open_purchase_reused"], second
        assert second["purchase_id"] != first["purchase_id"] and second["url"] != first["url"]
        assert (await stack.purchase(str(first["purchase_id"]))).state == pb.PURCHASE_STATE_EXPIRED
    else:  # paid: its subscription holds the group once applied, so nothing else is sold into it
        assert status == 409 and second["error"]["code"] == "checkout_in_progress", second
        assert second["error"]["open_purchase_id"] == first["purchase_id"]


async def test_credit_packs_are_bought_side_by_side(stack: Stack) -> None:
    answers = await asyncio.gather(*(stack.buy("acct_packs", "credit_pack_500") for _ in range(2)))
    assert [status for status, _ in answers] == [201, 201]
    assert answers[0][1]["purchase_id"] != answers[1][1]["purchase_id"]
