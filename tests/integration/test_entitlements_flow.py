"""The entitlement service driven over gRPC on a real socket against real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Client
from tests.support.provider import (
    MONTH,
    T0,
    example_catalog_request,
    invoice_event,
    session_event,
    subscription_event,
    ts,
)
from tests.support.provider import price_id as pid

HOUR = timedelta(hours=1)
APPLIED, DUPLICATE, STALE, REJECTED, IGNORED = (pb.EVENT_OUTCOME_APPLIED, pb.EVENT_OUTCOME_DUPLICATE,
                                                pb.EVENT_OUTCOME_STALE, pb.EVENT_OUTCOME_REJECTED,
                                                pb.EVENT_OUTCOME_IGNORED)


async def test_the_example_catalog_loads_valid_and_a_second_load_changes_nothing(service: Client) -> None:
    again = await service.operator.UpsertCatalog(example_catalog_request())
    assert again.entries and not any(e.changed for e in again.entries)
    catalog = await service.product.ListCatalog(pb.ListCatalogRequest())
    by_key = {p.price.lookup_key: p for p in catalog.prices}
    assert set(by_key) == {"starter_monthly", "pro_monthly", "pro_yearly", "team_seats_monthly", "credit_pack_500"}
    assert all(p.valid and p.purchasability.purchasable for p in by_key.values())
    pro = {g.grant_program_code: g for g in by_key["pro_monthly"].grant_bindings}
    assert pro["ai_credits"].amount == 1200 and pro["ai_credits"].source == pb.BINDING_SOURCE_PRICE


async def test_only_the_operator_may_rewrite_the_catalog(service: Client) -> None:
    """The internet-facing checkout service holds the `checkout` token: it registers purchases and
    applies events, and cannot change what any price grants."""
    for role in (Role.CHECKOUT, Role.PRODUCT, Role.SUPPORT):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await service.as_role(role).UpsertCatalog(example_catalog_request())
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await service.operator.UpsertCatalog(example_catalog_request())).entries


async def test_malformed_metadata_marks_the_entry_invalid_and_events_that_use_it_are_rejected(service: Client) -> None:
    request = pb.UpsertCatalogRequest(
        products=[pb.ProductSnapshot(product_id="broken", name="Broken", active=True,
                                     metadata={"subscription_group": "core", "grants": "[{not json"},
                                     provider_updated_at=ts(T0))],
        prices=[pb.PriceSnapshot(price_id="price_broken", product_id="broken", active=True, currency="usd",
                                 unit_amount=100, interval="month", provider_updated_at=ts(T0))])
    entries = {e.id: e for e in (await service.operator.UpsertCatalog(request)).entries}
    assert not entries["price_broken"].valid
    assert "grants is not valid JSON" in entries["price_broken"].invalid_reason
    [result] = await service.apply(subscription_event("evt_b1", "sub_b", T0, items=[("broken", 1)]))
    assert result.outcome == REJECTED and "invalid_catalog_entry" in result.reason
    assert not (await service.entitlements()).plans


async def test_an_activated_subscription_assigns_its_plan_gates_and_bindings_from_provider_time(
    service: Client,
) -> None:
    [result] = await service.apply(subscription_event("evt_1", "sub_1", T0, event_type="customer.subscription.created"))
    assert result.outcome == APPLIED and result.account_id == "acct_1"
    ent = await service.entitlements()
    assert [(p.billing_plan_code, p.effective_from.ToDatetime().isoformat()) for p in ent.plans] == [
        ("pro", "2026-01-01T00:00:00")]
    assert ent.gate_bundle == "pro" and set(ent.gates) == {"export", "api_access", "priority_support"}
    assert {b.grant_program_code: b.total_amount for b in ent.grant_bindings} == {"ai_credits": 1200}
    before = await service.entitlements(as_of=ts(T0 - HOUR))
    assert not before.plans and not before.gates
    allowed = await service.product.CheckGate(pb.CheckGateRequest(account_id="acct_1", gate="api_access"))
    assert allowed.allowed and allowed.revision == ent.revision


async def test_the_same_invoice_delivered_three_times_funds_once(service: Client) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0))
    paid = invoice_event("evt_inv1", "in_1", "sub_1", T0, lines=[("pro_monthly", 1, T0, T0 + MONTH)])
    results = await service.apply(paid, paid, paid)
    assert [r.outcome for r in results] == [APPLIED, DUPLICATE, DUPLICATE]
    funding = (await service.entitlements()).funding
    assert [(f.grant_program_code, f.amount, f.invoice_id) for f in funding] == [("ai_credits", 1200, "in_1")]
    renewal = invoice_event("evt_inv2", "in_2", "sub_1", T0 + MONTH,
                            lines=[("pro_monthly", 1, T0 + MONTH, T0 + 2 * MONTH)])
    await service.apply(renewal)
    assert [f.invoice_id for f in (await service.entitlements()).funding] == ["in_1", "in_2"]


async def test_an_invoice_that_arrives_before_its_subscription_funds_once_the_subscription_is_known(
    service: Client,
) -> None:
    await service.apply(invoice_event("evt_inv1", "in_1", "sub_1", T0, lines=[("pro_monthly", 1, T0, T0 + MONTH)]))
    assert not (await service.entitlements()).funding  # the customer is linked, the binding is not yet known
    await service.apply(subscription_event("evt_1", "sub_1", T0))
    assert [f.amount for f in (await service.entitlements()).funding] == [1200]


async def test_an_older_snapshot_is_stale_and_the_final_state_follows_provider_time(service: Client) -> None:
    upgrade = subscription_event("evt_2", "sub_1", T0 + 10 * HOUR, items=[("pro_monthly", 1)])
    created = subscription_event("evt_1", "sub_1", T0, items=[("starter_monthly", 1)],
                                 event_type="customer.subscription.created")
    results = await service.apply(upgrade, created)
    assert [r.outcome for r in results] == [APPLIED, STALE]
    now = await service.entitlements()
    assert [p.billing_plan_code for p in now.plans] == ["pro"]
    early = await service.entitlements(as_of=ts(T0 + HOUR))
    assert [p.billing_plan_code for p in early.plans] == ["starter"]
    assert early.gate_bundle == "starter"


async def test_a_cancellation_at_period_end_takes_effect_at_the_period_end(service: Client) -> None:
    end = T0 + MONTH
    await service.apply(subscription_event("evt_1", "sub_1", T0, period_end=end))
    await service.apply(subscription_event("evt_2", "sub_1", T0 + HOUR, start=T0, period_end=end,
                                           cancel_at_period_end=True))
    assert [p.billing_plan_code for p in (await service.entitlements(as_of=ts(end - HOUR))).plans] == ["pro"]
    assert not (await service.entitlements(as_of=ts(end))).plans
    assert not (await service.entitlements()).gates


async def test_an_event_for_an_unknown_account_waits_until_the_customer_is_linked(service: Client) -> None:
    orphan = subscription_event("evt_o", "sub_o", T0, account_id=None, customer_id="cus_orphan")
    [result] = await service.apply(orphan)
    assert result.outcome == REJECTED and result.reason == "unknown_account"
    linked = await service.checkout.LinkProviderCustomer(
        pb.LinkProviderCustomerRequest(account_id="acct_9", provider_customer_id="cus_orphan"))
    assert linked.events_reapplied == 1
    assert [p.billing_plan_code for p in (await service.entitlements("acct_9")).plans] == ["pro"]


async def test_a_paid_checkout_naming_another_accounts_customer_is_rejected_and_funds_nothing(
    service: Client,
) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0, account_id="acct_1", customer_id="cus_1"))
    [result] = await service.apply(session_event("evt_cs", "cs_1", T0, account_id="acct_2", customer_id="cus_1"))
    assert (result.outcome, result.reason) == (
        REJECTED, "customer_linked_elsewhere: customer cus_1 is linked to account acct_1, not acct_2")
    assert not (await service.entitlements("acct_2")).funding
    assert not (await service.entitlements("acct_1")).funding


async def test_linking_is_refused_when_either_side_is_linked_to_another_and_repeating_it_changes_nothing(
    service: Client,
) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0, account_id="acct_1", customer_id="cus_1"))
    link = service.checkout.LinkProviderCustomer
    for account_id, customer_id, message in (("acct_2", "cus_1", "customer cus_1 is linked to account acct_1"),
                                             ("acct_1", "cus_2", "account acct_1 is linked to customer cus_1")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await link(pb.LinkProviderCustomerRequest(account_id=account_id, provider_customer_id=customer_id))
        assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, message)
    again = await link(pb.LinkProviderCustomerRequest(account_id="acct_1", provider_customer_id="cus_1"))
    assert again.events_reapplied == 0
    found = await service.checkout.GetAccount(pb.GetAccountRequest(provider_customer_id="cus_1"))
    assert found.account_id == "acct_1"


async def test_registering_a_purchase_that_links_a_waiting_customer_applies_its_events(service: Client) -> None:
    orphan = subscription_event("evt_o", "sub_o", T0, account_id=None, customer_id="cus_waiting")
    [result] = await service.apply(orphan)
    assert result.outcome == REJECTED and result.reason == "unknown_account"
    await service.checkout.RegisterPurchase(pb.RegisterPurchaseRequest(
        purchase_id="pur_w", account_id="acct_w", checkout_session_id="cs_w", mode=pb.PURCHASE_MODE_PAYMENT,
        items=[pb.PurchaseItem(price="credit_pack_500", quantity=1)], subscription_group="credits",
        provider_customer_id="cus_waiting", success_url="https://app.example/ok",
        cancel_url="https://app.example/no", expires_at=ts(T0 + HOUR)))
    assert [p.billing_plan_code for p in (await service.entitlements("acct_w")).plans] == ["pro"]


async def test_registering_a_purchase_with_another_accounts_customer_is_refused(service: Client) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0, account_id="acct_1", customer_id="cus_1"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.checkout.RegisterPurchase(pb.RegisterPurchaseRequest(
            purchase_id="pur_2", account_id="acct_2", checkout_session_id="cs_2", mode=pb.PURCHASE_MODE_PAYMENT,
            items=[pb.PurchaseItem(price="credit_pack_500", quantity=1)], subscription_group="credits",
            provider_customer_id="cus_1", success_url="https://app.example/ok",
            cancel_url="https://app.example/no", expires_at=ts(T0 + HOUR)))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == "customer cus_1 is linked to account acct_1, not acct_2"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await service.checkout.GetPurchase(pb.GetPurchaseRequest(purchase_id="pur_2"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_price_the_catalog_does_not_know_is_rejected_naming_it(service: Client) -> None:
    [result] = await service.apply(subscription_event("evt_u", "sub_u", T0, items=[("mystery", 1)]))
    assert result.outcome == REJECTED and "price_mystery" in result.reason


async def test_event_types_we_do_not_use_are_recorded_as_ignored(service: Client) -> None:
    event = pb.ProviderEvent(provider_event_id="evt_x", type="charge.refunded", created=ts(T0), raw_payload=b"{}")
    [result] = await service.apply(event)
    assert result.outcome == IGNORED


async def test_a_paid_one_time_checkout_funds_once_and_finalizes_its_purchase(service: Client) -> None:
    await service.checkout.RegisterPurchase(pb.RegisterPurchaseRequest(
        purchase_id="pur_1", account_id="acct_1", checkout_session_id="cs_1", mode=pb.PURCHASE_MODE_PAYMENT,
        items=[pb.PurchaseItem(price="credit_pack_500", quantity=2)], subscription_group="credits",
        success_url="https://app.example/ok", cancel_url="https://app.example/no", expires_at=ts(T0 + HOUR)))
    returned = await service.checkout.MarkPurchaseReturned(pb.MarkPurchaseReturnedRequest(purchase_id="pur_1"))
    assert returned.purchase.state == pb.PURCHASE_STATE_RETURNED
    assert not (await service.entitlements()).funding  # the redirect alone changes nothing
    paid = session_event("evt_cs1", "cs_1", T0, purchase_id="pur_1", items=[("credit_pack_500", 2)])
    await service.apply(paid, paid)
    purchase = (await service.checkout.GetPurchase(pb.GetPurchaseRequest(purchase_id="pur_1"))).purchase
    assert purchase.state == pb.PURCHASE_STATE_FINALIZED
    assert [t.to_state for t in purchase.transitions] == [pb.PURCHASE_STATE_PENDING, pb.PURCHASE_STATE_RETURNED,
                                                          pb.PURCHASE_STATE_FINALIZED]
    assert purchase.HasField("returned_at") and purchase.HasField("finalized_at")
    assert [(f.grant_program_code, f.amount) for f in (await service.entitlements()).funding] == [("credit_pack", 1000)]


async def test_a_subscription_purchase_finalizes_only_when_its_subscription_takes_effect(service: Client) -> None:
    await service.checkout.RegisterPurchase(pb.RegisterPurchaseRequest(
        purchase_id="pur_2", account_id="acct_1", checkout_session_id="cs_2", mode=pb.PURCHASE_MODE_SUBSCRIPTION,
        items=[pb.PurchaseItem(price="pro_monthly", quantity=1)], subscription_group="core",
        success_url="https://app.example/ok", cancel_url="https://app.example/no", expires_at=ts(T0 + HOUR)))
    await service.apply(session_event("evt_cs2", "cs_2", T0, purchase_id="pur_2", mode="subscription",
                                      subscription_id="sub_2", items=[("pro_monthly", 1)]))
    pending = (await service.checkout.GetPurchase(pb.GetPurchaseRequest(purchase_id="pur_2"))).purchase
    assert pending.state == pb.PURCHASE_STATE_PENDING and pending.subscription_id == "sub_2"
    await service.apply(subscription_event("evt_s2", "sub_2", T0, purchase_id="pur_2"))
    done = (await service.checkout.GetPurchase(pb.GetPurchaseRequest(checkout_session_id="cs_2"))).purchase
    assert done.state == pb.PURCHASE_STATE_FINALIZED


async def test_validation_names_every_problem_with_a_selection(service: Client) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0))
    reply = await service.checkout.ValidatePurchase(pb.ValidatePurchaseRequest(account_id="acct_1", items=[
        pb.PurchaseItem(price="starter_monthly", quantity=1), pb.PurchaseItem(price="nope", quantity=1),
        pb.PurchaseItem(price="credit_pack_500", quantity=0), pb.PurchaseItem(price="team_seats_monthly", quantity=1)]))
    codes = {p.code for p in reply.problems}
    assert not reply.ok
    assert {pb.PURCHASE_PROBLEM_CODE_GROUP_CONFLICT, pb.PURCHASE_PROBLEM_CODE_UNKNOWN_PRICE,
            pb.PURCHASE_PROBLEM_CODE_BAD_QUANTITY, pb.PURCHASE_PROBLEM_CODE_MIXED_GROUPS,
            pb.PURCHASE_PROBLEM_CODE_MIXED_MODES} <= codes
    assert list(reply.conflicting_subscription_ids) == ["sub_1"]
    ok = await service.checkout.ValidatePurchase(pb.ValidatePurchaseRequest(
        account_id="acct_1", items=[pb.PurchaseItem(price=pid("team_seats_monthly"), quantity=3)]))
    assert ok.ok and ok.subscription_group == "addons" and ok.mode == pb.PURCHASE_MODE_SUBSCRIPTION
    assert ok.provider_customer_id == "cus_1"


async def test_the_catalog_for_an_account_marks_an_occupied_group_as_needing_the_portal(service: Client) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0))
    catalog = await service.product.ListCatalog(pb.ListCatalogRequest(account_id="acct_1"))
    starter = next(p for p in catalog.prices if p.price.lookup_key == "starter_monthly")
    seats = next(p for p in catalog.prices if p.price.lookup_key == "team_seats_monthly")
    assert not starter.purchasability.purchasable and starter.purchasability.requires_portal
    assert seats.purchasability.purchasable
    assert [(g.subscription_group, list(g.subscription_ids)) for g in catalog.owned_groups] == [("core", ["sub_1"])]


@pytest.mark.parametrize(("call", "request_", "field"), [
    ("GetEntitlements", pb.GetEntitlementsRequest(), "account_id"),
    ("CheckGate", pb.CheckGateRequest(account_id="a"), "gate"),
    ("ValidatePurchase", pb.ValidatePurchaseRequest(account_id="a", items=[pb.PurchaseItem(quantity=1)]),
     "items[0].price"),
    ("ApplyProviderEvents", pb.ApplyProviderEventsRequest(events=[pb.ProviderEvent(type="x", created=ts(T0))]),
     "events[0].provider_event_id"),
    ("ApplyProviderEvents", pb.ApplyProviderEventsRequest(), "events"),
    ("GetPurchase", pb.GetPurchaseRequest(), "purchase_id"),
    ("RegisterPurchase", pb.RegisterPurchaseRequest(purchase_id="p", account_id="a", mode=1,
                                                    items=[pb.PurchaseItem(price="x", quantity=1)]),
     "checkout_session_id"),
])
async def test_a_missing_request_field_is_invalid_argument_naming_it(
    service: Client, call: str, request_: object, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(service.checkout if call != "CheckGate" else service.product, call)(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")


async def test_a_malformed_event_object_is_kept_as_rejected_without_failing_the_batch(service: Client) -> None:
    bad = pb.ProviderEvent(provider_event_id="evt_bad", type="customer.subscription.updated", created=ts(T0),
                           subscription=pb.SubscriptionSnapshot(subscription_id="sub_z"))
    good = subscription_event("evt_1", "sub_1", T0)
    results = await service.apply(bad, good)
    assert [r.outcome for r in results] == [REJECTED, APPLIED]
    assert "subscription.status is required" in results[0].reason


async def test_a_conflict_loser_takes_its_group_back_once_the_winner_ends(service: Client) -> None:
    await service.apply(subscription_event("evt_a", "sub_a", T0, items=[("starter_monthly", 1)]),
                        subscription_event("evt_b", "sub_b", T0 + HOUR, items=[("pro_monthly", 1)]))
    during = await service.entitlements(as_of=ts(T0 + 2 * HOUR))
    assert [(p.subscription_id, p.conflict) for p in during.plans] == [("sub_b", False), ("sub_a", True)]
    assert during.gate_bundle == "pro"
    ended = T0 + 3 * HOUR
    await service.apply(subscription_event("evt_b_end", "sub_b", ended, start=T0 + HOUR, status="canceled",
                                           ended_at=ended, items=[("pro_monthly", 1)]))
    after = await service.entitlements(as_of=ts(ended))
    assert [(p.subscription_id, p.conflict) for p in after.plans] == [("sub_a", False)]
    assert after.gate_bundle == "starter"
