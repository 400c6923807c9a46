"""Every object the simulator answers or delivers, type-checked as its type from Stripe's own
published `stripe` npm package (tests/provider_sim/typecheck.py says how).

The simulator is driven through its HTTP API, the official stripe SDK and its control API into every
state it has: products, one-time and recurring prices, customers, checkout sessions in both modes and
every state, subscriptions in every status it produces, invoices of every `billing_reason` (prorations
included) and a preview, billing portal sessions, webhook endpoints, payment intents, charges, invoice
payments and refunds. Every event is captured from the signed deliveries to two endpoints: one on the
default API version, checked against the package whose types carry it, and one pinned to
2025-02-24.acacia, checked against the package whose types carry that version (the shapes the
normalizer reads for endpoints pinned before 2025-03-31)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import stripe

import provider_sim
from provider_sim.versions import DEFAULT_API_VERSION
from tests.provider_sim.builders import Catalog, checkout, ok
from tests.provider_sim.harness import API_KEY, SimServer
from tests.provider_sim.test_event_sequences import DAY
from tests.provider_sim.typecheck import (
    CURRENT,
    LEGACY,
    Program,
    Result,
    Sample,
    api_version_of,
    check,
    event_type_name,
    install,
)

LEGACY_VERSION = "2025-02-24.acacia"
# Every event type the simulator emits; the scenario below makes each happen at least once.
EMITTED = frozenset({
    "product.created", "product.updated", "product.deleted", "price.created", "price.updated",
    "customer.created", "customer.updated",
    "checkout.session.completed", "checkout.session.expired",
    "checkout.session.async_payment_succeeded", "checkout.session.async_payment_failed",
    "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed",
    "charge.refunded", "refund.created",
})
# An `emit(ctx, "type", …)` call; a type built in an f-string is matched by its fixed start.
EMIT = re.compile(r'emit\(ctx, (f?)"([a-z_.]+)')


@dataclass
class Collector:
    """A webhook endpoint on its own thread: keeps every delivery's body and signature header."""

    deliveries: list[tuple[bytes, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> ThreadingHTTPServer:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with collector.lock:
                    collector.deliveries.append((body, self.headers["Stripe-Signature"]))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def events(self, secret: str) -> dict[str, dict[str, Any]]:
        """Every delivered event by id, each signature verified as a receiver verifies it."""
        found: dict[str, dict[str, Any]] = {}
        with self.lock:
            for body, header in self.deliveries:
                stripe.WebhookSignature.verify_header(body.decode(), header, secret, tolerance=600)
                event = json.loads(body)
                found[event["id"]] = event
        return found


@pytest.fixture
def endpoints(sim: SimServer) -> Iterator[dict[str, tuple[Collector, str]]]:
    """Two endpoints receiving every event: one on the default API version, one pinned before
    2025-03-31; each with its collector and signing secret."""
    made: dict[str, tuple[Collector, str]] = {}
    servers = []
    for name, version in (("current", None), ("legacy", LEGACY_VERSION)):
        collector = Collector()
        server = collector.serve()
        servers.append(server)
        params: dict[str, Any] = {"url": f"http://127.0.0.1:{server.server_address[1]}/webhooks",
                                  "enabled_events": ["*"]}
        if version:
            params["api_version"] = version
        made[name] = (collector, ok(sim, "POST", "/v1/webhook_endpoints", params)["secret"])
    yield made
    for server in servers:
        server.shutdown()
        server.server_close()


def complete(sim: SimServer, session_id: str, **body: Any) -> dict[str, Any]:
    found: dict[str, Any] = sim.control(f"/_sim/checkout/sessions/{session_id}/complete", body)
    return found


def sdk(sim: SimServer) -> stripe.StripeClient:
    return stripe.StripeClient(API_KEY, base_addresses={"api": sim.url}, max_network_retries=0)


def as_json(obj: Any) -> Any:
    """An SDK object as the JSON it was built from."""
    return json.loads(str(obj.last_response.body)) if getattr(obj, "last_response", None) else obj.to_dict()


def drive(sim: SimServer, catalog: Catalog) -> list[Sample]:
    """Makes everything happen once; answers every object the API answered along the way."""
    samples: list[Sample] = []

    def keep(name: str, type_: str, value: Any) -> Any:
        samples.append(Sample(name, type_, value))
        return value

    client = sdk(sim)
    for price_id, kind in ((catalog.monthly, "recurring"), (catalog.credits, "one_time")):
        keep(f"price_{kind}", "Stripe.Price", ok(sim, "GET", f"/v1/prices/{price_id}"))
    keep("price_expanded_product", "Stripe.Price",
         ok(sim, "GET", f"/v1/prices/{catalog.yearly}", {"expand": ["product"]}))
    keep("price_created", "Stripe.Price", as_json(client.v1.prices.create(params={
        "product": "team", "currency": "usd", "unit_amount": 50000, "recurring": {"interval": "year"}})))
    keep("price_updated", "Stripe.Price",
         as_json(client.v1.prices.update(catalog.team_monthly, params={"metadata": {"tier": "team"}})))
    keep("product", "Stripe.Product", as_json(client.v1.products.update("pro", params={"description": "Pro plan"})))
    ok(sim, "POST", "/v1/products", {"id": "retired", "name": "Retired"})
    keep("product_deleted", "Stripe.DeletedProduct", ok(sim, "DELETE", "/v1/products/retired"))
    customer = keep("customer", "Stripe.Customer", as_json(client.v1.customers.create(
        params={"email": "buyer@example.com", "name": "Buyer", "metadata": {"account_id": "acct_types"}})))
    keep("customer_updated", "Stripe.Customer",
         ok(sim, "POST", f"/v1/customers/{customer['id']}", {"phone": "+15555550100"}))

    # Subscription checkouts: open, complete (active), trial, declined (incomplete), expired.
    opened = keep("checkout_subscription_open", "Stripe.Checkout.Session", checkout(sim, catalog.monthly))
    done = complete(sim, opened["id"])
    keep("checkout_subscription_complete", "Stripe.Checkout.Session",
         ok(sim, "GET", f"/v1/checkout/sessions/{opened['id']}"))
    keep("checkout_line_items", "Stripe.ApiList<Stripe.LineItem>",
         ok(sim, "GET", f"/v1/checkout/sessions/{opened['id']}/line_items"))
    keep("checkout_expanded", "Stripe.Checkout.Session", ok(
        sim, "GET", f"/v1/checkout/sessions/{opened['id']}",
        {"expand": ["line_items", "subscription", "invoice", "customer"]}))
    sub_id = done["subscription"]
    keep("subscription_active", "Stripe.Subscription",
         ok(sim, "GET", f"/v1/subscriptions/{sub_id}", {"expand": ["latest_invoice"]}))
    keep("invoice_subscription_create", "Stripe.Invoice",
         ok(sim, "GET", f"/v1/invoices/{done['invoice']}", {"expand": ["payments"]}))
    keep("invoice_lines", "Stripe.ApiList<Stripe.InvoiceLineItem>",
         ok(sim, "GET", f"/v1/invoices/{done['invoice']}/lines"))
    [payment] = ok(sim, "GET", "/v1/invoice_payments", {"invoice": done["invoice"]})["data"]
    keep("invoice_payment", "Stripe.InvoicePayment", payment)
    intent = keep("payment_intent_invoice", "Stripe.PaymentIntent",
                  ok(sim, "GET", f"/v1/payment_intents/{payment['payment']['payment_intent']}"))
    keep("subscription_item", "Stripe.SubscriptionItem",
         ok(sim, "GET", "/v1/subscription_items", {"subscription": sub_id})["data"][0])

    trial = checkout(sim, catalog.monthly)
    trial_done = complete(sim, trial["id"], trial_days=7)
    keep("checkout_subscription_trial_complete", "Stripe.Checkout.Session",
         ok(sim, "GET", f"/v1/checkout/sessions/{trial['id']}"))
    keep("subscription_trialing", "Stripe.Subscription",
         ok(sim, "GET", f"/v1/subscriptions/{trial_done['subscription']}"))
    keep("invoice_trial", "Stripe.Invoice", ok(sim, "GET", f"/v1/invoices/{trial_done['invoice']}"))

    declined = checkout(sim, catalog.team_monthly)
    complete(sim, declined["id"], payment="failed")
    keep("checkout_subscription_declined", "Stripe.Checkout.Session",
         ok(sim, "GET", f"/v1/checkout/sessions/{declined['id']}"))
    incomplete = ok(sim, "GET", "/v1/subscriptions", {"status": "incomplete"})["data"][0]
    keep("subscription_incomplete", "Stripe.Subscription", incomplete)
    keep("invoice_open", "Stripe.Invoice", ok(sim, "GET", f"/v1/invoices/{incomplete['latest_invoice']}"))

    expired = checkout(sim, catalog.yearly)
    keep("checkout_subscription_expired", "Stripe.Checkout.Session",
         ok(sim, "POST", f"/v1/checkout/sessions/{expired['id']}/expire"))

    # Payment checkouts: paid, asynchronous (pending, succeeded, failed), expired by the clock.
    paid = checkout(sim, catalog.credits, mode="payment", quantity=2)
    keep("checkout_payment_open", "Stripe.Checkout.Session", paid)
    paid_done = complete(sim, paid["id"])
    keep("checkout_payment_paid", "Stripe.Checkout.Session", ok(sim, "GET", f"/v1/checkout/sessions/{paid['id']}"))
    pending = checkout(sim, catalog.credits, mode="payment", customer=customer["id"])
    complete(sim, pending["id"], payment="async_pending")
    keep("checkout_payment_pending", "Stripe.Checkout.Session",
         ok(sim, "GET", f"/v1/checkout/sessions/{pending['id']}"))
    sim.control(f"/_sim/checkout/sessions/{pending['id']}/async_result", {"result": "succeeded"})
    failing = checkout(sim, catalog.credits, mode="payment", customer_email="late@example.com")
    complete(sim, failing["id"], payment="async_pending")
    sim.control(f"/_sim/checkout/sessions/{failing['id']}/async_result", {"result": "failed"})
    keep("checkout_payment_failed", "Stripe.Checkout.Session", ok(sim, "GET", f"/v1/checkout/sessions/{failing['id']}"))
    # An hour from now: inside the 30 minutes to 24 hours the provider accepts, however many seconds
    # the calls above took (30 minutes from an earlier object's creation can already be too soon).
    lapsing = checkout(sim, catalog.credits, mode="payment", expires_at=sim.clock.now() + 3600)

    # Refunds: part of a one-time payment, through the SDK.
    refund = client.v1.refunds.create(params={"payment_intent": paid_done["payment_intent"], "amount": 500,
                                              "reason": "requested_by_customer"})
    keep("refund", "Stripe.Refund", as_json(refund))
    keep("refund_expanded", "Stripe.Refund",
         ok(sim, "GET", f"/v1/refunds/{refund.id}", {"expand": ["charge", "payment_intent"]}))
    keep("charge_refunded", "Stripe.Charge", ok(sim, "GET", f"/v1/charges/{refund.charge}", {"expand": ["refunds"]}))
    keep("charge", "Stripe.Charge", ok(sim, "GET", f"/v1/charges/{intent['latest_charge']}"))
    keep("payment_intent_checkout", "Stripe.PaymentIntent",
         ok(sim, "GET", f"/v1/payment_intents/{paid_done['payment_intent']}", {"expand": ["latest_charge"]}))

    # Changes: an upgrade invoiced at once (subscription_update), a quantity change kept for the
    # renewal (subscription_cycle with prorations), a preview, a cancel at period end, a cancel now.
    sim.control(f"/_sim/subscriptions/{sub_id}/portal", {"action": "change_price", "price": catalog.team_monthly,
                                                           "proration_behavior": "always_invoice"})
    updated = keep("subscription_updated", "Stripe.Subscription", ok(sim, "GET", f"/v1/subscriptions/{sub_id}"))
    keep("invoice_subscription_update", "Stripe.Invoice", ok(sim, "GET", f"/v1/invoices/{updated['latest_invoice']}"))
    item = updated["items"]["data"][0]["id"]
    keep("subscription_updated_by_api", "Stripe.Subscription", as_json(client.v1.subscriptions.update(
        sub_id, params={"items": [{"id": item, "quantity": 3}], "metadata": {"seats": "3"}})))
    keep("invoice_preview", "Stripe.Invoice", as_json(client.v1.invoices.create_preview(params={
        "customer": updated["customer"], "subscription": sub_id,
        "subscription_details": {"items": [{"id": item, "quantity": 4}]}})))
    keep("invoice_preview_new_subscription", "Stripe.Invoice", as_json(client.v1.invoices.create_preview(params={
        "customer": customer["id"], "subscription_details": {"items": [{"price": catalog.monthly}]}})))
    sim.control(f"/_sim/subscriptions/{trial_done['subscription']}/portal", {"action": "cancel_at_period_end"})
    keep("subscription_cancel_at_period_end", "Stripe.Subscription",
         ok(sim, "GET", f"/v1/subscriptions/{trial_done['subscription']}"))
    sim.control("/_sim/clock/advance", {"seconds": 5 * DAY})  # the trial's notice, the lapsed session
    keep("checkout_payment_expired", "Stripe.Checkout.Session",
         ok(sim, "GET", f"/v1/checkout/sessions/{lapsing['id']}"))
    sim.control("/_sim/clock/advance", {"seconds": 27 * DAY})  # the renewal, the trial's end
    renewed = ok(sim, "GET", f"/v1/subscriptions/{sub_id}")
    cycle = keep("invoice_subscription_cycle", "Stripe.Invoice",
                 ok(sim, "GET", f"/v1/invoices/{renewed['latest_invoice']}"))
    assert cycle["billing_reason"] == "subscription_cycle"
    assert any(line["parent"]["subscription_item_details"]["proration"] for line in cycle["lines"]["data"])
    keep("subscription_canceled", "Stripe.Subscription", as_json(client.v1.subscriptions.cancel(sub_id)))
    keep("subscription_ended_at_period_end", "Stripe.Subscription",
         ok(sim, "GET", f"/v1/subscriptions/{trial_done['subscription']}"))

    keep("portal_session", "Stripe.BillingPortal.Session", ok(sim, "POST", "/v1/billing_portal/sessions", {
        "customer": customer["id"], "return_url": "https://app.example/account"}))
    listed = ok(sim, "GET", "/v1/webhook_endpoints")
    keep("webhook_endpoints", "Stripe.ApiList<Stripe.WebhookEndpoint>", listed)
    keep("events_listed", "Stripe.ApiList<Stripe.Event>", ok(sim, "GET", "/v1/events", {"limit": 3}))
    return samples


def event_samples(events: dict[str, dict[str, Any]], prefix: str) -> list[Sample]:
    """One sample per event type: every event of that type, each as its own narrowed type."""
    samples = []
    for event in sorted(events.values(), key=lambda e: (e["type"], e["created"], e["id"])):
        name = f"{prefix}_{event['type']}_{event['id']}"
        samples.append(Sample(name, f"Stripe.{event_type_name(event['type'])}", event))
    return samples


def values(samples: list[Sample], kind: str, key: str) -> set[str]:
    """The values of `key` across every checked object of that kind, answered or in an event."""
    found = set()
    for sample in samples:
        obj = sample.value["data"]["object"] if sample.value.get("object") == "event" else sample.value
        if obj.get("object") == kind:
            found.add(obj[key])
    return found


def not_covered_in_source() -> set[str]:
    """The event types the simulator's code emits that EMITTED does not list (for a type built in
    an f-string, its fixed start when no listed type begins with it)."""
    root = Path(provider_sim.__file__).parent
    found = {match for path in root.rglob("*.py") for match in EMIT.findall(path.read_text())}
    assert found, "no emit(ctx, ...) calls found"
    return {name for built, name in found
            if not (name in EMITTED or (built and any(t.startswith(name) for t in EMITTED)))}


def assert_passes(result: Result, program: Program) -> None:
    assert result.returncode == 0, (
        f"objects that are not what Stripe sends for {api_version_of(program.package)} "
        f"(checked against the `{program.package}` package):\n{result.report()}")


@pytest.fixture(scope="module")
def node() -> str:
    return install()


def test_the_pinned_packages_carry_the_versions_the_simulator_speaks(node: str) -> None:
    assert api_version_of(CURRENT.package) == DEFAULT_API_VERSION
    assert api_version_of(LEGACY.package) == LEGACY_VERSION


def test_every_object_and_event_is_exactly_what_stripe_sends(
    node: str, sim: SimServer, catalog: Catalog, endpoints: dict[str, tuple[Collector, str]]
) -> None:
    answered = drive(sim, catalog)
    assert sim.control("/_sim/delivery/wait", {"timeout_ms": 10_000}, method="GET")["idle"]
    current = endpoints["current"][0].events(endpoints["current"][1])
    legacy = endpoints["legacy"][0].events(endpoints["legacy"][1])
    assert not_covered_in_source() == set()
    assert {e["type"] for e in current.values()} == EMITTED
    assert current.keys() == legacy.keys()
    assert {e["api_version"] for e in current.values()} == {DEFAULT_API_VERSION}
    assert {e["api_version"] for e in legacy.values()} == {LEGACY_VERSION}

    samples = answered + event_samples(current, "event")
    assert values(samples, "subscription", "status") == {"active", "trialing", "incomplete", "canceled"}
    assert values(samples, "invoice", "billing_reason") == {
        "subscription_create", "subscription_update", "subscription_cycle"}
    assert values(samples, "checkout.session", "status") == {"open", "complete", "expired"}
    assert values(samples, "checkout.session", "mode") == {"subscription", "payment"}
    assert values(samples, "checkout.session", "payment_status") == {"paid", "unpaid", "no_payment_required"}

    assert_passes(check(node, CURRENT, samples), CURRENT)
    assert_passes(check(node, LEGACY, event_samples(legacy, "legacy_event")), LEGACY)


def _broken(samples: list[Sample]) -> dict[str, Sample]:
    """Copies of a subscription with one fault each, deep inside (an item in an array, its price)."""
    sub = next(s.value for s in samples if s.type == "Stripe.Subscription")

    def altered(change: Any) -> Any:
        copy = json.loads(json.dumps(sub))
        change(copy["items"]["data"][0]["price"])
        return copy

    return {
        "unknown_field": Sample("broken_unknown_field", "Stripe.Subscription",
                                altered(lambda p: p.update(not_a_stripe_field=1))),
        "missing_field": Sample("broken_missing_field", "Stripe.Subscription",
                                altered(lambda p: p.pop("currency"))),
        "wrong_type": Sample("broken_wrong_type", "Stripe.Subscription",
                             altered(lambda p: p.update(unit_amount="2000"))),
    }


def test_the_check_fails_on_an_unknown_a_missing_or_a_mistyped_field(
    node: str, sim: SimServer, catalog: Catalog
) -> None:
    """A self-test of the check: a sound object passes, each fault fails exactly its own file, and a
    decimal left a plain string fails too (so the list of decimal paths cannot miss one)."""
    done = complete(sim, checkout(sim, catalog.monthly)["id"])
    sound = Sample("sound", "Stripe.Subscription", ok(sim, "GET", f"/v1/subscriptions/{done['subscription']}"))
    broken = _broken([sound])
    result = check(node, CURRENT, [sound, *broken.values()])
    assert result.failed() == {s.name for s in broken.values()}, result.output
    assert "not_a_stripe_field" in result.report(["broken_unknown_field"])
    assert "currency" in result.report(["broken_missing_field"])
    assert "unit_amount" in result.report(["broken_wrong_type"])
    undeclared = check(node, Program("no-decimals", CURRENT.package, frozenset()), [sound])
    assert undeclared.failed() == {"sound"} and "Decimal" in undeclared.report(), undeclared.output


def test_an_invoice_names_its_subscription_where_its_api_version_puts_it(
    sim: SimServer, catalog: Catalog, endpoints: dict[str, tuple[Collector, str]]
) -> None:
    """The current shape names it only under `parent.subscription_details` (expandable there); an
    endpoint pinned before 2025-03-31 receives it at the top, as that version has it."""
    done = complete(sim, checkout(sim, catalog.monthly)["id"])
    invoice = ok(sim, "GET", f"/v1/invoices/{done['invoice']}",
                 {"expand": ["parent.subscription_details.subscription"]})
    assert "subscription" not in invoice
    assert invoice["parent"]["subscription_details"]["subscription"]["id"] == done["subscription"]
    assert sim.request("GET", f"/v1/invoices/{done['invoice']}", {"expand": ["subscription"]}).status == 400
    assert sim.control("/_sim/delivery/wait", {"timeout_ms": 10_000}, method="GET")["idle"]
    [current] = [e["data"]["object"] for e in endpoints["current"][0].events(endpoints["current"][1]).values()
                 if e["type"] == "invoice.paid"]
    [legacy] = [e["data"]["object"] for e in endpoints["legacy"][0].events(endpoints["legacy"][1]).values()
                if e["type"] == "invoice.paid"]
    assert "subscription" not in current and current["parent"]["subscription_details"]["subscription"] == \
        done["subscription"]
    assert legacy["subscription"] == done["subscription"] and "parent" not in legacy
