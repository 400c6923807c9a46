"""`/v1/payment_intents`, `/v1/charges` and `/v1/invoice_payments`: read only, to find what a
refund can name (a paid invoice's payment intent is its `invoice_payment`'s
`payment.payment_intent`)."""

from __future__ import annotations

from aiohttp import web

from provider_sim.api.common import created_filter, listed, newest_first, params_of, respond_expanded, state_of
from provider_sim.resources.payment import (
    render_charge,
    render_charge_refunds,
    render_invoice_payment,
    render_payment_intent,
)
from provider_sim.store import find

routes = web.RouteTableDef()


@routes.get("/v1/payment_intents/{id}")
async def retrieve_payment_intent(request: web.Request) -> web.Response:
    params = await params_of(request)
    intent = find(state_of(request).payment_intents, request.match_info["id"], "payment_intent")
    paths = params.expand()
    params.ignore("client_secret")
    params.finish()
    return respond_expanded(request, render_payment_intent(intent), paths)


@routes.get("/v1/payment_intents")
async def list_payment_intents(request: web.Request) -> web.Response:
    params = await params_of(request)
    customer, when = params.text("customer"), created_filter(params)
    found = [i for i in newest_first(list(state_of(request).payment_intents.values()))
             if (customer is None or i.customer == customer) and when(i.created)]
    return listed(params, found, render_payment_intent, "/v1/payment_intents", lambda i: i.id, request)


@routes.get("/v1/charges/{id}")
async def retrieve_charge(request: web.Request) -> web.Response:
    params = await params_of(request)
    charge = find(state_of(request).charges, request.match_info["id"], "charge")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_charge(charge), paths)


@routes.get("/v1/charges")
async def list_charges(request: web.Request) -> web.Response:
    params = await params_of(request)
    customer, intent, when = params.text("customer"), params.text("payment_intent"), created_filter(params)
    found = [c for c in newest_first(list(state_of(request).charges.values()))
             if (customer is None or c.customer == customer) and (intent is None or c.payment_intent == intent)
             and when(c.created)]
    params.ignore("transfer_group")
    return listed(params, found, render_charge, "/v1/charges", lambda c: c.id, request)


@routes.get("/v1/charges/{id}/refunds")
async def list_charge_refunds(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    charge = find(state.charges, request.match_info["id"], "charge")
    page = render_charge_refunds(state, charge)["data"]
    return listed(params, page, lambda r: r, f"/v1/charges/{charge.id}/refunds", lambda r: str(r["id"]), request)


@routes.get("/v1/invoice_payments/{id}")
async def retrieve_invoice_payment(request: web.Request) -> web.Response:
    params = await params_of(request)
    payment = find(state_of(request).invoice_payments, request.match_info["id"], "invoice_payment")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_invoice_payment(payment), paths)


@routes.get("/v1/invoice_payments")
async def list_invoice_payments(request: web.Request) -> web.Response:
    params = await params_of(request)
    invoice = params.text("invoice")
    payment = params.child("payment")
    intent = payment.text("payment_intent") if payment else None
    if payment:
        payment.choice("type", ("payment_intent",))
    status = params.choice("status", ("canceled", "open", "paid"))
    found = [p for p in newest_first(list(state_of(request).invoice_payments.values()))
             if (invoice is None or p.invoice == invoice) and (intent is None or p.payment_intent == intent)
             and status in (None, "paid")]
    return listed(params, found, render_invoice_payment, "/v1/invoice_payments", lambda p: p.id, request)
