"""Refunds through the official SDK: every paid invoice and paid one-time checkout holds a payment
intent with its charge; a refund names either, in full or in part, is refused with Stripe's errors
past what remains, emits `charge.refunded` and `refund.created`, and replays under an
`Idempotency-Key`."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.provider_sim.builders import Catalog, checkout, events, ok, types
from tests.provider_sim.harness import Receiver, SimServer
from tests.provider_sim.test_delivery import register
from tests.provider_sim.test_event_sequences import DAY, advance, complete, subscribe


def paid_intent(sim: SimServer, invoice_id: str) -> dict[str, Any]:
    """The payment intent that paid the invoice, found as a client finds it: through its payments."""
    [payment] = ok(sim, "GET", "/v1/invoice_payments", {"invoice": invoice_id})["data"]
    assert payment["status"] == "paid" and payment["payment"]["type"] == "payment_intent"
    return ok(sim, "GET", f"/v1/payment_intents/{payment['payment']['payment_intent']}")  # type: ignore[no-any-return]


def bought_pack(sim: SimServer, catalog: Catalog, quantity: int = 1) -> dict[str, Any]:
    session = checkout(sim, catalog.credits, mode="payment", quantity=quantity)
    return complete(sim, session["id"])


def test_a_paid_subscription_invoice_names_its_payment_intent_and_charge(sim: SimServer, catalog: Catalog) -> None:
    done, _ = subscribe(sim, catalog.monthly)
    invoice = ok(sim, "GET", f"/v1/invoices/{done['invoice']}", {"expand": ["payments"]})
    [payment] = invoice["payments"]["data"]
    assert (payment["invoice"], payment["amount_paid"], payment["currency"]) == (invoice["id"], 2000, "usd")
    intent = paid_intent(sim, invoice["id"])
    assert (intent["status"], intent["amount"], intent["amount_received"]) == ("succeeded", 2000, 2000)
    assert intent["customer"] == invoice["customer"] and "invoice" not in intent
    charge = ok(sim, "GET", f"/v1/charges/{intent['latest_charge']}")
    assert (charge["amount"], charge["amount_refunded"], charge["refunded"], charge["paid"]) == (2000, 0, False, True)
    assert charge["payment_intent"] == intent["id"] and "refunds" not in charge
    assert done["payment_intent"] is None  # a subscription's payment is its invoice's, as at Stripe
    assert [c["id"] for c in ok(sim, "GET", "/v1/charges", {"payment_intent": intent["id"]})["data"]] == [
        charge["id"]]


def test_renewals_are_paid_too_and_an_invoice_with_nothing_due_has_no_payment(
    sim: SimServer, catalog: Catalog
) -> None:
    done, _ = subscribe(sim, catalog.monthly, trial_days=7)
    assert ok(sim, "GET", "/v1/invoice_payments", {"invoice": done["invoice"]})["data"] == []
    renewal = next(e["data"]["object"] for e in advance(sim, 8 * DAY) if e["type"] == "invoice.paid")
    assert renewal["billing_reason"] == "subscription_cycle"
    assert paid_intent(sim, renewal["id"])["amount"] == renewal["amount_paid"] == 2000


def test_a_one_time_checkout_holds_a_refundable_payment_intent(sim: SimServer, catalog: Catalog) -> None:
    done = bought_pack(sim, catalog, quantity=2)
    intent = ok(sim, "GET", f"/v1/payment_intents/{done['payment_intent']}", {"expand": ["latest_charge"]})
    assert (intent["status"], intent["amount"], intent["latest_charge"]["amount"]) == ("succeeded", 1800, 1800)
    refund = stripe.StripeClient(**client_args(sim)).v1.refunds.create(params={"payment_intent": intent["id"]})
    assert (refund.amount, refund.charge, refund.status) == (1800, intent["latest_charge"]["id"], "succeeded")


def test_an_asynchronous_payment_is_refundable_once_it_succeeds(sim: SimServer, catalog: Catalog) -> None:
    session = checkout(sim, catalog.credits, mode="payment")
    done = complete(sim, session["id"], payment="async_pending")
    answer = sim.request("POST", "/v1/refunds", {"payment_intent": done["payment_intent"]})
    assert answer.status == 400 and answer.json()["error"]["code"] == "payment_intent_unexpected_state"
    sim.control(f"/_sim/checkout/sessions/{session['id']}/async_result", {"result": "succeeded"})
    assert ok(sim, "POST", "/v1/refunds", {"payment_intent": done["payment_intent"]})["amount"] == 900


def client_args(sim: SimServer) -> dict[str, Any]:
    return {"api_key": "sk_test_provider_sim_tests", "base_addresses": {"api": sim.url}, "max_network_retries": 0}


def test_the_sdks_refund_resource_refunds_in_part_then_in_full_then_refuses(
    sim: SimServer, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe, "api_key", "sk_test_provider_sim_tests")
    monkeypatch.setattr(stripe, "api_base", sim.url)
    done, _ = subscribe(sim, catalog.monthly)
    intent = paid_intent(sim, done["invoice"])
    first = stripe.Refund.create(payment_intent=intent["id"], amount=500, reason="requested_by_customer",
                                 metadata={"purchase_id": "pur_1"})
    assert isinstance(first, stripe.Refund) and first.id.startswith("re_")
    assert (first.amount, first.reason, first.payment_intent, first.metadata.to_dict()) == (
        500, "requested_by_customer", intent["id"], {"purchase_id": "pur_1"})
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        stripe.Refund.create(charge=intent["latest_charge"], amount=1501)
    assert (too_much.value.code, too_much.value.param, too_much.value.http_status) == ("amount_too_large", "amount",
                                                                                       400)
    assert "greater than unrefunded amount on charge (15.00 USD)" in str(too_much.value.user_message)
    rest = stripe.Refund.create(charge=intent["latest_charge"])
    assert rest.amount == 1500
    with pytest.raises(stripe.InvalidRequestError) as again:
        stripe.Refund.create(payment_intent=intent["id"])
    assert again.value.code == "charge_already_refunded"
    charge = stripe.Charge.retrieve(intent["latest_charge"], expand=["refunds"])
    assert (charge.amount_refunded, charge.refunded) == (2000, True)
    assert [r.id for r in charge.refunds.data] == [rest.id, first.id]
    assert stripe.Refund.retrieve(first.id).amount == 500
    assert [r.id for r in stripe.Refund.list(charge=charge.id).data] == [rest.id, first.id]
    assert [r.id for r in stripe.Refund.list(payment_intent=intent["id"], limit=1).data] == [rest.id]


def test_a_refund_emits_charge_refunded_then_refund_created(sim: SimServer, catalog: Catalog) -> None:
    done, _ = subscribe(sim, catalog.monthly)
    intent = paid_intent(sim, done["invoice"])
    seen = len(events(sim))
    refund = ok(sim, "POST", "/v1/refunds", {"payment_intent": intent["id"], "amount": 700})
    emitted = events(sim)[seen:]
    assert types(emitted) == ["charge.refunded", "refund.created"]
    charge_event, refund_event = emitted
    charge = charge_event["data"]["object"]
    assert (charge["id"], charge["amount_refunded"], charge["refunded"]) == (intent["latest_charge"], 700, False)
    assert charge_event["data"]["previous_attributes"] == {"amount_refunded": 0}
    assert refund_event["data"]["object"] == refund
    assert all(e["request"]["id"] for e in emitted)
    full = ok(sim, "POST", "/v1/refunds", {"charge": charge["id"]})
    last = events(sim, type="charge.refunded")[-1]
    assert (last["data"]["object"]["refunded"], full["amount"]) == (True, 1300)
    assert last["data"]["previous_attributes"] == {"amount_refunded": 700, "refunded": False}


async def test_refund_events_are_delivered_signed(sim: SimServer, catalog: Catalog, receiver: Receiver) -> None:
    endpoint = register(sim, receiver, enabled_events=["charge.refunded", "refund.created"])
    done = bought_pack(sim, catalog)
    ok(sim, "POST", "/v1/refunds", {"payment_intent": done["payment_intent"]})
    await sim.wait_idle()
    assert receiver.types() == ["charge.refunded", "refund.created"]
    for delivery in receiver.received:
        event = stripe.Webhook.construct_event(delivery.body, delivery.headers["Stripe-Signature"],
                                               endpoint["secret"])
        assert event.data.object.payment_intent == done["payment_intent"]


def test_an_idempotency_key_replays_the_refund_instead_of_refunding_twice(sim: SimServer, catalog: Catalog) -> None:
    done = bought_pack(sim, catalog)
    params = {"payment_intent": done["payment_intent"], "amount": 300}
    first = sim.request("POST", "/v1/refunds", params, headers={"Idempotency-Key": "refund-pur_1"})
    second = sim.request("POST", "/v1/refunds", params, headers={"Idempotency-Key": "refund-pur_1"})
    assert first.status == second.status == 200 and first.body == second.body
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(ok(sim, "GET", "/v1/refunds", {"payment_intent": done["payment_intent"]})["data"]) == 1
    assert types(events(sim, type="charge.refunded")) == ["charge.refunded"]
    other = sim.request("POST", "/v1/refunds", {**params, "amount": 400}, headers={"Idempotency-Key": "refund-pur_1"})
    assert other.status == 400 and other.json()["error"]["type"] == "idempotency_error"
    client = stripe.StripeClient(**client_args(sim))
    again = [client.v1.refunds.create(params={"payment_intent": done["payment_intent"]},
                                      options={"idempotency_key": "refund-rest"}) for _ in range(2)]
    assert again[0].id == again[1].id and again[0].amount == 600


def test_refund_requests_are_checked_as_stripe_checks_them(sim: SimServer, catalog: Catalog) -> None:
    done = bought_pack(sim, catalog)
    intent = ok(sim, "GET", f"/v1/payment_intents/{done['payment_intent']}")
    other = ok(sim, "GET", f"/v1/payment_intents/{bought_pack(sim, catalog)['payment_intent']}")
    cases: list[tuple[dict[str, Any], int, str | None, str | None]] = [
        ({}, 400, "parameter_missing", None),
        ({"charge": "ch_missing"}, 400, "resource_missing", "charge"),
        ({"payment_intent": "pi_missing"}, 400, "resource_missing", "payment_intent"),
        ({"charge": other["latest_charge"], "payment_intent": intent["id"]}, 400, None, "charge"),
        ({"charge": intent["latest_charge"], "amount": 0}, 400, None, "amount"),
        ({"charge": intent["latest_charge"], "reason": "changed_my_mind"}, 400, None, "reason"),
        ({"charge": intent["latest_charge"], "colour": "red"}, 400, "parameter_unknown", "colour"),
    ]
    for params, status, code, param in cases:
        error = sim.request("POST", "/v1/refunds", params).json()["error"]
        assert (sim.request("POST", "/v1/refunds", params).status, error.get("code"), error.get("param")) == (
            status, code, param), params
    assert sim.request("GET", "/v1/refunds/re_missing").status == 404
    assert ok(sim, "GET", "/v1/refunds")["data"] == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(asks=st.lists(st.one_of(st.none(), st.integers(min_value=1, max_value=2500)), min_size=1, max_size=6))
def test_refunds_follow_the_reference_model(sim: SimServer, catalog: Catalog, asks: list[int | None]) -> None:
    """Reference: a charge of 1,800 refunds what is asked (all that remains when nothing is) while
    something remains and the ask fits; otherwise the request is refused and nothing changes."""
    intent = bought_pack(sim, catalog, quantity=2)["payment_intent"]
    remaining, refunded = 1800, []
    for ask in asks:
        params: dict[str, Any] = {"payment_intent": intent} | ({} if ask is None else {"amount": ask})
        answer = sim.request("POST", "/v1/refunds", params)
        if remaining == 0:
            expected: Any = "charge_already_refunded"
        elif ask is not None and ask > remaining:
            expected = "amount_too_large"
        else:
            expected = remaining if ask is None else ask
            remaining -= expected
            refunded.append(expected)
        got = answer.json()["amount"] if answer.status == 200 else answer.json()["error"]["code"]
        assert got == expected
    charge = ok(sim, "GET", f"/v1/charges/{ok(sim, 'GET', f'/v1/payment_intents/{intent}')['latest_charge']}",
                {"expand": ["refunds"]})
    assert (charge["amount_refunded"], charge["refunded"]) == (1800 - remaining, remaining == 0)
    assert [r["amount"] for r in charge["refunds"]["data"]] == list(reversed(refunded))


async def test_an_endpoint_on_an_older_api_version_reads_the_payment_on_the_invoice(
    sim: SimServer, catalog: Catalog, receiver: Receiver
) -> None:
    register(sim, receiver, enabled_events=["invoice.paid", "charge.refunded"], api_version="2024-06-20")
    done, _ = subscribe(sim, catalog.monthly)
    intent = paid_intent(sim, done["invoice"])
    ok(sim, "POST", "/v1/refunds", {"payment_intent": intent["id"]})
    await sim.wait_idle()
    invoice, charge = (d.event["data"]["object"] for d in receiver.received)
    assert (invoice["payment_intent"], invoice["charge"], invoice["paid"]) == (intent["id"], intent["latest_charge"],
                                                                               True)
    assert (charge["invoice"], charge["refunded"]) == (done["invoice"], True)
