"""`/v1/products`."""

from __future__ import annotations

from aiohttp import web

from provider_sim.api.common import ctx_of, listed, newest_first, params_of, respond, respond_expanded, state_of
from provider_sim.errors import StripeError, bad_state
from provider_sim.events import emit, snapshot
from provider_sim.model import Product
from provider_sim.params import Params
from provider_sim.resources.lists import deleted
from provider_sim.resources.product import render_product
from provider_sim.store import State, find, new_id

routes = web.RouteTableDef()
IGNORED = ("shippable", "package_dimensions", "marketing_features", "type")


def _apply(state: State, product: Product, params: Params) -> None:
    """The fields create and update share; validated into the product."""
    product.name = params.text("name") or product.name
    active = params.boolean("active")
    product.active = product.active if active is None else active
    for name in ("description", "unit_label", "statement_descriptor", "url", "tax_code"):
        if params.has(name):
            setattr(product, name, params.text(name, unset=True) or None)
    images = params.texts("images")
    product.images = product.images if images is None else images
    patch = params.metadata()
    product.metadata = patch.apply(product.metadata) if patch else product.metadata
    default_price = params.text("default_price", unset=True)
    if default_price:
        price = find(state.prices, default_price, "price", param="default_price")
        if price.product != product.id:
            raise bad_state("The default price must belong to this product.", param="default_price")
    if default_price is not None:
        product.default_price = default_price or None
    params.ignore(*IGNORED)


@routes.post("/v1/products")
async def create_product(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    product_id = params.text("id") or new_id("prod_", 14)
    name = params.text("name", required=True)
    if product_id in ctx.state.products:
        raise StripeError(400, "Product already exists.", code="resource_already_exists", param="id")
    product = Product(id=product_id, name=str(name), created=ctx.now, updated=ctx.now)
    _apply(ctx.state, product, params)
    paths = params.expand()
    params.finish()
    ctx.state.products[product.id] = product
    emit(ctx, "product.created", "product", product.id)
    return respond_expanded(request, render_product(product), paths)


@routes.get("/v1/products/{id}")
async def retrieve_product(request: web.Request) -> web.Response:
    params = await params_of(request)
    product = find(state_of(request).products, request.match_info["id"], "product")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_product(product), paths)


@routes.post("/v1/products/{id}")
async def update_product(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    product = find(ctx.state.products, request.match_info["id"], "product")
    before = snapshot(ctx.state, "product", product.id)
    staged = Product(**vars(product))
    _apply(ctx.state, staged, params)
    paths = params.expand()
    params.finish()
    if render_product(staged) != before["current"]:
        staged.updated = ctx.now
    vars(product).update(vars(staged))
    emit(ctx, "product.updated", "product", product.id, before=before)
    return respond_expanded(request, render_product(product), paths)


@routes.get("/v1/products")
async def list_products(request: web.Request) -> web.Response:
    params = await params_of(request)
    products = newest_first(list(state_of(request).products.values()))
    active = params.boolean("active")
    ids = params.texts("ids")
    products = [p for p in products if (active is None or p.active == active) and (ids is None or p.id in ids)]
    params.ignore("created", "shippable", "url")
    return listed(params, products, render_product, "/v1/products", lambda p: p.id, request)


@routes.delete("/v1/products/{id}")
async def delete_product(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    product = find(ctx.state.products, request.match_info["id"], "product")
    params.finish()
    if any(price.product == product.id for price in ctx.state.prices.values()):
        raise bad_state("This product cannot be deleted because it has one or more user-created prices.")
    emit(ctx, "product.deleted", "product", product.id)
    del ctx.state.products[product.id]
    return respond(deleted(product.id, "product"))
