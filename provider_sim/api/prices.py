"""`/v1/prices`."""

from __future__ import annotations

import re
from collections.abc import Callable

from aiohttp import web

from provider_sim.api.common import ctx_of, listed, newest_first, params_of, respond_expanded, state_of
from provider_sim.errors import bad_state, invalid, missing
from provider_sim.events import Ctx, emit, snapshot
from provider_sim.model import Price, Product
from provider_sim.params import Params
from provider_sim.resources.price import render_price
from provider_sim.store import find, new_id

routes = web.RouteTableDef()
INTERVALS = ("day", "week", "month", "year")
TAX_BEHAVIORS = ("exclusive", "inclusive", "unspecified")
CURRENCY = re.compile(r"^[a-z]{3}$")


def _recurring(price: Price, params: Params) -> None:
    recurring = params.child("recurring")
    if recurring is None:
        return
    price.interval = recurring.choice("interval", INTERVALS, required=True)
    price.interval_count = recurring.integer("interval_count", minimum=1, maximum=365) or 1
    price.trial_period_days = recurring.integer("trial_period_days", minimum=1, maximum=730)
    recurring.choice("usage_type", ("licensed",))


def _product_of(ctx: Ctx, params: Params) -> str | Product:
    """An existing product's id, or the product `product_data` describes (stored once all is valid)."""
    product_id = params.text("product")
    data = params.child("product_data")
    if product_id and data:
        raise invalid("product_data", "You may only specify one of these parameters: product, product_data.")
    if product_id:
        return find(ctx.state.products, product_id, "product", param="product").id
    if data is None:
        raise missing("product")
    product = Product(id=new_id("prod_", 14), name=str(data.text("name", required=True)), created=ctx.now,
                      updated=ctx.now)
    patch = data.metadata()
    product.metadata = patch.apply({}) if patch else {}
    data.ignore("active", "statement_descriptor", "tax_code", "unit_label")
    return product


def _lookup_key(ctx: Ctx, price: Price, params: Params) -> Price | None:
    """The price that loses its lookup key to this one (`transfer_lookup_key`), if any."""
    key = params.text("lookup_key", unset=True)
    transfer = params.boolean("transfer_lookup_key")
    if key is None:
        return None
    holder = ctx.state.price_by_lookup_key(key) if key else None
    if holder is not None and holder.id != price.id and not transfer:
        raise bad_state(f"A price (`{holder.id}`) already uses that lookup key.", param="lookup_key")
    price.lookup_key = key or None
    return holder if holder is not None and holder.id != price.id else None


def _move_lookup_key(ctx: Ctx, holder: Price | None) -> None:
    if holder is not None:
        before = snapshot(ctx.state, "price", holder.id)
        holder.lookup_key = None
        emit(ctx, "price.updated", "price", holder.id, before=before)


def _common(price: Price, params: Params) -> None:
    active = params.boolean("active")
    price.active = price.active if active is None else active
    if params.has("nickname"):
        price.nickname = params.text("nickname", unset=True) or None
    price.tax_behavior = params.choice("tax_behavior", TAX_BEHAVIORS) or price.tax_behavior
    patch = params.metadata()
    price.metadata = patch.apply(price.metadata) if patch else price.metadata


@routes.post("/v1/prices")
async def create_price(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    currency = str(params.text("currency", required=True)).lower()
    if not CURRENCY.match(currency):
        raise invalid("currency", f"Invalid currency: {currency}.")
    amount = params.integer("unit_amount", minimum=0)
    decimal = params.integer("unit_amount_decimal", minimum=0)
    if amount is None and decimal is None:
        raise missing("unit_amount")
    params.choice("billing_scheme", ("per_unit",))
    price = Price(id=new_id("price_"), product="", currency=currency, unit_amount=amount if amount is not None
                  else int(decimal or 0), created=ctx.now)
    _recurring(price, params)
    _common(price, params)
    product = _product_of(ctx, params)
    holder = _lookup_key(ctx, price, params)
    paths = params.expand()
    params.finish()
    if isinstance(product, Product):
        ctx.state.products[product.id] = product
        emit(ctx, "product.created", "product", product.id)
    price.product = product.id if isinstance(product, Product) else product
    _move_lookup_key(ctx, holder)
    ctx.state.prices[price.id] = price
    emit(ctx, "price.created", "price", price.id)
    return respond_expanded(request, render_price(price), paths)


@routes.get("/v1/prices/{id}")
async def retrieve_price(request: web.Request) -> web.Response:
    params = await params_of(request)
    price = find(state_of(request).prices, request.match_info["id"], "price")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_price(price), paths)


@routes.post("/v1/prices/{id}")
async def update_price(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    price = find(ctx.state.prices, request.match_info["id"], "price")
    before = snapshot(ctx.state, "price", price.id)
    staged = Price(**vars(price))
    _common(staged, params)
    holder = _lookup_key(ctx, staged, params)
    paths = params.expand()
    params.finish()
    _move_lookup_key(ctx, holder)
    vars(price).update(vars(staged))
    emit(ctx, "price.updated", "price", price.id, before=before)
    return respond_expanded(request, render_price(price), paths)


def _filter(params: Params) -> Callable[[Price], bool]:
    active, currency, product = params.boolean("active"), params.text("currency"), params.text("product")
    kind, keys = params.choice("type", ("one_time", "recurring")), params.texts("lookup_keys")
    if keys is not None and len(keys) > 10:
        raise invalid("lookup_keys", "You may pass at most 10 lookup keys.")
    recurring = params.child("recurring")
    interval = recurring.choice("interval", INTERVALS) if recurring else None

    def keep(price: Price) -> bool:
        return ((active is None or price.active == active) and (currency is None or price.currency == currency)
                and (product is None or price.product == product) and (keys is None or price.lookup_key in keys)
                and (kind is None or (kind == "recurring") == price.recurring)
                and (interval is None or price.interval == interval))
    return keep


@routes.get("/v1/prices")
async def list_prices(request: web.Request) -> web.Response:
    params = await params_of(request)
    keep = _filter(params)
    prices = [p for p in newest_first(list(state_of(request).prices.values())) if keep(p)]
    params.ignore("created")
    return listed(params, prices, render_price, "/v1/prices", lambda p: p.id, request)
