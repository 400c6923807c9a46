"""`/v1/invoices`."""

from __future__ import annotations

from aiohttp import web

from provider_sim.api.common import listed, newest_first, params_of, respond_expanded, state_of
from provider_sim.resources.invoice import render_invoice, render_invoice_line
from provider_sim.store import find

routes = web.RouteTableDef()
STATUSES = ("draft", "open", "paid", "uncollectible", "void")


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
