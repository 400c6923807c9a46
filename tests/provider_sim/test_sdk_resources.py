"""Every implemented resource driven through the official stripe SDK, with the synchronous and the
asynchronous client: the SDK parses each answer into its own classes, and each rendered object
has every key of Stripe's own example object (fixtures3.json)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stripe

from tests.provider_sim.harness import SimServer

FIXTURES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "support" / "stripe_fixtures.json").read_text())["resources"]
# The resources as copied from Stripe's fixtures3.json (the commit is in the file's "source"),
# canonical JSON: a copy edited by hand would no longer be Stripe's own shapes.
COPIED_SHA256 = "cfe55671b22d5ff1f715e3e429ee801c6d83e598feadc6330597e600520f799b"

# Fixture keys the simulator deliberately does not render, with the reason.
OMITTED: dict[str, dict[str, str]] = {
    "invoice": {"subscription": "not a field of the invoice in the API version the simulator speaks (it is "
                                "`parent.subscription_details.subscription`; test_stripe_types.py checks the "
                                "invoice against Stripe's types for that version); webhooks pinned before "
                                "2025-03-31 still carry it"},
}


class Client:
    """Calls an SDK service method the synchronous way (in a thread, off this loop) or the
    asynchronous way (`*_async`, on this loop), so one scenario covers both clients."""

    def __init__(self, sim: SimServer, asynchronous: bool) -> None:
        self.asynchronous = asynchronous
        self.stripe = sim.stripe_client(asynchronous=asynchronous)
        self.v1 = self.stripe.v1

    async def __call__(self, service: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.asynchronous:
            return await getattr(service, f"{name}_async")(*args, **kwargs)
        method: Callable[..., Any] = getattr(service, name)
        return await asyncio.to_thread(method, *args, **kwargs)


def keys_of(obj: Any) -> set[str]:
    return set(obj.to_dict() if isinstance(obj, stripe.StripeObject) else obj)


def assert_shape(resource: str, obj: Any) -> None:
    missing = set(FIXTURES[resource]) - keys_of(obj) - set(OMITTED.get(resource, {}))
    assert not missing, f"{resource} lacks {sorted(missing)}"


@pytest.fixture(params=["sync", "async"])
async def client(request: pytest.FixtureRequest, sim: SimServer) -> Any:
    found = Client(sim, request.param == "async")
    yield found
    if found.asynchronous:
        await found.stripe._requestor._client.close_async()


def test_the_fixture_copy_is_stripes_own_unchanged() -> None:
    assert hashlib.sha256(json.dumps(FIXTURES, sort_keys=True).encode()).hexdigest() == COPIED_SHA256


async def test_catalog_resources_parse_and_have_every_fixture_key(client: Client) -> None:
    v1 = client.v1
    product = await client(v1.products, "create", params={"name": "Pro", "metadata": {"billing_plan_code": "pro"}})
    assert isinstance(product, stripe.Product) and product.id.startswith("prod_")
    assert_shape("product", product)
    product = await client(v1.products, "update", product.id, params={"metadata": {"gating.bundle": "pro"}})
    assert product.metadata.to_dict() == {"billing_plan_code": "pro", "gating.bundle": "pro"}
    assert (await client(v1.products, "retrieve", product.id)).name == "Pro"
    assert product.id in [p.id for p in (await client(v1.products, "list", params={"limit": 3})).data]

    monthly = await client(v1.prices, "create", params={
        "product": product.id, "currency": "usd", "unit_amount": 2000, "recurring": {"interval": "month"},
        "lookup_key": "pro_monthly", "metadata": {"grants": "[]"}})
    assert isinstance(monthly, stripe.Price) and monthly.id.startswith("price_")
    assert monthly.recurring.interval == "month" and monthly.type == "recurring"
    assert_shape("price", monthly)
    one_time = await client(v1.prices, "create", params={"product": product.id, "currency": "usd",
                                                          "unit_amount": 500})
    assert one_time.type == "one_time" and one_time.recurring is None
    expanded = await client(v1.prices, "retrieve", monthly.id, params={"expand": ["product"]})
    assert isinstance(expanded.product, stripe.Product) and expanded.product.id == product.id
    found = await client(v1.prices, "list", params={"lookup_keys": ["pro_monthly"], "expand": ["data.product"]})
    assert [p.id for p in found.data] == [monthly.id] and found.data[0].product.name == "Pro"
    updated = await client(v1.prices, "update", one_time.id, params={"active": False, "nickname": "old"})
    assert updated.active is False and updated.nickname == "old"


async def test_customers_and_webhook_endpoints(client: Client) -> None:
    v1 = client.v1
    customer = await client(v1.customers, "create", params={"email": "a@example.com", "name": "A",
                                                            "metadata": {"account_id": "acct_1"}})
    assert isinstance(customer, stripe.Customer) and customer.id.startswith("cus_")
    assert_shape("customer", customer)
    customer = await client(v1.customers, "update", customer.id, params={"metadata": {"tier": "gold"}})
    assert customer.metadata.to_dict() == {"account_id": "acct_1", "tier": "gold"}
    assert (await client(v1.customers, "retrieve", customer.id)).email == "a@example.com"
    listed = await client(v1.customers, "list", params={"email": "a@example.com"})
    assert [c.id for c in listed.data] == [customer.id]

    endpoint = await client(v1.webhook_endpoints, "create", params={
        "url": "http://127.0.0.1:9/hooks", "enabled_events": ["*"], "api_version": "2024-06-20"})
    assert isinstance(endpoint, stripe.WebhookEndpoint) and endpoint.secret.startswith("whsec_")
    assert endpoint.id.startswith("we_") and endpoint.api_version == "2024-06-20"
    assert_shape("webhook_endpoint", endpoint)
    assert [e.id for e in (await client(v1.webhook_endpoints, "list")).data] == [endpoint.id]
    assert "secret" not in keys_of(await client(v1.webhook_endpoints, "retrieve", endpoint.id))
    gone = await client(v1.webhook_endpoints, "delete", endpoint.id)
    assert gone.deleted is True and (await client(v1.webhook_endpoints, "list")).data == []


async def _subscription_checkout(client: Client, sim: SimServer) -> tuple[Any, Any, Any]:
    v1 = client.v1
    price = await client(v1.prices, "create", params={"product_data": {"name": "Team"}, "currency": "usd",
                                                      "unit_amount": 1500, "recurring": {"interval": "month"}})
    customer = await client(v1.customers, "create", params={"metadata": {"account_id": "acct_9"}})
    session = await client(v1.checkout.sessions, "create", params={
        "mode": "subscription", "customer": customer.id, "line_items": [{"price": price.id, "quantity": 2}],
        "success_url": "https://app.example/ok?s={CHECKOUT_SESSION_ID}", "client_reference_id": "pur_9",
        "metadata": {"account_id": "acct_9"}, "subscription_data": {"metadata": {"account_id": "acct_9"}}})
    assert isinstance(session, stripe.checkout.Session) and session.id.startswith("cs_test_")
    assert session.status == "open" and session.url.endswith(f"/checkout/{session.id}")
    assert_shape("checkout.session", session)
    await sim.acontrol(f"/_sim/checkout/sessions/{session.id}/complete")
    return price, customer, await client(v1.checkout.sessions, "retrieve", session.id,
                                         params={"expand": ["line_items", "subscription"]})


async def test_checkout_sessions_and_subscriptions(client: Client, sim: SimServer) -> None:
    v1 = client.v1
    price, customer, session = await _subscription_checkout(client, sim)
    assert session.status == "complete" and session.payment_status == "paid"
    assert session.line_items.data[0].quantity == 2
    assert_shape("item", session.line_items.data[0])
    assert isinstance(session.subscription, stripe.Subscription)
    lines = await client(v1.checkout.sessions.line_items, "list", session.id)
    assert lines.data[0].price.id == price.id
    assert session.id in [s.id for s in (await client(v1.checkout.sessions, "list",
                                                      params={"customer": customer.id})).data]

    sub = await client(v1.subscriptions, "retrieve", session.subscription.id,
                       params={"expand": ["items.data.price.product", "latest_invoice"]})
    assert_shape("subscription", sub)
    item = sub["items"].data[0]
    assert_shape("subscription_item", item)
    assert_shape("plan", item.plan)
    assert isinstance(item.price.product, stripe.Product) and item.price.product.name == "Team"
    assert item.current_period_end > item.current_period_start
    assert isinstance(sub.latest_invoice, stripe.Invoice)
    listed = await client(v1.subscriptions, "list", params={"customer": customer.id,
                                                            "expand": ["data.items.data.price.product"]})
    assert listed.data[0]["items"].data[0].price.product.id == item.price.product.id
    assert (await client(v1.subscription_items, "list", params={"subscription": sub.id})).data[0].id == item.id
    changed = await client(v1.subscriptions, "update", sub.id, params={
        "items": [{"id": item.id, "quantity": 3}], "metadata": {"note": "x"}, "proration_behavior": "none"})
    assert changed["items"].data[0].quantity == 3 and changed.metadata.to_dict()["note"] == "x"
    canceled = await client(v1.subscriptions, "cancel", sub.id)
    assert canceled.status == "canceled" and canceled.ended_at is not None


async def test_invoices_events_and_portal_sessions(client: Client, sim: SimServer) -> None:
    v1 = client.v1
    _, customer, session = await _subscription_checkout(client, sim)
    invoice = await client(v1.invoices, "retrieve", session.invoice)
    assert_shape("invoice", invoice)
    assert_shape("line_item", invoice.lines.data[0])
    assert invoice.status == "paid" and invoice.billing_reason == "subscription_create"
    listed = await client(v1.invoices, "list", params={"subscription": session.subscription.id})
    assert [i.id for i in listed.data] == [invoice.id]

    found = await client(v1.events, "list", params={"type": "checkout.session.completed"})
    event = await client(v1.events, "retrieve", found.data[0].id)
    assert isinstance(event, stripe.Event) and event.data.object.id == session.id
    assert_shape("event", event)

    portal = await client(v1.billing_portal.sessions, "create", params={"customer": customer.id,
                                                                        "return_url": "https://app.example/acct"})
    assert isinstance(portal, stripe.billing_portal.Session) and portal.id.startswith("bps_")
    assert_shape("billing_portal.session", portal)


async def test_payment_mode_session_expires_through_the_sdk(client: Client, sim: SimServer) -> None:
    v1 = client.v1
    price = await client(v1.prices, "create", params={"product_data": {"name": "Pack"}, "currency": "usd",
                                                      "unit_amount": 900})
    session = await client(v1.checkout.sessions, "create", params={
        "mode": "payment", "line_items": [{"price": price.id, "quantity": 1}], "customer_email": "b@example.com"})
    expired = await client(v1.checkout.sessions, "expire", session.id)
    assert expired.status == "expired" and expired.url is None
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client(v1.checkout.sessions, "expire", session.id)
    assert raised.value.http_status == 400
