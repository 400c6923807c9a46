"""The events each provider-side happening emits, in Stripe's order, with realistic timestamps and
the object as it was at that moment."""

from __future__ import annotations

from typing import Any

from provider_sim.billing import add_interval
from tests.provider_sim.builders import Catalog, checkout, events, ok, types
from tests.provider_sim.harness import SimServer

DAY = 86_400
SUBSCRIPTION_START = ["customer.created", "customer.subscription.created", "invoice.created", "invoice.finalized",
                      "invoice.paid", "invoice.payment_succeeded", "checkout.session.completed"]


def after(sim: SimServer, found_before: int, **params: Any) -> list[dict[str, Any]]:
    return events(sim, **params)[found_before:]


def complete(sim: SimServer, session_id: str, **body: Any) -> dict[str, Any]:
    found: dict[str, Any] = sim.control(f"/_sim/checkout/sessions/{session_id}/complete", body)
    return found


def subscribe(sim: SimServer, price: str, **body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A completed subscription checkout, and the events it emitted."""
    session = checkout(sim, price)
    seen = len(events(sim))
    done = complete(sim, session["id"], **body)
    return done, after(sim, seen)


def portal(sim: SimServer, subscription: str, **body: Any) -> list[dict[str, Any]]:
    seen = len(events(sim))
    sim.control(f"/_sim/subscriptions/{subscription}/portal", body)
    return after(sim, seen)


def advance(sim: SimServer, seconds: int) -> list[dict[str, Any]]:
    seen = len(events(sim))
    sim.control("/_sim/clock/advance", {"seconds": seconds})
    return after(sim, seen)


def test_a_subscription_checkout_emits_what_stripe_emits_in_order(sim: SimServer, catalog: Catalog) -> None:
    session = checkout(sim, catalog.monthly)
    done, emitted = subscribe(sim, catalog.monthly)
    assert types(emitted) == SUBSCRIPTION_START
    assert len({e["created"] for e in emitted}) == 1 and emitted[0]["created"] >= session["created"]
    assert all(e["request"] == {"id": None, "idempotency_key": None} for e in emitted)
    by_type = {e["type"]: e["data"]["object"] for e in emitted}

    sub = by_type["customer.subscription.created"]
    assert sub["status"] == "active" and sub["customer"] == by_type["customer.created"]["id"]
    assert sub["metadata"] == {"account_id": "acct_1", "purchase_id": "pur_1"}
    item = sub["items"]["data"][0]
    assert item["price"]["id"] == catalog.monthly
    assert item["current_period_end"] == add_interval(item["current_period_start"], "month", 1)
    assert "current_period_end" not in sub

    invoice = by_type["invoice.paid"]
    assert (invoice["status"], invoice["billing_reason"], invoice["amount_paid"]) == ("paid", "subscription_create",
                                                                                     2000)
    line = invoice["lines"]["data"][0]
    assert line["pricing"]["price_details"]["price"] == catalog.monthly
    assert line["period"] == {"start": item["current_period_start"], "end": item["current_period_end"]}
    assert invoice["parent"]["subscription_details"] == {"metadata": sub["metadata"], "subscription": sub["id"]}
    assert by_type["invoice.created"]["status"] == "draft" and by_type["invoice.finalized"]["status"] == "open"

    completed = by_type["checkout.session.completed"]
    assert (completed["status"], completed["payment_status"]) == ("complete", "paid")
    assert (completed["subscription"], completed["invoice"]) == (sub["id"], invoice["id"])
    assert completed["client_reference_id"] == "pur_1" and completed["metadata"]["account_id"] == "acct_1"
    assert done["status"] == "complete"


def test_a_checkout_for_an_existing_customer_creates_no_customer(sim: SimServer, catalog: Catalog) -> None:
    customer = ok(sim, "POST", "/v1/customers", {"metadata": {"account_id": "acct_1"}})
    session = checkout(sim, catalog.monthly, customer=customer["id"])
    seen = len(events(sim))
    complete(sim, session["id"])
    assert types(after(sim, seen)) == SUBSCRIPTION_START[1:]


def test_a_trial_starts_trialing_free_then_bills_at_its_end(sim: SimServer, catalog: Catalog) -> None:
    done, emitted = subscribe(sim, catalog.monthly, trial_days=14)
    sub = emitted[1]["data"]["object"]
    assert sub["status"] == "trialing" and sub["trial_end"] == sub["trial_start"] + 14 * DAY
    assert emitted[4]["data"]["object"]["amount_paid"] == 0
    assert done["payment_status"] == "no_payment_required"

    notice = advance(sim, 12 * DAY)
    assert types(notice) == ["customer.subscription.trial_will_end"]
    assert notice[0]["created"] == sub["trial_end"] - 3 * DAY
    ended = advance(sim, 3 * DAY)
    assert types(ended) == ["customer.subscription.updated", "invoice.created", "invoice.finalized", "invoice.paid",
                            "invoice.payment_succeeded"]
    assert ended[0]["data"]["object"]["status"] == "active"
    assert ended[0]["data"]["previous_attributes"]["status"] == "trialing"
    assert ended[0]["created"] == sub["trial_end"]
    paid = ended[3]["data"]["object"]
    assert (paid["billing_reason"], paid["amount_paid"]) == ("subscription_cycle", 2000)


def test_a_declined_payment_leaves_an_incomplete_subscription_and_an_open_session(
        sim: SimServer, catalog: Catalog) -> None:
    session = checkout(sim, catalog.monthly)
    seen = len(events(sim))
    declined = complete(sim, session["id"], payment="failed")
    emitted = after(sim, seen)
    assert types(emitted) == ["customer.created", "customer.subscription.created", "invoice.created",
                              "invoice.finalized", "invoice.payment_failed"]
    assert emitted[1]["data"]["object"]["status"] == "incomplete"
    assert declined["status"] == "open" and declined["subscription"] is None

    seen = len(events(sim))
    complete(sim, session["id"])
    retried = after(sim, seen)
    assert types(retried) == ["invoice.paid", "invoice.payment_succeeded", "customer.subscription.updated",
                              "checkout.session.completed"]
    assert retried[2]["data"]["previous_attributes"]["status"] == "incomplete"
    assert retried[3]["data"]["object"]["subscription"] == emitted[1]["data"]["object"]["id"]


def test_a_paid_one_time_checkout_completes_with_payment_status_paid(sim: SimServer, catalog: Catalog) -> None:
    session = checkout(sim, catalog.credits, mode="payment", customer_email="a@example.com")
    seen = len(events(sim))
    complete(sim, session["id"])
    emitted = after(sim, seen)
    assert types(emitted) == ["checkout.session.completed"]
    completed = emitted[0]["data"]["object"]
    assert (completed["payment_status"], completed["amount_total"], completed["customer"]) == ("paid", 900, None)
    assert completed["payment_intent"].startswith("pi_")
    assert completed["customer_details"]["email"] == "a@example.com"

    always = checkout(sim, catalog.credits, mode="payment", customer_creation="always")
    seen = len(events(sim))
    complete(sim, always["id"])
    assert types(after(sim, seen)) == ["customer.created", "checkout.session.completed"]


def test_an_asynchronous_payment_completes_unpaid_then_succeeds_or_fails(sim: SimServer, catalog: Catalog) -> None:
    outcomes = {}
    for result in ("succeeded", "failed"):
        session = checkout(sim, catalog.credits, mode="payment")
        seen = len(events(sim))
        complete(sim, session["id"], payment="async_pending")
        sim.control(f"/_sim/checkout/sessions/{session['id']}/async_result", {"result": result})
        outcomes[result] = after(sim, seen)
    assert types(outcomes["succeeded"]) == ["checkout.session.completed",
                                            "checkout.session.async_payment_succeeded"]
    assert [e["data"]["object"]["payment_status"] for e in outcomes["succeeded"]] == ["unpaid", "paid"]
    assert types(outcomes["failed"]) == ["checkout.session.completed", "checkout.session.async_payment_failed"]
    assert [e["data"]["object"]["payment_status"] for e in outcomes["failed"]] == ["unpaid", "unpaid"]
    again = sim.request("POST", f"/_sim/checkout/sessions/{session['id']}/async_result", {"result": "succeeded"})
    assert again.status == 400


def test_portal_changes_emit_updates_with_previous_attributes(sim: SimServer, catalog: Catalog) -> None:
    done, _ = subscribe(sim, catalog.monthly)
    sub_id = done["subscription"]
    item_id = ok(sim, "GET", f"/v1/subscriptions/{sub_id}")["items"]["data"][0]["id"]

    changed = portal(sim, sub_id, action="change_price", price="pro_yearly")
    # A new billing interval restarts the cycle and is invoiced at once, as at the provider.
    assert types(changed) == ["customer.subscription.updated", "invoice.created", "invoice.finalized",
                              "invoice.paid", "invoice.payment_succeeded"]
    assert changed[-1]["data"]["object"]["billing_reason"] == "subscription_update"
    item = changed[0]["data"]["object"]["items"]["data"][0]
    assert (item["id"], item["price"]["id"]) == (item_id, catalog.yearly)
    assert changed[0]["data"]["previous_attributes"]["items"]["data"][0]["price"]["id"] == catalog.monthly

    quantity = portal(sim, sub_id, action="change_quantity", quantity=5)
    assert quantity[0]["data"]["object"]["items"]["data"][0]["quantity"] == 5
    assert quantity[0]["data"]["previous_attributes"]["items"]["data"][0]["quantity"] == 1

    canceling = portal(sim, sub_id, action="cancel_at_period_end")
    obj, previous = canceling[0]["data"]["object"], canceling[0]["data"]["previous_attributes"]
    assert obj["cancel_at_period_end"] is True and obj["cancel_at"] == item["current_period_end"]
    assert previous["cancel_at_period_end"] is False and previous["cancel_at"] is None
    assert obj["cancellation_details"]["reason"] == "cancellation_requested"

    resumed = portal(sim, sub_id, action="resume")
    assert resumed[0]["data"]["previous_attributes"]["cancel_at_period_end"] is True
    assert resumed[0]["data"]["object"]["cancel_at"] is None
    assert portal(sim, sub_id, action="resume") == []  # nothing changed, nothing emitted


def test_the_api_update_emits_the_same_update_with_only_changed_metadata_keys(
        sim: SimServer, catalog: Catalog) -> None:
    done, _ = subscribe(sim, catalog.monthly)
    seen = len(events(sim))
    ok(sim, "POST", f"/v1/subscriptions/{done['subscription']}",
       {"metadata": {"purchase_id": "", "note": "hi"}, "proration_behavior": "none"},
       headers={"Idempotency-Key": "upd-1"})
    update = after(sim, seen)[0]
    assert update["data"]["previous_attributes"] == {"metadata": {"note": None, "purchase_id": "pur_1"}}
    assert update["data"]["object"]["metadata"] == {"account_id": "acct_1", "note": "hi"}
    assert update["request"]["id"].startswith("req_") and update["request"]["idempotency_key"] == "upd-1"


def test_cancel_at_period_end_cancels_when_the_clock_passes_the_period_end(sim: SimServer, catalog: Catalog) -> None:
    done, _ = subscribe(sim, catalog.monthly)
    sub_id = done["subscription"]
    period_end = ok(sim, "GET", f"/v1/subscriptions/{sub_id}")["items"]["data"][0]["current_period_end"]
    assert types(portal(sim, sub_id, action="cancel_at_period_end")) == ["customer.subscription.updated"]
    ended = advance(sim, 40 * DAY)
    assert types(ended) == ["customer.subscription.deleted"]
    obj = ended[0]["data"]["object"]
    assert (obj["status"], obj["ended_at"], ended[0]["created"]) == ("canceled", period_end, period_end)
    assert ok(sim, "GET", "/v1/subscriptions", {"customer": obj["customer"]})["data"] == []
    assert len(ok(sim, "GET", "/v1/subscriptions", {"status": "all"})["data"]) == 1


def test_cancel_now_emits_only_deleted_and_cannot_repeat(sim: SimServer, catalog: Catalog) -> None:
    done, _ = subscribe(sim, catalog.monthly)
    seen = len(events(sim))
    canceled = ok(sim, "DELETE", f"/v1/subscriptions/{done['subscription']}")
    assert canceled["status"] == "canceled" and canceled["ended_at"] == canceled["canceled_at"]
    assert types(after(sim, seen)) == ["customer.subscription.deleted"]
    again = sim.request("POST", f"/_sim/subscriptions/{done['subscription']}/portal",
                        json_body={"action": "cancel_now"}, key=None)
    assert again.status == 400


def test_advancing_past_period_ends_renews_each_period_at_its_boundary(sim: SimServer, catalog: Catalog) -> None:
    done, _ = subscribe(sim, catalog.monthly)
    first = ok(sim, "GET", f"/v1/subscriptions/{done['subscription']}")["items"]["data"][0]
    renewed = advance(sim, 62 * DAY)
    assert types(renewed) == ["customer.subscription.updated", "invoice.created", "invoice.finalized",
                              "invoice.paid", "invoice.payment_succeeded"] * 2
    update, paid = renewed[0], renewed[3]["data"]["object"]
    item = update["data"]["object"]["items"]["data"][0]
    assert update["created"] == first["current_period_end"] == item["current_period_start"]
    assert item["current_period_end"] == add_interval(first["current_period_start"], "month", 2)
    assert update["data"]["previous_attributes"]["items"]["data"][0]["current_period_end"] == \
        first["current_period_end"]
    assert paid["billing_reason"] == "subscription_cycle"
    assert paid["lines"]["data"][0]["period"] == {"start": item["current_period_start"],
                                                  "end": item["current_period_end"]}
    # Stripe's quirk: the renewal invoice's own period is the one that just ended.
    assert (paid["period_start"], paid["period_end"]) == (first["current_period_start"], first["current_period_end"])


def test_sessions_expire_on_request_and_when_their_time_passes(sim: SimServer, catalog: Catalog) -> None:
    asked = checkout(sim, catalog.monthly)
    seen = len(events(sim))
    sim.control(f"/_sim/checkout/sessions/{asked['id']}/expire")
    assert types(after(sim, seen)) == ["checkout.session.expired"]
    timed = checkout(sim, catalog.monthly, expires_at=asked["created"] + 3600)
    expired = advance(sim, 2 * 3600)
    assert types(expired) == ["checkout.session.expired"]
    assert expired[0]["created"] == timed["expires_at"] and expired[0]["data"]["object"]["status"] == "expired"
    late = sim.request("POST", f"/_sim/checkout/sessions/{timed['id']}/complete", json_body={}, key=None)
    assert late.status == 400


def test_catalog_changes_emit_product_and_price_events(sim: SimServer) -> None:
    ok(sim, "POST", "/v1/products", {"id": "pro", "name": "Pro"})
    price = ok(sim, "POST", "/v1/prices", {"product": "pro", "currency": "usd", "unit_amount": 100})
    ok(sim, "POST", "/v1/products/pro", {"metadata": {"billing_plan_code": "pro"}})
    ok(sim, "POST", f"/v1/prices/{price['id']}", {"active": False})
    emitted = events(sim)
    assert types(emitted) == ["product.created", "price.created", "product.updated", "price.updated"]
    assert emitted[2]["data"]["previous_attributes"]["metadata"] == {"billing_plan_code": None}
    assert emitted[3]["data"]["previous_attributes"] == {"active": True}
