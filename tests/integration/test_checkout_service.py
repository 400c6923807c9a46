"""The checkout service in-process over real sockets, with the real entitlement service and
PostgreSQL behind it and a fake provider in front (the simulator runs in the end-to-end tests)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from catalog_rules.file import CatalogFileError, parse_catalog
from checkout_service.catalog_apply import apply
from checkout_service.cli import read_catalog
from checkout_service.stripe.signature import sign
from selfserve.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import PRODUCT, SECRET, Stack, open_stack, start_service, stop_service
from tests.support.provider import EXAMPLE_CATALOG, T0, subscription_event
from tests.support.tokens import TOKENS, bearer
from tests.support.waiting import eventually


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    async with open_stack(database_url) as stack:
        yield stack


def checkout_body(price: str = "pro_monthly", quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"account_id": "acct_1", "items": [{"price": price, "quantity": quantity}],
            "success_url": "https://app.example/done", "cancel_url": "https://app.example/pricing", **extra}


async def test_applying_the_catalog_again_changes_nothing_at_the_provider_or_in_entitlements(stack: Stack) -> None:
    calls_before = len(stack.provider.calls)
    report, reply = await apply(read_catalog(EXAMPLE_CATALOG), stack.provider, stack.entitlement.operator)  # type: ignore[arg-type]
    assert report.created == [] and report.updated == [] and len(report.unchanged) == 9  # 4 products, 5 prices
    assert not any(e.changed for e in reply.entries)
    writes = [c for c in stack.provider.calls[calls_before:] if c.startswith(("create", "update"))]
    assert writes == []


async def test_a_dry_run_says_what_a_catalog_edit_would_change_and_changes_nothing(stack: Stack) -> None:
    catalog_before = await stack.entitlement.checkout.ListCatalog(pb.ListCatalogRequest())
    pro_monthly = next(p.price.price_id for p in catalog_before.prices if p.price.lookup_key == "pro_monthly")
    [held] = await stack.entitlement.apply(subscription_event("evt_1", "sub_1", T0, items=[("pro_monthly", 1)],
                                                              price_ids={"pro_monthly": pro_monthly}))
    assert held.outcome == pb.EVENT_OUTCOME_APPLIED
    catalog_before = await stack.entitlement.checkout.ListCatalog(pb.ListCatalogRequest())
    calls_before = len(stack.provider.calls)
    edited = EXAMPLE_CATALOG.read_text().replace('"amount": 1200', '"amount": 1300').replace(
        "unit_amount = 900", "unit_amount = 990")
    report, reply = await apply(parse_catalog(edited), stack.provider, stack.entitlement.operator,  # type: ignore[arg-type]
                                dry_run=True)
    assert report.updated == ["price pro_monthly"] and any("starter_monthly (new terms" in c for c in report.created)
    assert "would create 1, update 1" in report.line()
    assert reply.dry_run and reply.accounts_affected == 1
    assert [e.id for e in reply.entries if e.changed] == [pro_monthly]
    writes = [c for c in stack.provider.calls[calls_before:] if c.startswith(("create", "update"))]
    assert writes == []
    assert await stack.entitlement.checkout.ListCatalog(pb.ListCatalogRequest()) == catalog_before


async def test_a_changed_amount_moves_the_lookup_key_to_a_new_price_and_archives_the_old(stack: Stack) -> None:
    text = EXAMPLE_CATALOG.read_text().replace("unit_amount = 900", "unit_amount = 990")
    report, _ = await apply(parse_catalog(text), stack.provider, stack.entitlement.operator)  # type: ignore[arg-type]
    assert any("starter_monthly (new terms" in c for c in report.created)
    starters = [p for p in stack.provider.prices.values() if p["product"] == "starter"]
    assert sorted((p["unit_amount"], p["active"], p["lookup_key"]) for p in starters) == [
        (900, False, None), (990, True, "starter_monthly")]


def test_an_invalid_catalog_file_is_refused_naming_the_entry_before_anything_is_written() -> None:
    text = EXAMPLE_CATALOG.read_text().replace('billing_plan_code = "pro"', 'billing_plan_code = "platinum"', 1)
    with pytest.raises(CatalogFileError, match="platinum"):
        parse_catalog(text)


async def test_a_checkout_session_is_created_once_per_idempotency_key(stack: Stack) -> None:
    status, first = await stack.post("/v1/checkout/sessions", checkout_body(), {"Idempotency-Key": "k1"})
    assert status == 201, first
    assert first["status"] == "pending" and first["url"].startswith("https://checkout.test/")
    status, again = await stack.post("/v1/checkout/sessions", checkout_body(), {"Idempotency-Key": "k1"})
    assert status == 201 and again == first
    assert stack.provider.calls.count("create_customer") == 1
    assert len(stack.provider.sessions) == 1
    session = stack.provider.sessions[first["checkout_session_id"]]
    assert session["client_reference_id"] == first["purchase_id"]
    assert session["metadata"] == session["subscription_data"]["metadata"] == {
        "account_id": "acct_1", "purchase_id": first["purchase_id"]}
    assert "{CHECKOUT_SESSION_ID}" in session["success_url"]


@pytest.mark.parametrize(("body", "status", "code", "names"), [
    (checkout_body(price="gold_monthly"), 422, "invalid_selection", "gold_monthly"),
    (checkout_body(quantity=0), 422, "invalid_request", "items[0].quantity"),
    ({**checkout_body(), "items": []}, 422, "invalid_request", "items"),
    (checkout_body(success_url="javascript:alert(1)"), 422, "invalid_request", "success_url"),
    ({**checkout_body(), "account_id": ""}, 422, "invalid_request", "account_id"),
    ({**checkout_body(), "items": [{"price": "pro_monthly"}, {"price": "credit_pack_500"}]}, 422,
     "invalid_selection", "recurring and one-time"),
    ("not an object", 422, "invalid_request", "JSON object"),
])
async def test_a_bad_selection_is_refused_with_a_json_error_naming_it(
    stack: Stack, body: object, status: int, code: str, names: str
) -> None:
    got, reply = await stack.post("/v1/checkout/sessions", body)
    assert got == status and reply["error"]["code"] == code and names in reply["error"]["message"]


async def test_session_endpoints_need_a_product_token(stack: Stack) -> None:
    async with stack.http.post(stack.url("/v1/checkout/sessions"), json=checkout_body()) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthenticated"
    headers = {"Authorization": f"Bearer {TOKENS[Role.SUPPORT]}"}
    async with stack.http.post(stack.url("/v1/checkout/sessions"), json=checkout_body(), headers=headers) as r:
        assert r.status == 403


async def test_a_body_over_one_mebibyte_is_refused(stack: Stack) -> None:
    async with stack.http.post(stack.url("/webhooks/stripe"), data=b"x" * (1024 * 1024 + 1)) as r:
        assert r.status == 413 and (await r.json())["error"]["code"] == "payload_too_large"


async def test_a_purchase_into_an_occupied_group_is_refused_with_a_portal_link(stack: Stack) -> None:
    await stack.post("/v1/checkout/sessions", checkout_body())  # creates and links the customer
    customer = next(iter(stack.provider.customers))
    ids = {p["lookup_key"]: p["id"] for p in stack.provider.prices.values()}
    [applied] = await stack.entitlement.apply(subscription_event("evt_1", "sub_1", T0, customer_id=customer,
                                                                 price_ids=ids))
    assert applied.outcome == pb.EVENT_OUTCOME_APPLIED
    status, reply = await stack.post("/v1/checkout/sessions", checkout_body(price="starter_monthly"))
    assert status == 409 and reply["error"]["code"] == "group_conflict"
    assert reply["error"]["portal_url"].startswith(f"https://portal.test/{customer}")
    assert reply["error"]["subscription_ids"] == ["sub_1"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.checkout.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await checkout_pb2_grpc.CheckoutServiceStub(channel).CreateCheckoutSession(
                checkout_pb2.CreateCheckoutSessionRequest(
                    account_id="acct_1", items=[pb.PurchaseItem(price="starter_monthly", quantity=1)],
                    success_url="https://app.example/done", cancel_url="https://app.example/pricing"),
                metadata=bearer(Role.PRODUCT))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    trailing = dict(refused.value.trailing_metadata() or ())
    assert trailing["error-code"] == "group_conflict" and trailing["portal-url"].startswith("https://portal.test/")


async def test_a_portal_session_needs_a_provider_customer(stack: Stack) -> None:
    body = {"account_id": "acct_new", "return_url": "https://app.example/account"}
    status, reply = await stack.post("/v1/portal/sessions", body)
    assert status == 404 and reply["error"]["code"] == "not_found"
    await stack.post("/v1/checkout/sessions", {**checkout_body(), "account_id": "acct_new"})
    status, reply = await stack.post("/v1/portal/sessions", body)
    assert status == 201 and reply["url"].startswith("https://portal.test/cus_")


def subscription_payload(event_id: str = "evt_w1") -> dict[str, Any]:
    item = {"id": "si_1", "object": "subscription_item", "quantity": 1, "created": 1_767_225_600,
            "current_period_start": 1_767_225_600, "current_period_end": 1_769_904_000,
            "price": {"id": "price_pro", "object": "price", "product": "pro", "active": True, "currency": "usd",
                      "unit_amount": 2000, "recurring": {"interval": "month", "interval_count": 1},
                      "lookup_key": "pro_monthly", "metadata": {}}}
    return {"id": event_id, "object": "event", "type": "customer.subscription.created", "created": 1_767_225_600,
            "api_version": "2026-08-27", "data": {"object": {
                "id": "sub_w", "object": "subscription", "customer": "cus_w", "status": "active",
                "created": 1_767_225_600, "start_date": 1_767_225_600, "cancel_at_period_end": False,
                "metadata": {"account_id": "acct_w"}, "items": {"object": "list", "data": [item]}}}}


async def test_a_signed_webhook_is_recorded_once_and_a_bad_one_records_nothing(stack: Stack) -> None:
    event = subscription_payload()
    status, reply = await stack.webhook(event, secret="whsec_wrong")
    assert status == 400 and reply["error"]["code"] == "bad_signature"
    assert not (await stack.entitlement.entitlements("acct_w")).plans
    status, reply = await stack.webhook(event)
    assert status == 200 and reply == {"received": True, "id": "evt_w1", "outcome": "applied"}
    assert [p.billing_plan_code for p in (await stack.entitlement.entitlements("acct_w")).plans] == ["pro"]
    status, reply = await stack.webhook(event)
    assert status == 200 and reply["outcome"] == "duplicate"


async def test_a_signed_body_that_is_not_an_event_is_refused(stack: Stack) -> None:
    raw = b'{"hello": "world"}'
    at = int(time.time())
    async with stack.http.post(stack.url("/webhooks/stripe"), data=raw,
                               headers={"Stripe-Signature": f"t={at},v1={sign(raw, SECRET, at)}"}) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "malformed_body"


async def test_an_event_type_we_do_not_use_is_acknowledged_and_recorded_as_ignored(stack: Stack) -> None:
    status, reply = await stack.webhook({"id": "evt_c", "object": "event", "type": "charge.refunded",
                                         "created": 1_767_225_600, "data": {"object": {"id": "ch_1"}}})
    assert status == 200 and reply["outcome"] == "ignored"


async def test_webhooks_answer_503_while_the_entitlement_service_is_down_and_nothing_is_lost(
    stack: Stack, database_url: str
) -> None:
    port = stack.entitlement.running.port
    await stop_service(stack.entitlement)
    status, reply = await stack.webhook(subscription_payload())
    assert status == 503 and reply["error"]["code"] == "unavailable"
    stack.entitlement = await start_service(database_url, port)

    async def retried() -> bool:  # the provider retries with backoff until it gets a 2xx
        status, reply = await stack.webhook(subscription_payload())
        return status == 200 and reply["outcome"] == "applied"

    await eventually(retried, what="a retried delivery to be recorded")


async def test_the_return_page_records_the_return_and_polls_a_status_the_browser_may_read(stack: Stack) -> None:
    _, created = await stack.post("/v1/checkout/sessions", checkout_body())
    purchase, session = created["purchase_id"], created["checkout_session_id"]
    async with stack.http.get(stack.url(f"/checkout/return?purchase_id={purchase}&session_id={session}")) as r:
        assert r.status == 200 and "Confirming your purchase" in await r.text()
    async with stack.http.get(stack.url(f"/v1/purchases/{purchase}?checkout_session_id={session}")) as r:
        body = await r.json()
    assert body["state"] == "returned" and body["poll_after_ms"] > 0 and body["timeout_at"]
    async with stack.http.get(stack.url(f"/v1/purchases/{purchase}?checkout_session_id=cs_other")) as r:
        assert r.status == 404
    async with stack.http.get(stack.url(f"/v1/purchases/{purchase}")) as r:
        assert r.status == 401
    async with stack.http.get(stack.url("/checkout/return?purchase_id=pur_nope&session_id=cs_nope")) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"


async def test_the_public_status_shows_only_what_the_return_page_needs_and_no_existence_oracle(stack: Stack) -> None:
    _, created = await stack.post("/v1/checkout/sessions", checkout_body())
    purchase, session = created["purchase_id"], created["checkout_session_id"]
    async with stack.http.get(stack.url(f"/v1/purchases/{purchase}?checkout_session_id={session}")) as r:
        body = await r.json()
    assert r.status == 200
    assert set(body) == {"state", "reason", "success_url", "plans", "poll_after_ms", "timeout_at"}
    assert "acct_1" not in json.dumps(body)
    answers = []
    for path in (f"/v1/purchases/{purchase}?checkout_session_id=cs_other",  # wrong session
                 f"/v1/purchases/pur_{'0' * 24}?checkout_session_id={session}",  # unknown purchase
                 "/v1/purchases/%20?checkout_session_id=cs_x"):  # not even an id
        async with stack.http.get(stack.url(path)) as r:
            answers.append((r.status, await r.json()))
    alike = {"error": {"code": "not_found", "message": "no such purchase for that checkout session"}}
    assert answers == [(404, alike)] * 3


async def test_the_catalog_lists_purchasability_for_an_account(stack: Stack) -> None:
    async with stack.http.get(stack.url("/v1/catalog?account_id=acct_1"), headers=PRODUCT) as r:
        body = await r.json()
    keys = {p["price"]["lookup_key"]: p["purchasability"]["purchasable"] for p in body["prices"]}
    assert keys == dict.fromkeys(
        ["starter_monthly", "pro_monthly", "pro_yearly", "team_seats_monthly", "credit_pack_500"], True)


async def post_raw(stack: Stack, path: str, raw: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    headers = {**PRODUCT, "Content-Type": "application/json", **(headers or {})}
    async with stack.http.post(stack.url(path), data=raw, headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.parametrize("raw", [b"{", b'{"account_id": }', b"", b"\xff\xfe", b"NaN", b'{"a": 1e999}'])
@pytest.mark.parametrize("path", ["/v1/checkout/sessions", "/v1/portal/sessions"])
async def test_a_body_that_is_not_json_is_a_bad_request_not_an_invalid_one(stack: Stack, path: str,
                                                                          raw: bytes) -> None:
    status, reply = await post_raw(stack, path, raw)
    assert status == 400 and reply["error"]["code"] == "malformed_json", reply


@pytest.mark.parametrize("raw", [b"[" * 200_000, b"[" * 200_000 + b"]" * 200_000,
                                 b'{"account_id": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001])
async def test_json_nested_deeper_than_any_request_needs_is_a_bad_request(stack: Stack, raw: bytes) -> None:
    status, reply = await post_raw(stack, "/v1/checkout/sessions", raw)
    assert status == 400 and reply["error"]["code"] == "malformed_json", reply


@pytest.mark.parametrize("field", ["account_id", "success_url", "price"])
async def test_a_lone_surrogate_in_a_string_field_is_refused_not_a_server_error(stack: Stack, field: str) -> None:
    text = json.dumps(checkout_body())
    raw = text.replace('"acct_1"' if field == "account_id" else '"https://app.example/done"' if field == "success_url"
                       else '"pro_monthly"', '"x\\ud800y"', 1).encode()
    status, reply = await post_raw(stack, "/v1/checkout/sessions", raw)
    assert status in (400, 422) and reply["error"]["code"] in ("malformed_json", "invalid_request"), reply


async def test_a_quantity_beyond_64_bits_is_an_invalid_request(stack: Stack) -> None:
    status, reply = await stack.post("/v1/checkout/sessions", checkout_body(quantity=2**63))
    assert status == 422 and "items[0].quantity" in reply["error"]["message"], reply


@pytest.mark.parametrize("given", ["é", "r" * 200, "a b", "req/42"])
@pytest.mark.parametrize("path", ["/healthz", "/v1/catalog", "/v1/purchases/pur_none?checkout_session_id=cs_x"])
async def test_a_request_id_outside_the_allowed_alphabet_gets_a_fresh_one_and_a_normal_answer(
    stack: Stack, given: str, path: str
) -> None:
    async with stack.http.get(stack.url(path), headers={**PRODUCT, "x-request-id": given}) as r:
        assert r.status in (200, 404), await r.text()
        echoed = r.headers["x-request-id"]
    assert echoed != given and re.fullmatch("[0-9a-f]{16}", echoed)


async def test_a_valid_request_id_is_echoed_and_passed_on(stack: Stack) -> None:
    async with stack.http.get(stack.url("/v1/catalog"), headers={**PRODUCT, "x-request-id": "A.b_c:d-9"}) as r:
        assert r.status == 200 and r.headers["x-request-id"] == "A.b_c:d-9"


@pytest.mark.parametrize("header", ["t=" + "9" * 400 + ",v1=00", "t=\u00b2,v1=00", "t=" + "1" * 30 + ",v1=00"])
async def test_a_malformed_signature_timestamp_is_a_bad_signature(stack: Stack, header: str) -> None:
    raw = json.dumps(subscription_payload()).encode()
    async with stack.http.post(stack.url("/webhooks/stripe"), data=raw,
                               headers={"Stripe-Signature": header.encode().decode("latin-1")}) as r:
        assert r.status == 400, await r.text()
        message = "the Stripe-Signature header has no timestamp of plain unix seconds"
        assert (await r.json())["error"] == {"code": "bad_signature", "message": message}
