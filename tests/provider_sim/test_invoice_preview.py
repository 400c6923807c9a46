"""`invoices.create_preview` through the official SDK: the invoice a subscription change (or a new
subscription) would bring, computed by the billing that carries the change out, so a preview
followed by the real change bills exactly what was previewed; a preview writes and emits nothing."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.provider_sim.builders import Catalog, events, ok
from tests.provider_sim.harness import SimServer
from tests.provider_sim.test_event_sequences import DAY, advance, subscribe

Line = tuple[str, int, int, bool]


@pytest.fixture
def sdk(sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe, "api_key", "sk_test_provider_sim_tests")
    monkeypatch.setattr(stripe, "api_base", sim.url)


def lines(invoice: dict[str, Any]) -> list[Line]:
    """(price, quantity, amount, proration) per line."""
    return [(line["pricing"]["price_details"]["price"], line["quantity"], line["amount"],
             line["parent"]["subscription_item_details"]["proration"]) for line in invoice["lines"]["data"]]


def started(sim: SimServer, catalog: Catalog, quantity: int = 1) -> dict[str, Any]:
    done, _ = subscribe(sim, catalog.monthly)
    sub = ok(sim, "GET", f"/v1/subscriptions/{done['subscription']}")
    if quantity != 1:
        item = sub["items"]["data"][0]["id"]
        sub = ok(sim, "POST", f"/v1/subscriptions/{sub['id']}", {"items": [{"id": item, "quantity": quantity}],
                                                                   "proration_behavior": "none"})
    return sub  # type: ignore[no-any-return]


def preview(sim: SimServer, **params: Any) -> dict[str, Any]:
    return ok(sim, "POST", "/v1/invoices/create_preview", params)  # type: ignore[no-any-return]


def test_a_previewed_change_billed_at_once_is_the_invoice_the_change_then_bills(
    sim: SimServer, catalog: Catalog, sdk: None
) -> None:
    sub = started(sim, catalog)
    item = sub["items"]["data"][0]
    advance(sim, 10 * DAY)
    at = item["current_period_start"] + 10 * DAY
    seen, invoices = len(events(sim)), ok(sim, "GET", "/v1/invoices")["data"]
    details = {"items": [{"id": item["id"], "quantity": 3}], "proration_behavior": "always_invoice",
               "proration_date": at}
    found = stripe.Invoice.create_preview(customer=sub["customer"], subscription=sub["id"],
                                          subscription_details=details)
    assert isinstance(found, stripe.Invoice) and found.object == "invoice" and found.id.startswith("upcoming_in_")
    assert (found.status, found.billing_reason, found.number) == ("draft", "subscription_update", None)
    left = (item["current_period_end"] - at) / (item["current_period_end"] - item["current_period_start"])
    previewed = found.to_dict()
    assert lines(previewed) == [(catalog.monthly, 1, -round(2000 * left), True),
                                (catalog.monthly, 3, round(6000 * left), True)]
    assert all(line.id.startswith("il_tmp_") for line in found.lines.data)
    assert found.amount_due == found.subtotal == found.total == round(6000 * left) - round(2000 * left)
    assert (found.amount_paid, found.amount_remaining) == (0, found.amount_due)
    assert len(events(sim)) == seen and ok(sim, "GET", "/v1/invoices")["data"] == invoices
    assert ok(sim, "GET", f"/v1/subscriptions/{sub['id']}")["items"]["data"][0]["quantity"] == 1

    ok(sim, "POST", f"/v1/subscriptions/{sub['id']}", {"items": [{"id": item["id"], "quantity": 3}],
                                                        "proration_behavior": "always_invoice",
                                                        "proration_date": at})
    billed = ok(sim, "GET", "/v1/invoices", {"subscription": sub["id"], "limit": 1})["data"][0]
    assert lines(billed) == lines(previewed) and billed["amount_due"] == found.amount_due


def test_a_change_kept_for_the_next_invoice_previews_that_invoice(sim: SimServer, catalog: Catalog) -> None:
    sub = started(sim, catalog, quantity=2)
    item = sub["items"]["data"][0]
    advance(sim, 5 * DAY)
    at = item["current_period_start"] + 5 * DAY
    changes = {"items": [{"id": item["id"], "price": catalog.team_monthly, "quantity": 1}], "proration_date": at}
    found = preview(sim, subscription=sub["id"], subscription_details=changes)
    assert found["billing_reason"] == "subscription_cycle"
    assert [(price, q, proration) for price, q, _, proration in lines(found)] == [
        (catalog.monthly, 2, True), (catalog.team_monthly, 1, True), (catalog.team_monthly, 1, False)]
    assert lines(found)[2][2] == 5000
    unchanged = preview(sim, subscription=sub["id"])
    assert lines(unchanged) == [(catalog.monthly, 2, 4000, False)]

    ok(sim, "POST", f"/v1/subscriptions/{sub['id']}", changes)
    renewal = next(e["data"]["object"] for e in advance(sim, 26 * DAY) if e["type"] == "invoice.paid")
    assert lines(renewal) == lines(found) and renewal["amount_due"] == found["amount_due"]
    assert [line["period"] for line in renewal["lines"]["data"]] == [
        line["period"] for line in found["lines"]["data"]]


def test_a_new_subscription_previews_its_first_invoice(sim: SimServer, catalog: Catalog, sdk: None) -> None:
    customer = ok(sim, "POST", "/v1/customers", {"email": "a@example.com"})
    found = stripe.Invoice.create_preview(customer=customer["id"], subscription_details={
        "items": [{"price": catalog.monthly, "quantity": 2}, {"price": catalog.team_monthly}]})
    assert (found.billing_reason, found.amount_due, found.parent, found.customer) == (
        "subscription_create", 2 * 2000 + 5000, None, customer["id"])  # no subscription exists yet
    assert [line.quantity for line in found.lines.data] == [2, 1]
    assert ok(sim, "GET", "/v1/subscriptions", {"customer": customer["id"]})["data"] == []
    assert ok(sim, "GET", f"/v1/customers/{customer['id']}")["currency"] is None


def test_canceling_previews_as_it_bills(sim: SimServer, catalog: Catalog) -> None:
    sub = started(sim, catalog)
    at_end = sim.request("POST", "/v1/invoices/create_preview", {
        "subscription": sub["id"], "subscription_details": {"cancel_at_period_end": True}})
    assert at_end.status == 404 and at_end.json()["error"]["code"] == "invoice_upcoming_none"
    now = preview(sim, subscription=sub["id"], subscription_details={"cancel_now": True})
    assert (now["lines"]["data"], now["amount_due"], now["total"]) == ([], 0, 0)
    assert ok(sim, "GET", f"/v1/subscriptions/{sub['id']}")["status"] == "active"
    ok(sim, "POST", f"/v1/subscriptions/{sub['id']}", {"cancel_at_period_end": True})
    resumed = preview(sim, subscription=sub["id"], subscription_details={"cancel_at_period_end": False})
    assert resumed["billing_reason"] == "subscription_cycle" and resumed["amount_due"] == 2000
    ok(sim, "DELETE", f"/v1/subscriptions/{sub['id']}")
    ended = sim.request("POST", "/v1/invoices/create_preview", {"subscription": sub["id"]})
    assert ended.status == 404 and ended.json()["error"]["code"] == "invoice_upcoming_none"


def test_preview_requests_are_checked_as_updates_are(sim: SimServer, catalog: Catalog) -> None:
    sub = started(sim, catalog)
    item = sub["items"]["data"][0]
    other = ok(sim, "POST", "/v1/customers", {})
    cases: list[tuple[dict[str, Any], str | None, str | None]] = [
        ({"subscription": "sub_missing"}, "resource_missing", "subscription"),
        ({"subscription_details": {"items": [{"price": catalog.monthly}]}}, "parameter_missing", "customer"),
        ({"customer": other["id"], "subscription": sub["id"]}, None, "subscription"),
        ({"subscription": sub["id"], "subscription_details": {"proration_behavior": "later"}}, None,
         "subscription_details[proration_behavior]"),
        ({"subscription": sub["id"], "subscription_details": {
            "items": [{"id": item["id"], "quantity": 2}], "proration_date": item["current_period_end"] + 1}},
         None, "proration_date"),
        ({"subscription": sub["id"], "subscription_details": {"items": [{"id": "si_missing", "quantity": 2}]}},
         "resource_missing", "subscription_details[items][0][id]"),
        ({"subscription": sub["id"], "subscription_details": {"items": [{"price": catalog.credits}]}}, None,
         "subscription_details[items][0][price]"),
        ({"subscription": sub["id"], "subscription_details": {"cancel_now": True, "cancel_at_period_end": True}},
         None, "subscription_details[cancel_now]"),
        ({"customer": other["id"], "subscription_details": {"cancel_now": True}}, None, "subscription_details"),
        ({"subscription": sub["id"], "subscription_details": {"billing_cycle_anchor": "now"}}, "parameter_unknown",
         "subscription_details[billing_cycle_anchor]"),
    ]
    for params, code, param in cases:
        answer = sim.request("POST", "/v1/invoices/create_preview", params)
        error = answer.json()["error"]
        assert (answer.status, error.get("code"), error.get("param")) == (400, code, param), params


BEHAVIORS = st.sampled_from(["create_prorations", "always_invoice", "none"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start_quantity=st.integers(1, 4), days=st.integers(0, 27), quantity=st.integers(1, 5),
       price=st.sampled_from(["monthly", "team_monthly", "yearly"]), behavior=BEHAVIORS,
       back=st.floats(0, 1), kept_change=st.booleans())
def test_a_preview_then_the_change_bills_exactly_the_preview(
    sim: SimServer, catalog: Catalog, start_quantity: int, days: int, quantity: int, price: str, behavior: str,
    back: float, kept_change: bool,
) -> None:
    """Any quantity or price change, billed by any proration behavior, counted from any moment of
    the period so far, after a change whose prorations are kept for the next invoice or not: the
    change bills the previewed invoice, at once or at the period end."""
    sub = started(sim, catalog, quantity=start_quantity)
    item = sub["items"]["data"][0]
    advance(sim, days * DAY)
    if kept_change:
        ok(sim, "POST", f"/v1/subscriptions/{sub['id']}", {"items": [{"id": item["id"],
                                                                       "quantity": start_quantity + 1}]})
    now = sim.control("/_sim/clock", method="GET")["now"]
    at = item["current_period_start"] + round((now - item["current_period_start"]) * back)
    details = {"items": [{"id": item["id"], "price": getattr(catalog, price), "quantity": quantity}],
               "proration_behavior": behavior, "proration_date": at}
    found = preview(sim, customer=sub["customer"], subscription=sub["id"], subscription_details=details)
    prorated = [line for line in found["lines"]["data"] if line["parent"]["subscription_item_details"]["proration"]]
    kept = 2 if kept_change else 0
    assert all(line["period"]["start"] == at for line in prorated[kept:])
    assert len(prorated) == kept + (0 if behavior == "none" else 2 if price != "yearly" else 1) or (
        price == "monthly" and quantity == (start_quantity + 1 if kept_change else start_quantity))
    invoices_before = len(ok(sim, "GET", "/v1/invoices", {"subscription": sub["id"]})["data"])

    ok(sim, "POST", f"/v1/subscriptions/{sub['id']}", details)
    billed = ok(sim, "GET", "/v1/invoices", {"subscription": sub["id"], "limit": 100})["data"]
    if found["billing_reason"] == "subscription_update":
        assert len(billed) == invoices_before + 1
        actual = billed[0]
    else:
        assert len(billed) == invoices_before
        end = ok(sim, "GET", f"/v1/subscriptions/{sub['id']}")["items"]["data"][0]["current_period_end"]
        advance(sim, end - sim.control("/_sim/clock", method="GET")["now"])
        actual = ok(sim, "GET", "/v1/invoices", {"subscription": sub["id"], "limit": 1})["data"][0]
        assert actual["billing_reason"] == "subscription_cycle"
        assert [line["period"] for line in actual["lines"]["data"]] == [
            line["period"] for line in found["lines"]["data"]]
    assert lines(actual) == lines(found)
    assert (actual["amount_due"], actual["subtotal"], actual["total"]) == (
        found["amount_due"], found["subtotal"], found["total"])
    assert actual["billing_reason"] == found["billing_reason"]
