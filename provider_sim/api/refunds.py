"""`/v1/refunds`: refund all or part of a charge, named by itself or by its payment intent."""

from __future__ import annotations

from aiohttp import web

from provider_sim import payments
from provider_sim.api.common import created_filter, ctx_of, listed, newest_first, params_of, respond_expanded, state_of
from provider_sim.resources.payment import render_refund
from provider_sim.store import find

routes = web.RouteTableDef()
IGNORED = ("instructions_email", "refund_application_fee", "reverse_transfer")


@routes.post("/v1/refunds")
async def create_refund(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    charge_id, intent_id = params.text("charge"), params.text("payment_intent")
    amount = params.integer("amount", minimum=1)
    reason = params.choice("reason", payments.REFUND_REASONS)
    patch = params.metadata()
    paths = params.expand()
    params.ignore(*IGNORED)
    params.finish()
    charge = payments.refundable_charge(ctx, charge_id, intent_id)
    made = payments.refund(ctx, charge, amount, reason=reason, metadata=patch.apply({}) if patch else {})
    return respond_expanded(request, render_refund(made), paths)


@routes.get("/v1/refunds/{id}")
async def retrieve_refund(request: web.Request) -> web.Response:
    params = await params_of(request)
    refund = find(state_of(request).refunds, request.match_info["id"], "refund")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_refund(refund), paths)


@routes.get("/v1/refunds")
async def list_refunds(request: web.Request) -> web.Response:
    params = await params_of(request)
    charge, intent = params.text("charge"), params.text("payment_intent")
    when = created_filter(params)
    found = [r for r in newest_first(list(state_of(request).refunds.values()))
             if (charge is None or r.charge == charge) and (intent is None or r.payment_intent == intent)
             and when(r.created)]
    return listed(params, found, render_refund, "/v1/refunds", lambda r: r.id, request)
