"""Signals that tell the truth on a bad day: the checkout-to-finalized latency is measured from the
provider's completion whoever finalizes (a webhook or the reconciler), and an event that arrives
out of order is counted as such even when it still applies."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client
from tests.support.provider import MONTH, T0, invoice_event, subscription_event, ts


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def finalize_seconds() -> tuple[float, float]:
    return (sample("purchase_finalize_seconds_count", since="provider_completion"),
            sample("purchase_finalize_seconds_sum", since="provider_completion"))


async def register(service: Client, purchase_id: str, session_id: str) -> None:
    await service.checkout.RegisterPurchase(pb.RegisterPurchaseRequest(
        purchase_id=purchase_id, account_id="acct_1", checkout_session_id=session_id,
        mode=pb.PURCHASE_MODE_SUBSCRIPTION, items=[pb.PurchaseItem(price="pro_monthly", quantity=1)],
        subscription_group="core", success_url="https://app.example/ok", cancel_url="https://app.example/no",
        expires_at=ts(T0 + MONTH)))


async def test_a_purchase_the_reconciler_finalizes_is_timed_from_the_providers_completion(service: Client) -> None:
    await register(service, "pur_1", "cs_1")
    before_count, before_sum = finalize_seconds()
    # The webhooks were lost: the reconciler reads the subscription the checkout created at T0.
    found = subscription_event("evt_lost", "sub_1", T0, purchase_id="pur_1").subscription
    read_at = datetime.now(UTC)
    await service.checkout.ApplyReconciliation(pb.ApplyReconciliationRequest(
        read_at=Timestamp(seconds=int(read_at.timestamp())),
        accounts=[pb.ProviderAccountState(account_id="acct_1", provider_customer_id="cus_1", subscriptions=[found])]))
    purchase = (await service.checkout.GetPurchase(pb.GetPurchaseRequest(purchase_id="pur_1"))).purchase
    assert purchase.state == pb.PURCHASE_STATE_FINALIZED
    count, total = finalize_seconds()
    assert count == before_count + 1
    assert total - before_sum >= (read_at - T0).total_seconds()  # not the instant the reconciler read it


async def test_a_late_event_that_still_applies_is_counted_as_out_of_order(service: Client) -> None:
    await service.apply(subscription_event("evt_new", "sub_1", T0 + MONTH, start=T0))
    before = sample("provider_events_late_total", type="invoice.paid", outcome="applied")
    [late] = await service.apply(invoice_event("evt_old", "in_1", "sub_1", T0,
                                               lines=[("pro_monthly", 1, T0, T0 + MONTH)]))
    assert late.outcome == pb.EVENT_OUTCOME_APPLIED
    assert sample("provider_events_late_total", type="invoice.paid", outcome="applied") == before + 1
    on_time_before = sample("provider_events_late_total", type="invoice.paid", outcome="applied")
    await service.apply(invoice_event("evt_next", "in_2", "sub_1", T0 + MONTH + MONTH,
                                      lines=[("pro_monthly", 1, T0 + MONTH, T0 + MONTH + MONTH)]))
    assert sample("provider_events_late_total", type="invoice.paid", outcome="applied") == on_time_before
