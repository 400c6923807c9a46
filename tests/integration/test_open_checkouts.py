"""RegisterPurchase under concurrency: an account's second checkout into a non-stackable group
while a purchase into it is open answers that purchase (same selection) or is refused naming it
(another selection), decided under the account's lock; stackable groups and one-time items are
not held to it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client
from tests.support.provider import session_event, ts

HOUR = timedelta(hours=1)


def register(purchase_id: str, price: str, *, quantity: int = 1, account_id: str = "acct_1", group: str = "core",
             mode: int = pb.PURCHASE_MODE_SUBSCRIPTION, expires_in: timedelta = HOUR) -> pb.RegisterPurchaseRequest:
    return pb.RegisterPurchaseRequest(
        purchase_id=purchase_id, account_id=account_id, checkout_session_id=f"cs_{purchase_id}", mode=mode,
        items=[pb.PurchaseItem(price=price, quantity=quantity)], subscription_group=group,
        success_url="https://app.example/ok", cancel_url="https://app.example/no",
        expires_at=ts(datetime.now(UTC) + expires_in), checkout_url=f"https://pay.example/{purchase_id}")


async def outcome(service: Client, request: pb.RegisterPurchaseRequest) -> tuple[str, str, bool]:
    """(`ok` or the refusal's error code, the purchase answered or named, reused)."""
    try:
        reply = await service.checkout.RegisterPurchase(request)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()
        trailing = dict(exc.trailing_metadata() or ())
        return str(trailing["error-code"]), str(trailing["open-purchase-id"]), False
    return "ok", reply.purchase.purchase_id, reply.open_purchase_reused


async def test_checkouts_of_one_selection_at_the_same_instant_share_one_purchase(service: Client) -> None:
    answers = await asyncio.gather(*(outcome(service, register(f"pur_{i}", "pro_monthly")) for i in range(8)))
    [(code, winner, _)] = {(c, p, False) for c, p, _ in answers}
    assert code == "ok"
    assert sorted(reused for _, _, reused in answers) == [False] + [True] * 7
    opened = await service.checkout.GetPurchase(pb.GetPurchaseRequest(purchase_id=winner))
    assert opened.purchase.checkout_url == f"https://pay.example/{winner}"
    for i in range(8):
        if f"pur_{i}" != winner:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await service.checkout.GetPurchase(pb.GetPurchaseRequest(purchase_id=f"pur_{i}"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_checkouts_of_other_selections_at_the_same_instant_leave_one_and_name_it_to_the_others(
    service: Client,
) -> None:
    prices = ["pro_monthly", "starter_monthly", "pro_yearly", "starter_monthly"]
    answers = await asyncio.gather(*(outcome(service, register(f"pur_{i}", p)) for i, p in enumerate(prices)))
    winners = [p for code, p, _ in answers if code == "ok"]
    assert winners
    winner = winners[0]
    won = prices[int(winner.removeprefix("pur_"))]
    for (code, named, reused), price in zip(answers, prices, strict=True):
        if price == won:
            assert (code, named) == ("ok", winner) and (reused or named == winner)
        else:
            assert (code, named) == ("checkout_in_progress", winner)


async def test_the_same_price_by_lookup_key_or_id_is_the_same_selection(service: Client) -> None:
    catalog = await service.checkout.ListCatalog(pb.ListCatalogRequest())
    pro = next(p.price.price_id for p in catalog.prices if p.price.lookup_key == "pro_monthly")
    assert await outcome(service, register("pur_a", "pro_monthly")) == ("ok", "pur_a", False)
    assert await outcome(service, register("pur_b", pro)) == ("ok", "pur_a", True)
    assert (await outcome(service, register("pur_c", pro, quantity=2)))[:2] == ("checkout_in_progress", "pur_a")


async def test_validation_names_the_open_purchase_and_whether_it_is_the_same_selection(service: Client) -> None:
    await service.checkout.RegisterPurchase(register("pur_a", "pro_monthly"))
    same = await service.checkout.ValidatePurchase(pb.ValidatePurchaseRequest(
        account_id="acct_1", items=[pb.PurchaseItem(price="pro_monthly", quantity=1)]))
    assert same.ok and same.open_purchase.purchase_id == "pur_a" and same.open_purchase_same_selection
    other = await service.checkout.ValidatePurchase(pb.ValidatePurchaseRequest(
        account_id="acct_1", items=[pb.PurchaseItem(price="starter_monthly", quantity=1)]))
    assert other.ok and other.open_purchase.purchase_id == "pur_a" and not other.open_purchase_same_selection
    elsewhere = await service.checkout.ValidatePurchase(pb.ValidatePurchaseRequest(
        account_id="acct_2", items=[pb.PurchaseItem(price="starter_monthly", quantity=1)]))
    assert elsewhere.ok and not elsewhere.HasField("open_purchase")


async def test_once_the_open_session_expires_a_new_checkout_proceeds(service: Client) -> None:
    assert await outcome(service, register("pur_old", "pro_monthly", expires_in=-HOUR)) == ("ok", "pur_old", False)
    assert await outcome(service, register("pur_a", "starter_monthly")) == ("ok", "pur_a", False)
    expired = session_event("evt_exp", "cs_pur_a", datetime.now(UTC), purchase_id="pur_a", mode="subscription",
                            status="expired", payment_status="unpaid", items=[("starter_monthly", 1)],
                            event_type="checkout.session.expired")
    await service.apply(expired)
    state = (await service.checkout.GetPurchase(pb.GetPurchaseRequest(purchase_id="pur_a"))).purchase.state
    assert state == pb.PURCHASE_STATE_EXPIRED
    assert await outcome(service, register("pur_b", "pro_monthly")) == ("ok", "pur_b", False)


async def test_stackable_groups_and_one_time_items_are_not_held_to_one_open_purchase(service: Client) -> None:
    for i in range(2):
        assert await outcome(service, register(f"pur_s{i}", "team_seats_monthly", group="addons")) == (
            "ok", f"pur_s{i}", False)
        assert await outcome(service, register(f"pur_c{i}", "credit_pack_500", group="credits",
                                               mode=pb.PURCHASE_MODE_PAYMENT)) == ("ok", f"pur_c{i}", False)
