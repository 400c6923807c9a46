"""`/v1/invoices`."""

from __future__ import annotations

from aiohttp import web

from provider_sim.api.common import ctx_of, listed, newest_first, params_of, respond_expanded, state_of
from provider_sim.api.subscriptions import item_changes
from provider_sim.billing import PRORATION_BEHAVIORS
from provider_sim.errors import invalid
from provider_sim.params import Params
from provider_sim.preview import PreviewRequest, preview
from provider_sim.resources.invoice import render_invoice, render_invoice_line
from provider_sim.store import find

routes = web.RouteTableDef()
STATUSES = ("draft", "open", "paid", "uncollectible", "void")
PREVIEW_IGNORED = ("automatic_tax", "customer_details", "discounts", "issuer", "on_behalf_of", "preview_mode",
                   "currency")


def _preview_request(params: Params) -> PreviewRequest:
    customer, subscription = params.text("customer"), params.text("subscription")
    details = params.child("subscription_details")
    if details is None:
        return PreviewRequest(customer=customer, subscription=subscription)
    behavior = details.choice("proration_behavior", PRORATION_BEHAVIORS) or "create_prorations"
    request = PreviewRequest(
        customer=customer, subscription=subscription, items=item_changes(details, "subscription_details[items]"),
        proration_behavior=behavior, proration_date=details.integer("proration_date"),
        cancel_at_period_end=details.boolean("cancel_at_period_end"), cancel_now=bool(details.boolean("cancel_now")),
    )
    if request.cancel_now and request.cancel_at_period_end is not None:
        raise invalid("subscription_details[cancel_now]", "You may only specify one of these parameters: "
                      "subscription_details[cancel_now], subscription_details[cancel_at_period_end].")
    details.ignore("default_tax_rates")
    return request


@routes.post("/v1/invoices/create_preview")
async def create_preview(request: web.Request) -> web.Response:
    """The invoice a change would bring; writes nothing and emits nothing."""
    params, ctx = await params_of(request), ctx_of(request)
    wanted = _preview_request(params)
    paths = params.expand()
    params.ignore(*PREVIEW_IGNORED)
    params.finish()
    invoice = preview(ctx, wanted)
    return respond_expanded(request, render_invoice(ctx.state, invoice), paths)


@routes.get("/v1/invoices/{id}")
async def retrieve_invoice(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    invoice = find(state.invoices, request.match_info["id"], "invoice")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_invoice(state, invoice), paths)


@routes.get("/v1/invoices")
async def list_invoices(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    customer, subscription = params.text("customer"), params.text("subscription")
    status = params.choice("status", STATUSES)
    found = [i for i in newest_first(list(state.invoices.values()))
             if (customer is None or i.customer == customer)
             and (subscription is None or i.subscription == subscription) and (status is None or i.status == status)]
    params.ignore("created", "due_date", "collection_method")
    return listed(params, found, lambda i: render_invoice(state, i), "/v1/invoices", lambda i: i.id, request)


@routes.get("/v1/invoices/{id}/lines")
async def list_lines(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    invoice = find(state.invoices, request.match_info["id"], "invoice")
    return listed(params, invoice.lines, lambda line: render_invoice_line(state, invoice, line),
                  f"/v1/invoices/{invoice.id}/lines", lambda line: line.id, request)
