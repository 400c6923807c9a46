"""PreviewPurchase over gRPC on a real socket against real PostgreSQL: its validation, its roles,
that it writes nothing, and that a previewed purchase or change is what applying the provider's
events for it then holds."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import grpc
import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Client
from tests.support.provider import MONTH, T0, invoice_event, subscription_event, ts

DAY = timedelta(days=1)
TABLES = ("accounts", "provider_events", "account_history", "subscriptions", "subscription_items",
          "plan_assignments", "grant_bindings", "issued_grants", "audit_log", "purchases", "mismatches")


def items(*lines: tuple[str, int]) -> pb.PurchaseItems:
    return pb.PurchaseItems(items=[pb.PurchaseItem(price=p, quantity=q) for p, q in lines])


async def _counts(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
    finally:
        await conn.close()


async def _refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    assert refused.value.code() == code, refused.value.details()
    return str(refused.value.details())


def content(e: pb.Entitlements) -> tuple[object, ...]:
    """What a preview promises: everything but the ids the provider gives new objects."""
    plans = [(p.billing_plan_code, p.subscription_group, p.priority, p.kind, p.effective_from.ToJsonString(),
              p.effective_until.ToJsonString() if p.HasField("effective_until") else None, p.conflict)
             for p in e.plans]
    bindings = sorted((b.grant_program_code, b.total_amount, b.quantity, b.price_id, b.effective_from.ToJsonString(),
                       b.effective_until.ToJsonString() if b.HasField("effective_until") else None)
                      for b in e.grant_bindings)
    funding = sorted((f.grant_program_code, f.amount, f.cadence, f.issued_at.ToJsonString(),
                      f.period_start.ToJsonString() if f.HasField("period_start") else None,
                      f.period_end.ToJsonString() if f.HasField("period_end") else None) for f in e.funding)
    subs = sorted((s.status, s.subscription_group, s.cancel_at_period_end, s.ended_at.ToJsonString(),
                   tuple(sorted((i.price_id, i.quantity) for i in s.items if not i.HasField("effective_until"))))
                  for s in e.subscriptions)
    return plans, bindings, funding, e.gate_bundle, list(e.gates), subs


async def test_preview_is_refused_without_an_account_or_a_selection(service: Client) -> None:
    preview = service.product.PreviewPurchase
    assert "account_id is required" in await _refused(
        preview(pb.PreviewPurchaseRequest(items=items(("pro_monthly", 1)))), grpc.StatusCode.INVALID_ARGUMENT)
    assert "one of items and change" in await _refused(
        preview(pb.PreviewPurchaseRequest(account_id="acct_1")), grpc.StatusCode.INVALID_ARGUMENT)
    assert "change.subscription_id is required" in await _refused(
        preview(pb.PreviewPurchaseRequest(account_id="acct_1", change=pb.SubscriptionChange(cancel_now=True))),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert "change needs one of" in await _refused(
        preview(pb.PreviewPurchaseRequest(account_id="acct_1", change=pb.SubscriptionChange(subscription_id="sub_1"))),
        grpc.StatusCode.INVALID_ARGUMENT)


async def test_a_change_to_an_unknown_or_another_accounts_subscription_is_not_found(service: Client) -> None:
    await service.apply(subscription_event("evt_1", "sub_other", T0, account_id="acct_2", customer_id="cus_2"))
    for sub in ("sub_unknown", "sub_other"):
        request = pb.PreviewPurchaseRequest(account_id="acct_1",
                                            change=pb.SubscriptionChange(subscription_id=sub, cancel_now=True))
        assert f"no subscription {sub} for account acct_1" in await _refused(
            service.product.PreviewPurchase(request), grpc.StatusCode.NOT_FOUND)


async def test_a_change_to_an_ended_subscription_is_a_failed_precondition(service: Client) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0),
                        subscription_event("evt_2", "sub_1", T0 + DAY, status="canceled", ended_at=T0 + DAY))
    request = pb.PreviewPurchaseRequest(account_id="acct_1", change=pb.SubscriptionChange(
        subscription_id="sub_1", cancel_at_period_end=True), as_of=ts(T0 + 2 * DAY))
    assert "has ended" in await _refused(service.product.PreviewPurchase(request),
                                         grpc.StatusCode.FAILED_PRECONDITION)


@pytest.mark.parametrize("role", list(Role))
async def test_preview_is_open_to_product_checkout_and_support(service: Client, role: Role) -> None:
    call = service.as_role(role).PreviewPurchase(
        pb.PreviewPurchaseRequest(account_id="acct_1", items=items(("starter_monthly", 1))))
    if role in (Role.PRODUCT, Role.CHECKOUT, Role.SUPPORT):
        assert (await call).entitlements.gate_bundle == "starter"
    else:
        await _refused(call, grpc.StatusCode.PERMISSION_DENIED)


async def test_a_preview_writes_nothing(service: Client, database_url: str) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0, items=[("starter_monthly", 1)]))
    before, held = await _counts(database_url), await service.entitlements(as_of=ts(T0 + DAY))
    for request in (
        pb.PreviewPurchaseRequest(account_id="acct_1", items=items(("team_seats_monthly", 3)), as_of=ts(T0 + DAY)),
        pb.PreviewPurchaseRequest(account_id="acct_1", items=items(("credit_pack_500", 2)), as_of=ts(T0 + DAY)),
        pb.PreviewPurchaseRequest(account_id="acct_new", items=items(("pro_monthly", 1)), as_of=ts(T0 + DAY)),
        pb.PreviewPurchaseRequest(account_id="acct_1", as_of=ts(T0 + DAY), change=pb.SubscriptionChange(
            subscription_id="sub_1", items=items(("pro_monthly", 1)))),
        pb.PreviewPurchaseRequest(account_id="acct_1", as_of=ts(T0 + DAY), change=pb.SubscriptionChange(
            subscription_id="sub_1", cancel_now=True)),
    ):
        await service.product.PreviewPurchase(request)
    assert await _counts(database_url) == before
    after = await service.entitlements(as_of=ts(T0 + DAY))
    assert after == held and after.revision == held.revision


async def test_an_upgrade_preview_names_its_gains_and_the_applied_change_holds_exactly_that(service: Client) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0, items=[("starter_monthly", 1)]))
    at = T0 + 3 * DAY
    request = pb.PreviewPurchaseRequest(account_id="acct_1", as_of=ts(at), change=pb.SubscriptionChange(
        subscription_id="sub_1", items=items(("pro_monthly", 1))))
    preview = await service.product.PreviewPurchase(request)
    assert not preview.problems and not preview.HasField("invoice")
    changes = preview.changes
    assert list(changes.gates_gained) == ["api_access", "priority_support"] and not changes.gates_lost
    assert [p.billing_plan_code for p in changes.plans_added] == ["pro"]
    assert [p.billing_plan_code for p in changes.plans_removed] == ["starter"]
    assert [b.grant_program_code for b in changes.bindings_added] == ["ai_credits"]
    assert (changes.gate_bundle_before, changes.gate_bundle_after) == ("starter", "pro")
    await service.apply(subscription_event("evt_2", "sub_1", at, start=T0, period_end=T0 + MONTH,
                                           items=[("pro_monthly", 1)]))
    assert content(await service.entitlements(as_of=ts(at))) == content(preview.entitlements)


async def test_a_new_purchase_preview_is_what_its_subscription_and_first_invoice_then_hold(service: Client) -> None:
    request = pb.PreviewPurchaseRequest(account_id="acct_1", items=items(("pro_monthly", 1)), as_of=ts(T0))
    preview = await service.product.PreviewPurchase(request)
    assert [(f.grant_program_code, f.amount) for f in preview.entitlements.funding] == [("ai_credits", 1200)]
    assert [f.grant_program_code for f in preview.changes.funding_added] == ["ai_credits"]
    end = T0.replace(month=T0.month + 1)  # a calendar month, as the provider bills
    await service.apply(subscription_event("evt_1", "sub_1", T0, event_type="customer.subscription.created",
                                           period_end=end),
                        invoice_event("evt_2", "in_1", "sub_1", T0, lines=[("pro_monthly", 1, T0, end)],
                                      billing_reason="subscription_create"))
    held = await service.entitlements(as_of=ts(T0))
    assert content(held) == content(preview.entitlements)


async def test_a_second_base_plan_previews_its_group_conflict(service: Client) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0, items=[("pro_monthly", 1)]))
    preview = await service.product.PreviewPurchase(pb.PreviewPurchaseRequest(
        account_id="acct_1", items=items(("starter_monthly", 1)), as_of=ts(T0 + DAY)))
    assert [p.code for p in preview.problems] == [pb.PURCHASE_PROBLEM_CODE_GROUP_CONFLICT]
    plans = {p.billing_plan_code: p for p in preview.entitlements.plans}
    assert plans["starter"].conflict and plans["starter"].conflict_with_subscription_id == "sub_1"
    assert not plans["pro"].conflict and preview.entitlements.gate_bundle == "pro"


async def test_cancel_now_previews_every_gate_lost(service: Client) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0, items=[("pro_monthly", 1)]))
    preview = await service.product.PreviewPurchase(pb.PreviewPurchaseRequest(
        account_id="acct_1", as_of=ts(T0 + DAY), change=pb.SubscriptionChange(subscription_id="sub_1",
                                                                               cancel_now=True)))
    assert sorted(preview.changes.gates_lost) == ["api_access", "export", "priority_support"]
    assert not preview.entitlements.plans and not preview.entitlements.gates
