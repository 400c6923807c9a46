"""Provider events in the current and older API shapes, normalized."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from checkout_service.stripe.normalize import MalformedEvent, envelope, normalize, product_ids, timestamp, unreadable
from selfserve.entitlement.v1 import entitlement_pb2 as pb

# Stripe's own example objects (a copy of the ones this project reads, from fixtures3.json).
FIXTURES = json.loads((Path(__file__).resolve().parents[1] / "support" / "stripe_fixtures.json").read_text())[
    "resources"]
NOW = datetime(2026, 3, 1, tzinfo=UTC)
PRODUCTS = {"prod_pro": {"id": "prod_pro", "object": "product", "name": "Pro", "active": True,
                         "metadata": {"subscription_group": "core"}, "updated": 1_700_000_000}}


def event(kind: str, obj: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "type": kind, "created": 1_770_000_000, "api_version": "2026-08-27",
            "data": {"object": obj}, **extra}


def current_subscription() -> dict[str, Any]:
    sub = copy.deepcopy(FIXTURES["subscription"])
    item = copy.deepcopy(FIXTURES["subscription_item"])
    item.update({"id": "si_1", "quantity": 3, "current_period_start": 1_770_000_000,
                 "current_period_end": 1_772_592_000})
    item["price"] = {**FIXTURES["price"], "id": "price_pro", "product": "prod_pro", "lookup_key": "pro_monthly",
                     "metadata": {"billing_plan_code": "pro"}}
    sub.update({"id": "sub_1", "customer": "cus_1", "status": "active", "metadata": {"account_id": "acct_1"},
                "items": {"object": "list", "data": [item]}})
    return sub


def test_a_current_subscription_keeps_item_periods_metadata_and_the_products_metadata() -> None:
    normalized = normalize(event("customer.subscription.updated", current_subscription()), b"raw", NOW, PRODUCTS)
    sub = normalized.subscription
    assert (normalized.account_id, sub.subscription_id, sub.provider_customer_id) == ("acct_1", "sub_1", "cus_1")
    assert sub.status == pb.SUBSCRIPTION_STATUS_ACTIVE
    [item] = sub.items
    assert (item.price.price_id, item.quantity, item.price.lookup_key) == ("price_pro", 3, "pro_monthly")
    assert item.current_period_end.seconds == 1_772_592_000
    assert dict(item.price.product.metadata) == {"subscription_group": "core"}
    assert normalized.raw_payload == b"raw" and normalized.created.seconds == 1_770_000_000


def test_a_subscription_in_the_older_shape_takes_its_periods_and_price_from_the_subscription_and_plan() -> None:
    sub = current_subscription()
    item = sub["items"]["data"][0]
    del item["current_period_start"], item["current_period_end"]
    item["plan"] = {"object": "plan", "id": "price_pro", "product": "prod_pro", "interval": "month",
                    "interval_count": 1, "amount": 2000, "currency": "usd", "active": True, "metadata": {}}
    del item["price"]
    sub.update({"current_period_start": 1_770_000_000, "current_period_end": 1_772_592_000})
    normalized = normalize(event("customer.subscription.updated", sub, api_version="2024-06-20"), b"", NOW, PRODUCTS)
    [item_out] = normalized.subscription.items
    assert item_out.price.price_id == "price_pro" and item_out.price.interval == "month"
    assert item_out.current_period_end.seconds == 1_772_592_000


def test_products_the_payload_does_not_carry_are_named_for_fetching() -> None:
    assert product_ids("customer.subscription.updated", current_subscription()) == {"prod_pro"}


@pytest.mark.parametrize("line_shape", ["current", "older"])
def test_a_paid_invoice_names_its_subscription_and_each_lines_price_and_period(line_shape: str) -> None:
    invoice = copy.deepcopy(FIXTURES["invoice"])
    line = copy.deepcopy(invoice["lines"]["data"][0])
    line.update({"quantity": 2, "period": {"start": 1_770_000_000, "end": 1_772_592_000}})
    if line_shape == "current":
        line["pricing"] = {"type": "price_details", "price_details": {"price": "price_pro", "product": "prod_pro"}}
        invoice["parent"] = {"type": "subscription_details", "quote_details": None,
                             "subscription_details": {"subscription": "sub_1", "metadata": {"account_id": "acct_1"}}}
        del invoice["subscription"]  # current API versions name it only under `parent`
    else:
        line["price"] = {"id": "price_pro", "object": "price"}
        invoice.update({"subscription": "sub_1", "parent": None,
                        "subscription_details": {"metadata": {"account_id": "acct_1"}}})
    invoice.update({"id": "in_1", "customer": "cus_1", "status": "paid", "lines": {"data": [line]}})
    normalized = normalize(event("invoice.paid", invoice), b"", NOW, {})
    assert normalized.account_id == "acct_1"
    assert normalized.invoice.subscription_id == "sub_1" and normalized.invoice.paid
    [out] = normalized.invoice.lines
    assert (out.price_id, out.quantity, out.period_start.seconds) == ("price_pro", 2, 1_770_000_000)


@pytest.mark.parametrize(("line_shape", "proration"), [("current", True), ("current", False), ("older", True),
                                                    ("older", False)])
def test_an_invoice_line_says_whether_it_prorates_a_change_and_what_it_charges(line_shape: str,
                                                                              proration: bool) -> None:
    invoice = copy.deepcopy(FIXTURES["invoice"])
    line = copy.deepcopy(FIXTURES["line_item"])
    line.update({"amount": -650 if proration else 2000, "quantity": 1,
                 "period": {"start": 1_770_000_000, "end": 1_772_592_000}})
    if line_shape == "current":
        line["pricing"] = {"type": "price_details", "price_details": {"price": "price_pro", "product": "prod_pro"}}
        line["parent"] = {"type": "subscription_item_details", "invoice_item_details": None,
                          "subscription_item_details": {**line["parent"]["subscription_item_details"],
                                                        "proration": proration}}
    else:
        line.update({"price": {"id": "price_pro", "object": "price"}, "proration": proration, "parent": None})
    invoice.update({"id": "in_1", "customer": "cus_1", "status": "paid", "lines": {"data": [line]}})
    [out] = normalize(event("invoice.paid", invoice), b"", NOW, {}).invoice.lines
    assert (out.proration, out.amount) == (proration, -650 if proration else 2000)


def test_a_checkout_session_carries_the_purchase_and_account() -> None:
    session = copy.deepcopy(FIXTURES["checkout.session"])
    session.update({"id": "cs_1", "client_reference_id": "pur_1", "customer": "cus_1", "mode": "payment",
                    "status": "complete", "payment_status": "paid", "metadata": {"account_id": "acct_1"},
                    "line_items": {"data": [{"quantity": 2, "price": {"id": "price_pack", "product": "prod_pro"}}]}})
    normalized = normalize(event("checkout.session.completed", session), b"", NOW, PRODUCTS)
    cs = normalized.checkout_session
    assert (cs.purchase_id, cs.mode, cs.payment_status, normalized.account_id) == (
        "pur_1", pb.PURCHASE_MODE_PAYMENT, "paid", "acct_1")
    assert [(li.price.price_id, li.quantity) for li in cs.line_items] == [("price_pack", 2)]


def test_product_and_price_events_take_the_events_time_and_deletions() -> None:
    deleted = normalize(event("product.deleted", {**FIXTURES["product"], "id": "prod_x"}), b"", NOW, {})
    assert deleted.product.deleted and deleted.product.provider_updated_at.seconds == 1_770_000_000
    price = normalize(event("price.updated", {**FIXTURES["price"], "id": "price_x", "product": "prod_pro"}),
                      b"", NOW, PRODUCTS)
    assert price.price.product.product_id == "prod_pro"


def test_an_event_type_we_do_not_use_carries_no_object() -> None:
    assert normalize(event("charge.refunded", {"id": "ch_1"}), b"", NOW, {}).WhichOneof("object") is None


@pytest.mark.parametrize(("body", "why"), [
    ([], "not a JSON object"),
    ({"type": "x", "created": 1, "data": {"object": {}}}, "no id"),
    ({"id": "evt", "created": 1, "data": {"object": {}}}, "no type"),
    ({"id": "evt", "type": "x", "created": "soon", "data": {"object": {}}}, "no integer created"),
    ({"id": "evt", "type": "x", "created": 1, "data": {}}, "no data.object"),
])
def test_a_body_that_is_not_an_event_is_refused_with_the_reason(body: object, why: str) -> None:
    with pytest.raises(MalformedEvent, match=why):
        envelope(body)


def test_times_become_timestamps_and_one_beyond_what_a_timestamp_holds_is_malformed() -> None:
    sub = current_subscription()
    out = normalize(event("customer.subscription.updated", sub), b"", NOW, PRODUCTS)
    assert out.created.ToDatetime(tzinfo=UTC) == datetime.fromtimestamp(1_770_000_000, UTC)
    period_end = out.subscription.items[0].current_period_end
    assert period_end.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 4, 2, 40, tzinfo=UTC)
    sub["items"]["data"][0]["current_period_end"] = 10**12
    with pytest.raises(MalformedEvent, match="timestamp 1000000000000 is out of range"):
        normalize(event("customer.subscription.updated", sub), b"", NOW, PRODUCTS)


@pytest.mark.parametrize("created", [10**30, -(10**30)], ids=["far future", "far past"])
def test_an_unreadable_event_with_a_time_out_of_range_carries_the_same_time_at_every_delivery(created: int) -> None:
    body = event("customer.subscription.updated", current_subscription(), created=created)
    first = unreadable(body, b"{}", NOW, "timestamp out of range")
    again = unreadable(body, b"{}", datetime(2026, 3, 2, tzinfo=UTC), "timestamp out of range")
    assert first.created == again.created
    assert first.created.ToDatetime(tzinfo=UTC).year == (9999 if created > 0 else 1)


def test_a_subscription_with_an_unknown_status_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match="unknown status"):
        normalize(event("customer.subscription.updated", {**current_subscription(), "status": "zombie"}), b"", NOW, {})


ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))]


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(ZONES)))
def test_a_time_becomes_the_timestamp_the_protobuf_library_makes_of_it(at: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(at)
    assert timestamp(at) == expected
