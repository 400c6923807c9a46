"""Any stored object by kind and id, rendered: what expansion and events need."""

from __future__ import annotations

from collections.abc import Callable

from provider_sim.model import Json
from provider_sim.resources.checkout_session import render_checkout_session, render_session_line
from provider_sim.resources.customer import render_customer
from provider_sim.resources.invoice import render_invoice
from provider_sim.resources.legacy import to_legacy
from provider_sim.resources.lists import list_object
from provider_sim.resources.payment import (
    render_charge,
    render_charge_refunds,
    render_invoice_payment,
    render_invoice_payments,
    render_payment_intent,
    render_refund,
)
from provider_sim.resources.price import render_price
from provider_sim.resources.product import render_product
from provider_sim.resources.subscription import render_subscription
from provider_sim.store import State, find
from provider_sim.versions import Shape

Renderer = Callable[[State, str, Shape], Json]


def _product(state: State, object_id: str, _: Shape) -> Json:
    return render_product(find(state.products, object_id, "product"))


def _price(state: State, object_id: str, _: Shape) -> Json:
    return render_price(find(state.prices, object_id, "price"))


def _customer(state: State, object_id: str, _: Shape) -> Json:
    return render_customer(find(state.customers, object_id, "customer"))


def _subscription(state: State, object_id: str, shape: Shape) -> Json:
    return render_subscription(state, find(state.subscriptions, object_id, "subscription"), shape)


def _invoice(state: State, object_id: str, shape: Shape) -> Json:
    return render_invoice(state, find(state.invoices, object_id, "invoice"), shape)


def _session(state: State, object_id: str, _: Shape) -> Json:
    return render_checkout_session(state, find(state.checkout_sessions, object_id, "checkout.session"))


def _session_lines(state: State, object_id: str, _: Shape) -> Json:
    session = find(state.checkout_sessions, object_id, "checkout.session")
    lines = [render_session_line(state, line) for line in session.line_items]
    return list_object(lines, f"/v1/checkout/sessions/{object_id}/line_items")


def _payment_intent(state: State, object_id: str, shape: Shape) -> Json:
    return render_payment_intent(find(state.payment_intents, object_id, "payment_intent"), shape)


def _charge(state: State, object_id: str, shape: Shape) -> Json:
    return render_charge(find(state.charges, object_id, "charge"), shape)


def _charge_refunds(state: State, object_id: str, _: Shape) -> Json:
    return render_charge_refunds(state, find(state.charges, object_id, "charge"))


def _refund(state: State, object_id: str, _: Shape) -> Json:
    return render_refund(find(state.refunds, object_id, "refund"))


def _invoice_payment(state: State, object_id: str, _: Shape) -> Json:
    return render_invoice_payment(find(state.invoice_payments, object_id, "invoice_payment"))


def _invoice_payments(state: State, object_id: str, _: Shape) -> Json:
    return render_invoice_payments(state, object_id)


RENDERERS: dict[str, Renderer] = {
    "product": _product, "price": _price, "customer": _customer, "subscription": _subscription,
    "invoice": _invoice, "checkout.session": _session, "checkout.session.line_items": _session_lines,
    "payment_intent": _payment_intent, "charge": _charge, "charge.refunds": _charge_refunds, "refund": _refund,
    "invoice_payment": _invoice_payment, "invoice.payments": _invoice_payments,
}


def render(state: State, kind: str, object_id: str, shape: Shape = Shape.CURRENT) -> Json:
    rendered = RENDERERS[kind](state, object_id, shape)
    return to_legacy(rendered) if shape is Shape.LEGACY else rendered
