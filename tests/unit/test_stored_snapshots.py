"""Stored history stays readable. Every provider event is kept as its normalized snapshot (the
wire message's bytes) and an account is derived again from those bytes on every change, so a
snapshot written today must decode to the same values after any change to the protos (`buf
breaking` in `make lint` guards the field numbers; this guards what they mean to the service)."""

from __future__ import annotations

from datetime import UTC, datetime

from entitlement_service.domain.model import Status
from entitlement_service.domain.provider import SubscriptionSnapshot
from entitlement_service.grpc.convert_in import stored_event

# A `customer.subscription.updated` snapshot as the service stored it (metadata account and
# purchase, one item of two seats, cancelling at period end).
STORED = bytes.fromhex(
    "0a0a6576745f676f6c64656e121d637573746f6d65722e737562736372697074696f6e2e757064617465641a060880dbe6ca"
    "0622060880dbe6ca062a0a323032362d30382d32373a0b616363745f676f6c64656e52ab010a0a7375625f676f6c64656e12"
    "0a6375735f676f6c64656e180422060880f2d6ca062a060880f2d6ca06480162470a1973695f7375625f676f6c64656e5f70"
    "726f5f6d6f6e74686c7912180a1170726963655f70726f5f6d6f6e74686c79120370726f180222060880f2d6ca062a060880"
    "8cf5cb066a190a0a6163636f756e745f6964120b616363745f676f6c64656e6a190a0b70757263686173655f6964120a7075"
    "725f676f6c64656e"
)


def test_a_snapshot_stored_earlier_decodes_to_the_event_it_was() -> None:
    event = stored_event(STORED)
    assert (event.provider_event_id, event.type, event.account_id, event.api_version) == (
        "evt_golden", "customer.subscription.updated", "acct_golden", "2026-08-27")
    assert event.created == event.received_at == datetime(2026, 1, 4, tzinfo=UTC)
    sub = event.object
    assert isinstance(sub, SubscriptionSnapshot)
    assert (sub.subscription_id, sub.provider_customer_id, sub.status, sub.event_id) == (
        "sub_golden", "cus_golden", Status.ACTIVE, "evt_golden")
    assert (sub.start_date, sub.cancel_at_period_end, sub.cancel_at, sub.ended_at) == (
        datetime(2026, 1, 1, tzinfo=UTC), True, None, None)
    assert sub.metadata == {"account_id": "acct_golden", "purchase_id": "pur_golden"}
    [item] = sub.items
    assert (item.item_id, item.price.price_id, item.price.product_id, item.quantity) == (
        "si_sub_golden_pro_monthly", "price_pro_monthly", "pro", 2)
    assert (item.current_period_start, item.current_period_end) == (
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC))


def test_decoding_a_stored_snapshot_and_storing_it_again_gives_the_same_bytes() -> None:
    assert stored_event(STORED).snapshot == STORED
