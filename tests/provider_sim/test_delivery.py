"""Webhook delivery to a real receiver: Stripe's signature, retries with backoff, and the shaping
that reproduces late, repeated, reordered, lost and stale webhooks."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import pytest
import stripe

from tests.provider_sim.builders import Catalog, checkout, ok
from tests.provider_sim.harness import Receiver, SimServer, eventually
from tests.provider_sim.test_event_sequences import SUBSCRIPTION_START


def register(sim: SimServer, receiver: Receiver, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"url": receiver.url, "enabled_events": ["*"], **extra}
    return ok(sim, "POST", "/v1/webhook_endpoints", params)  # type: ignore[no-any-return]


def buy(sim: SimServer, catalog: Catalog, **body: Any) -> str:
    session = checkout(sim, catalog.monthly)
    sim.control(f"/_sim/checkout/sessions/{session['id']}/complete", body)
    return str(session["id"])


def parts(header: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in header.split(","))


async def test_deliveries_are_signed_exactly_as_stripe_signs(sim: SimServer, receiver: Receiver) -> None:
    endpoint = register(sim, receiver)
    ok(sim, "POST", "/v1/products", {"id": "pro", "name": "Pro"})
    await sim.wait_idle()
    [delivery] = receiver.received
    header = delivery.headers["Stripe-Signature"]
    signed = parts(header)
    expected = hmac.new(endpoint["secret"].encode(), f"{signed['t']}.".encode() + delivery.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signed["v1"], expected)
    assert abs(int(signed["t"]) - time.time()) < 5
    assert stripe.WebhookSignature.verify_header(delivery.body, header, endpoint["secret"], tolerance=300)
    assert delivery.headers["Content-Type"] == "application/json; charset=utf-8"
    event = delivery.event
    assert event == ok(sim, "GET", f"/v1/events/{event['id']}")
    assert (event["type"], event["data"]["object"]["id"], event["pending_webhooks"]) == ("product.created", "pro", 1)


async def test_a_failed_delivery_is_retried_with_the_same_body(sim: SimServer, receiver: Receiver) -> None:
    receiver.script = [500, 503]
    register(sim, receiver)
    ok(sim, "POST", "/v1/products", {"id": "pro", "name": "Pro"})
    await sim.wait_idle()
    assert len(receiver.received) == 3 and len({d.body for d in receiver.received}) == 1
    [record] = (await sim.acontrol("/_sim/delivery", method="GET"))["deliveries"]
    assert [a["status"] for a in record["attempts"]] == [500, 503, 200] and record["state"] == "succeeded"
    gaps = [b["at"] - a["at"] for a, b in zip(record["attempts"], record["attempts"][1:], strict=False)]
    assert all(gap >= sim.retry.backoff(n) for n, gap in enumerate(gaps, start=1))


async def test_an_unreachable_endpoint_fails_after_the_bounded_attempts(sim: SimServer) -> None:
    ok(sim, "POST", "/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/nobody", "enabled_events": ["*"]})
    ok(sim, "POST", "/v1/products", {"id": "pro", "name": "Pro"})
    status = await sim.wait_idle()
    assert status["failed"] == 1
    [record] = (await sim.acontrol("/_sim/delivery", method="GET"))["deliveries"]
    assert len(record["attempts"]) == sim.retry.max_attempts
    assert all(a["status"] is None and a["error"] for a in record["attempts"])


async def test_held_deliveries_are_released_in_reverse(sim: SimServer, catalog: Catalog, receiver: Receiver) -> None:
    register(sim, receiver)
    await sim.acontrol("/_sim/delivery", {"mode": "hold"})
    buy(sim, catalog)
    status = await sim.wait_idle()
    assert status["held"] == len(SUBSCRIPTION_START) and receiver.received == []
    released = await sim.acontrol("/_sim/delivery/release", {"order": "reverse"})
    assert [d["type"] for d in released["released"]] == SUBSCRIPTION_START[::-1]
    await sim.wait_idle()
    assert receiver.types() == SUBSCRIPTION_START[::-1]


async def test_shuffle_with_a_seed_is_repeatable(sim: SimServer, catalog: Catalog, receiver: Receiver) -> None:
    register(sim, receiver)
    await sim.acontrol("/_sim/delivery", {"mode": "hold"})
    buy(sim, catalog)
    await sim.acontrol("/_sim/delivery", {"mode": "normal"})
    released = await sim.acontrol("/_sim/delivery/release", {"order": "shuffle", "seed": 7})
    await sim.wait_idle()
    assert receiver.types() == [d["type"] for d in released["released"]]
    assert sorted(receiver.types()) == sorted(SUBSCRIPTION_START)


async def test_duplicate_sends_each_matching_event_n_times(sim: SimServer, catalog: Catalog,
                                                           receiver: Receiver) -> None:
    register(sim, receiver)
    await sim.acontrol("/_sim/delivery", {"mode": "duplicate", "count": 3, "event_type": "invoice.paid"})
    buy(sim, catalog)
    await sim.wait_idle()
    paid = [d.event for d in receiver.received if d.event["type"] == "invoice.paid"]
    assert len(paid) == 3 and len({e["id"] for e in paid}) == 1
    assert len(receiver.received) == len(SUBSCRIPTION_START) + 2


async def test_a_dropped_delivery_arrives_only_when_released(sim: SimServer, catalog: Catalog,
                                                             receiver: Receiver) -> None:
    register(sim, receiver)
    await sim.acontrol("/_sim/delivery", {"mode": "drop", "event_type": "customer.subscription.created", "times": 1})
    buy(sim, catalog)
    status = await sim.wait_idle()
    assert status["dropped"] == 1 and "customer.subscription.created" not in receiver.types()
    assert (await sim.acontrol("/_sim/delivery", method="GET"))["rules"] == []  # `times` spent
    await sim.acontrol("/_sim/delivery/release")
    await sim.wait_idle()
    assert receiver.types()[-1] == "customer.subscription.created"


async def test_a_delayed_delivery_arrives_late(sim: SimServer, receiver: Receiver) -> None:
    register(sim, receiver)
    await sim.acontrol("/_sim/delivery", {"mode": "delay", "delay_ms": 300})
    started = time.monotonic()
    ok(sim, "POST", "/v1/products", {"id": "pro", "name": "Pro"})
    states = [d["state"] for d in (await sim.acontrol("/_sim/delivery", method="GET"))["deliveries"]]
    assert states == ["scheduled"]
    await eventually(lambda: receiver.received, what="the delayed delivery")
    assert time.monotonic() - started >= 0.25


async def test_a_stale_signature_timestamp_fails_a_tolerance_check(sim: SimServer, receiver: Receiver) -> None:
    endpoint = register(sim, receiver)
    await sim.acontrol("/_sim/delivery", {"mode": "stale", "stale_seconds": 900})
    ok(sim, "POST", "/v1/products", {"id": "pro", "name": "Pro"})
    await sim.wait_idle()
    [delivery] = receiver.received
    header = delivery.headers["Stripe-Signature"]
    assert time.time() - int(parts(header)["t"]) >= 890
    stripe.WebhookSignature.verify_header(delivery.body, header, endpoint["secret"])  # the MAC itself is right
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(delivery.body, header, endpoint["secret"], tolerance=300)


async def test_rules_apply_per_endpoint(sim: SimServer, catalog: Catalog, receiver: Receiver) -> None:
    other = await Receiver().start()
    try:
        held = register(sim, receiver)
        register(sim, other, enabled_events=["invoice.paid", "checkout.session.completed"])
        await sim.acontrol("/_sim/delivery", {"mode": "hold", "endpoint": held["id"]})
        buy(sim, catalog)
        await sim.wait_idle()
        assert receiver.received == [] and other.types() == ["invoice.paid", "checkout.session.completed"]
    finally:
        await other.stop()


async def test_an_endpoint_pinned_to_an_old_api_version_gets_the_old_shape(
        sim: SimServer, catalog: Catalog, receiver: Receiver) -> None:
    current = await Receiver().start()
    try:
        register(sim, receiver, api_version="2024-06-20")
        register(sim, current)
        buy(sim, catalog)
        await sim.wait_idle()
        old = next(d.event for d in receiver.received if d.event["type"] == "customer.subscription.created")
        new = next(d.event for d in current.received if d.event["type"] == "customer.subscription.created")
    finally:
        await current.stop()
    assert old["api_version"] == "2024-06-20" and old["id"] == new["id"]
    sub, item = old["data"]["object"], old["data"]["object"]["items"]["data"][0]
    new_item = new["data"]["object"]["items"]["data"][0]
    assert (sub["current_period_start"], sub["current_period_end"]) == (new_item["current_period_start"],
                                                                        new_item["current_period_end"])
    assert sub["plan"]["id"] == catalog.monthly and sub["quantity"] == 1
    assert "current_period_end" not in item and "current_period_end" not in new["data"]["object"]
    old_invoice = next(d.event for d in receiver.received if d.event["type"] == "invoice.paid")["data"]["object"]
    assert old_invoice["paid"] is True and old_invoice["lines"]["data"][0]["price"]["id"] == catalog.monthly


async def test_redeliver_resends_an_event_like_the_dashboard_does(sim: SimServer, receiver: Receiver) -> None:
    register(sim, receiver)
    ok(sim, "POST", "/v1/products", {"id": "pro", "name": "Pro"})
    await sim.wait_idle()
    event_id = receiver.received[0].event["id"]
    await sim.acontrol("/_sim/delivery/redeliver", {"event": event_id})
    await sim.wait_idle()
    assert [d.event["id"] for d in receiver.received] == [event_id, event_id]


async def test_reset_forgets_everything(sim: SimServer, catalog: Catalog, receiver: Receiver) -> None:
    register(sim, receiver)
    buy(sim, catalog)
    await sim.acontrol("/_sim/clock/advance", {"seconds": 3600})
    await sim.acontrol("/_sim/reset")
    assert ok(sim, "GET", "/v1/events")["data"] == [] and ok(sim, "GET", "/v1/webhook_endpoints")["data"] == []
    assert (await sim.acontrol("/_sim/clock", method="GET"))["offset_seconds"] == 0
    assert (await sim.acontrol("/_sim/delivery", method="GET"))["deliveries"] == []
