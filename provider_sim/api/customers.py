"""`/v1/customers`."""

from __future__ import annotations

from aiohttp import web

from provider_sim.api.common import ctx_of, listed, newest_first, params_of, respond_expanded, state_of
from provider_sim.events import emit, snapshot
from provider_sim.model import Customer
from provider_sim.params import Params
from provider_sim.resources.customer import render_customer
from provider_sim.store import find, new_id, new_invoice_prefix

routes = web.RouteTableDef()
IGNORED = ("address", "shipping", "preferred_locales", "payment_method", "invoice_settings", "tax_exempt", "balance")


def _apply(customer: Customer, params: Params) -> None:
    for name in ("email", "name", "description", "phone"):
        if params.has(name):
            setattr(customer, name, params.text(name, unset=True) or None)
    patch = params.metadata()
    customer.metadata = patch.apply(customer.metadata) if patch else customer.metadata
    params.ignore(*IGNORED)


@routes.post("/v1/customers")
async def create_customer(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    customer = Customer(id=new_id("cus_", 14), created=ctx.now, invoice_prefix=new_invoice_prefix())
    _apply(customer, params)
    paths = params.expand()
    params.finish()
    ctx.state.customers[customer.id] = customer
    emit(ctx, "customer.created", "customer", customer.id)
    return respond_expanded(request, render_customer(customer), paths)


@routes.get("/v1/customers/{id}")
async def retrieve_customer(request: web.Request) -> web.Response:
    params = await params_of(request)
    customer = find(state_of(request).customers, request.match_info["id"], "customer")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_customer(customer), paths)


@routes.post("/v1/customers/{id}")
async def update_customer(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    customer = find(ctx.state.customers, request.match_info["id"], "customer")
    before = snapshot(ctx.state, "customer", customer.id)
    staged = Customer(**vars(customer))
    _apply(staged, params)
    paths = params.expand()
    params.finish()
    vars(customer).update(vars(staged))
    emit(ctx, "customer.updated", "customer", customer.id, before=before)
    return respond_expanded(request, render_customer(customer), paths)


@routes.get("/v1/customers")
async def list_customers(request: web.Request) -> web.Response:
    params = await params_of(request)
    email = params.text("email")
    customers = [c for c in newest_first(list(state_of(request).customers.values()))
                 if email is None or c.email == email]
    params.ignore("created", "test_clock")
    return listed(params, customers, render_customer, "/v1/customers", lambda c: c.id, request)
