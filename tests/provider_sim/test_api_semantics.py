"""Stripe's API semantics the services rely on: nested form keys, idempotent replay, errors with the
right status and code, expansion, pagination and filters; and never a 500 for a client mistake."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.provider_sim.builders import Catalog, checkout, ok
from tests.provider_sim.harness import SimServer


def test_nested_form_keys_build_line_items_metadata_and_expansions(sim: SimServer, catalog: Catalog) -> None:
    body = (f"mode=subscription&line_items[0][price]={catalog.monthly}&line_items[0][quantity]=2"
            f"&line_items[1][price]={catalog.team_monthly}&line_items[1][quantity]=1"
            "&metadata[account_id]=acct_1&metadata[purchase_id]=pur_1"
            "&subscription_data[metadata][account_id]=acct_1&expand[]=line_items&expand[]=line_items.data.price.product"
            "&success_url=https%3A%2F%2Fapp.example%2Fok%3Fs%3D%7BCHECKOUT_SESSION_ID%7D")
    answer = sim.request("POST", "/v1/checkout/sessions", raw=body.encode())
    assert answer.status == 200, answer.body
    session = answer.json()
    lines = session["line_items"]["data"]
    assert [(li["price"]["id"], li["quantity"]) for li in lines] == [(catalog.monthly, 2), (catalog.team_monthly, 1)]
    assert lines[0]["price"]["product"]["name"] == "Pro"
    assert session["metadata"] == {"account_id": "acct_1", "purchase_id": "pur_1"}
    assert session["success_url"] == "https://app.example/ok?s={CHECKOUT_SESSION_ID}"
    assert session["amount_total"] == 2 * 2000 + 5000


def test_an_idempotency_key_replays_the_first_answer_byte_for_byte(sim: SimServer, catalog: Catalog) -> None:
    params = {"mode": "subscription", "line_items": [{"price": catalog.monthly, "quantity": 1}]}
    first = sim.request("POST", "/v1/checkout/sessions", params, headers={"Idempotency-Key": "key-1"})
    again = sim.request("POST", "/v1/checkout/sessions", params, headers={"Idempotency-Key": "key-1"})
    assert first.status == again.status == 200
    assert again.body == first.body
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(ok(sim, "GET", "/v1/checkout/sessions")["data"]) == 1

    other = sim.request("POST", "/v1/checkout/sessions", {**params, "client_reference_id": "x"},
                        headers={"Idempotency-Key": "key-1"})
    assert other.status == 400 and other.json()["error"]["type"] == "idempotency_error"


def test_the_sdk_sees_replays_and_idempotency_errors(sim: SimServer, catalog: Catalog) -> None:
    client = sim.stripe_client()
    params: Any = {"mode": "payment", "line_items": [{"price": catalog.credits, "quantity": 1}]}
    first = client.v1.checkout.sessions.create(params, {"idempotency_key": "sdk-1"})
    assert client.v1.checkout.sessions.create(params, {"idempotency_key": "sdk-1"}).id == first.id
    with pytest.raises(stripe.IdempotencyError):
        client.v1.checkout.sessions.create({**params, "customer_email": "x@example.com"},
                                           {"idempotency_key": "sdk-1"})


ERRORS = [
    # (method, path, params, status, type, code, param)
    ("POST", "/v1/checkout/sessions", {"mode": "subscription", "line_items": [{"price": "price_nope", "quantity": 1}]},
     400, "invalid_request_error", "resource_missing", "line_items[0][price]"),
    ("POST", "/v1/checkout/sessions", {"line_items": [{"price": "price_nope", "quantity": 1}]},
     400, "invalid_request_error", "parameter_missing", "mode"),
    ("POST", "/v1/checkout/sessions", {"mode": "subscription"}, 400, "invalid_request_error", "parameter_missing",
     "line_items"),
    ("POST", "/v1/prices", {"product": "pro", "currency": "usd", "unit_amount": "lots"},
     400, "invalid_request_error", "parameter_invalid_integer", "unit_amount"),
    ("POST", "/v1/products", {"name": "X", "active": "maybe"}, 400, "invalid_request_error", None, "active"),
    ("POST", "/v1/products", {"name": "X", "metadata": "flat"}, 400, "invalid_request_error", None, "metadata"),
    ("POST", "/v1/products", {"name": "X", "colour": "red"}, 400, "invalid_request_error", "parameter_unknown",
     "colour"),
    ("POST", "/v1/products", {"name": ""}, 400, "invalid_request_error", "parameter_missing", "name"),
    ("GET", "/v1/subscriptions/sub_nope", None, 404, "invalid_request_error", "resource_missing", None),
    ("GET", "/v1/checkout/sessions/cs_test_nope", None, 404, "invalid_request_error", "resource_missing", None),
    ("GET", "/v1/nothing_here", None, 404, "invalid_request_error", "resource_missing", None),
    ("PUT", "/v1/products", None, 404, "invalid_request_error", "resource_missing", None),
    ("GET", "/v1/prices", {"expand": ["data.colour"]}, 400, "invalid_request_error", None, "expand"),
    ("GET", "/v1/prices", {"limit": 0}, 400, "invalid_request_error", None, "limit"),
    ("GET", "/v1/prices", {"starting_after": "price_nope"}, 400, "invalid_request_error", "resource_missing",
     "starting_after"),
    ("POST", "/v1/webhook_endpoints", {"url": "not a url", "enabled_events": ["*"]},
     400, "invalid_request_error", "url_invalid", "url"),
    ("POST", "/v1/webhook_endpoints", {"url": "http://127.0.0.1:1/x"}, 400, "invalid_request_error",
     "parameter_missing", "enabled_events"),
]


@pytest.mark.parametrize(("method", "path", "params", "status", "kind", "code", "param"), ERRORS)
def test_client_mistakes_get_stripe_errors(sim: SimServer, catalog: Catalog, method: str, path: str,
                                           params: dict[str, Any] | None, status: int, kind: str,
                                           code: str | None, param: str | None) -> None:
    answer = sim.request(method, path, params)
    error = answer.json()["error"]
    assert (answer.status, error["type"], error.get("code"), error.get("param")) == (status, kind, code, param)
    assert error["message"]


def test_domain_rules_answer_400_with_a_reason(sim: SimServer, catalog: Catalog) -> None:
    recurring_in_payment = sim.request("POST", "/v1/checkout/sessions", {
        "mode": "payment", "line_items": [{"price": catalog.monthly, "quantity": 1}]})
    assert recurring_in_payment.status == 400 and "recurring" in recurring_in_payment.json()["error"]["message"]
    taken = sim.request("POST", "/v1/prices", {"product": "pro", "currency": "usd", "unit_amount": 1,
                                               "lookup_key": "pro_monthly"})
    assert taken.status == 400 and taken.json()["error"]["param"] == "lookup_key"
    moved = ok(sim, "POST", "/v1/prices", {"product": "pro", "currency": "usd", "unit_amount": 1,
                                           "lookup_key": "pro_monthly", "transfer_lookup_key": True})
    assert ok(sim, "GET", "/v1/prices", {"lookup_keys": ["pro_monthly"]})["data"][0]["id"] == moved["id"]
    zero = sim.request("POST", "/v1/checkout/sessions", {
        "mode": "subscription", "line_items": [{"price": catalog.monthly, "quantity": 0}]})
    assert zero.status == 400 and zero.json()["error"]["param"] == "line_items[0][quantity]"


@pytest.mark.parametrize(("key", "message"), [(None, "did not provide an API key"),
                                              ("sk_live_123456789", "Invalid API Key"),
                                              ("pk_test_123456789", "Invalid API Key")])
def test_a_missing_or_invalid_api_key_is_401(sim: SimServer, key: str | None, message: str) -> None:
    answer = sim.request("GET", "/v1/products", key=key)
    assert answer.status == 401 and message in answer.json()["error"]["message"]
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_basic_auth_as_curl_sends_it_is_accepted(sim: SimServer) -> None:
    import base64

    token = base64.b64encode(b"sk_test_curl_user:").decode()
    answer = sim.request("GET", "/v1/products", key=None, headers={"Authorization": f"Basic {token}"})
    assert answer.status == 200


def test_the_sdk_raises_its_own_error_classes(sim: SimServer, catalog: Catalog) -> None:
    client = sim.stripe_client()
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.subscriptions.retrieve("sub_nope")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as bad_price:
        client.v1.checkout.sessions.create({"mode": "subscription", "line_items": [{"price": "nope", "quantity": 1}]})
    assert bad_price.value.http_status == 400 and bad_price.value.param == "line_items[0][price]"
    wrong_key = stripe.StripeClient("sk_live_nope", base_addresses={"api": sim.url}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError):
        wrong_key.v1.products.list()


def test_lists_page_newest_first_with_cursors(sim: SimServer) -> None:
    for n in range(1, 6):
        ok(sim, "POST", "/v1/products", {"id": f"p{n}", "name": f"P{n}"})

    def page(**params: Any) -> tuple[list[str], bool]:
        found = ok(sim, "GET", "/v1/products", {"limit": 2, **params})
        assert found["object"] == "list" and found["url"] == "/v1/products"
        return [p["id"] for p in found["data"]], found["has_more"]

    assert page() == (["p5", "p4"], True)
    assert page(starting_after="p4") == (["p3", "p2"], True)
    assert page(starting_after="p2") == (["p1"], False)
    assert page(ending_before="p3") == (["p5", "p4"], False)
    assert page(ending_before="p1") == (["p3", "p2"], True)
    every = sim.stripe_client().v1.products.list({"limit": 2}).auto_paging_iter()
    assert [p.id for p in every] == ["p5", "p4", "p3", "p2", "p1"]


def test_prices_filter_by_lookup_keys_type_and_product(sim: SimServer, catalog: Catalog) -> None:
    def ids(**params: Any) -> set[str]:
        return {p["id"] for p in ok(sim, "GET", "/v1/prices", params)["data"]}

    assert ids(lookup_keys=["pro_monthly", "team_monthly"]) == {catalog.monthly, catalog.team_monthly}
    assert ids(lookup_keys=["nobody"]) == set()
    assert ids(type="one_time") == {catalog.credits}
    assert ids(product="pro") == {catalog.monthly, catalog.yearly}
    assert ids(recurring={"interval": "year"}) == {catalog.yearly}
    too_many = sim.request("GET", "/v1/prices", {"lookup_keys": [f"k{n}" for n in range(11)]})
    assert too_many.status == 400


def test_events_filter_by_type_wildcard_types_and_created(sim: SimServer, catalog: Catalog) -> None:
    session = checkout(sim, catalog.monthly)
    sim.control(f"/_sim/checkout/sessions/{session['id']}/complete")

    def types(**params: Any) -> list[str]:
        return [e["type"] for e in ok(sim, "GET", "/v1/events", {"limit": 100, **params})["data"]]

    assert types(type="invoice.paid") == ["invoice.paid"]
    assert set(types(type="invoice.*")) == {"invoice.created", "invoice.finalized", "invoice.paid",
                                            "invoice.payment_succeeded"}
    assert sorted(types(types=["customer.created", "checkout.session.completed"])) == [
        "checkout.session.completed", "customer.created"]
    now = sim.control("/_sim/clock", method="GET")["now"]
    assert types(created={"gt": now + 10}) == []
    assert len(types(created={"lte": now})) == len(types())


ROUTES = [("POST", "/v1/products"), ("POST", "/v1/prices"), ("GET", "/v1/prices"), ("POST", "/v1/customers"),
          ("GET", "/v1/customers"), ("POST", "/v1/checkout/sessions"), ("GET", "/v1/checkout/sessions"),
          ("POST", "/v1/billing_portal/sessions"), ("GET", "/v1/subscriptions"), ("GET", "/v1/events"),
          ("POST", "/v1/webhook_endpoints"), ("GET", "/v1/invoices"), ("POST", "/v1/subscriptions/{sub}"),
          ("DELETE", "/v1/subscriptions/{sub}"), ("GET", "/v1/subscriptions/{sub}"),
          ("POST", "/v1/products/pro"), ("POST", "/v1/customers/{cus}"), ("GET", "/v1/subscription_items"),
          ("POST", "/_sim/checkout/sessions/{cs}/complete"), ("POST", "/_sim/subscriptions/{sub}/portal"),
          ("POST", "/_sim/clock/advance"), ("POST", "/_sim/delivery"), ("POST", "/_sim/delivery/release"),
          ("POST", "/_sim/checkout/sessions/{cs}/async_result"), ("POST", "/checkout/{cs}/pay")]
KEYS = ["mode", "name", "id", "price", "product", "currency", "unit_amount", "customer", "email", "url", "limit",
        "line_items[0][price]", "line_items[0][quantity]", "line_items[][price]", "line_items", "metadata[k]",
        "metadata", "expand[]", "expand[0]", "items[0][id]", "items[0][price]", "items[0][quantity]",
        "items[0][deleted]", "cancel_at_period_end", "recurring[interval]", "recurring", "enabled_events[]",
        "created[gte]", "created", "lookup_keys[0]", "starting_after", "action", "quantity", "seconds", "payment",
        "trial_days", "order", "count", "result", "a[b", "]", "x[y]z", "[]", "subscription_data[trial_period_days]"]
VALUES = st.one_of(st.sampled_from(["", "0", "-1", "1", "true", "false", "abc", "price_nope", "{CHECKOUT_SESSION_ID}",
                                    "subscription", "payment", "month", "usd", "*", "http://127.0.0.1:1/x",
                                    "change_price", "hold", "99999999999999999999"]), st.text(max_size=12))


@pytest.fixture
def targets(sim: SimServer, catalog: Catalog) -> dict[str, str]:
    """A customer, an open session and a live subscription for the fuzzer to aim at."""
    open_session = checkout(sim, catalog.monthly)
    paid = checkout(sim, catalog.monthly)
    sim.control(f"/_sim/checkout/sessions/{paid['id']}/complete")
    done = ok(sim, "GET", f"/v1/checkout/sessions/{paid['id']}")
    return {"cs": open_session["id"], "sub": done["subscription"], "cus": done["customer"]}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), pairs=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=6),
       garbage=st.one_of(st.none(), st.binary(max_size=20)))
def test_client_mistakes_never_answer_500(sim: SimServer, targets: dict[str, str], route: tuple[str, str],
                                          pairs: list[tuple[str, str]], garbage: bytes | None) -> None:
    method, path = route[0], route[1].format(**targets)
    body = garbage if garbage is not None else urlencode(pairs).encode()
    answer = sim.request(method, path, raw=body)
    assert answer.status < 500, (method, path, body, answer.body)
    if answer.status >= 400:
        assert answer.json()["error"]["message"]
