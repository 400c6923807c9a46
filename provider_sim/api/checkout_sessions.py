"""`/v1/checkout/sessions`."""

from __future__ import annotations

from aiohttp import web

from provider_sim import sessions
from provider_sim.api.common import ctx_of, listed, newest_first, params_of, respond_expanded, state_of
from provider_sim.errors import invalid
from provider_sim.params import Params
from provider_sim.resources.checkout_session import render_checkout_session, render_session_line
from provider_sim.sim import sim_of
from provider_sim.store import find

routes = web.RouteTableDef()
IGNORED = ("payment_method_types", "allow_promotion_codes", "billing_address_collection", "automatic_tax", "locale",
           "ui_mode", "payment_method_collection", "consent_collection", "phone_number_collection",
           "tax_id_collection", "submit_type", "custom_text", "invoice_creation", "payment_intent_data",
           "saved_payment_method_options", "customer_update", "discounts", "currency")


def base_url(request: web.Request) -> str:
    return sim_of(request).options.public_url or f"{request.scheme}://{request.host}"


def _lines(params: Params) -> list[tuple[str, int]]:
    lines = []
    for line in params.children("line_items", required=True) or []:
        price = line.text("price", required=True)
        quantity = line.integer("quantity", required=True, minimum=1, maximum=999_999)
        line.ignore("adjustable_quantity", "tax_rates", "dynamic_tax_rates")
        lines.append((str(price), int(quantity or 1)))
    if not lines:
        raise invalid("line_items", "line_items must contain at least one item.")
    return lines


def _subscription_data(params: Params) -> tuple[dict[str, str], int | None]:
    data = params.child("subscription_data")
    if data is None:
        return {}, None
    patch = data.metadata()
    trial_days = data.integer("trial_period_days", minimum=1, maximum=730)
    data.ignore("description", "proration_behavior", "billing_cycle_anchor", "default_tax_rates")
    return (patch.apply({}) if patch else {}), trial_days


def _spec(request: web.Request, params: Params) -> sessions.SessionSpec:
    mode = str(params.choice("mode", ("payment", "subscription"), required=True))
    creation = params.choice("customer_creation", ("if_required", "always"))
    if creation and mode != "payment":
        raise invalid("customer_creation", "`customer_creation` can only be used in `payment` mode.")
    reference = params.text("client_reference_id")
    if reference and len(reference) > 200:
        raise invalid("client_reference_id", "client_reference_id can have up to 200 characters.")
    patch = params.metadata()
    subscription_metadata, trial_days = _subscription_data(params)
    if mode == "payment" and params.has("subscription_data"):
        raise invalid("subscription_data", "`subscription_data` can only be used in `subscription` mode.")
    return sessions.SessionSpec(
        mode=mode, lines=_lines(params), base_url=base_url(request), success_url=params.text("success_url"),
        cancel_url=params.text("cancel_url"), customer=params.text("customer"),
        customer_email=params.text("customer_email"), customer_creation=creation, client_reference_id=reference,
        metadata=patch.apply({}) if patch else {}, subscription_metadata=subscription_metadata,
        trial_period_days=trial_days, expires_at=params.integer("expires_at"),
    )


@routes.post("/v1/checkout/sessions")
async def create_session(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    spec = _spec(request, params)
    paths = params.expand()
    params.ignore(*IGNORED)
    params.finish()
    session = sessions.create_session(ctx, spec)
    return respond_expanded(request, render_checkout_session(ctx.state, session), paths)


@routes.get("/v1/checkout/sessions/{id}")
async def retrieve_session(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    session = find(state.checkout_sessions, request.match_info["id"], "checkout.session")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_checkout_session(state, session), paths)


@routes.get("/v1/checkout/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    wanted = {name: params.text(name) for name in ("customer", "subscription", "payment_intent")}
    status = params.choice("status", ("open", "complete", "expired"))
    found = [s for s in newest_first(list(state.checkout_sessions.values()))
             if all(value is None or getattr(s, name) == value for name, value in wanted.items())
             and (status is None or s.status == status)]
    params.ignore("created", "customer_details", "payment_link")
    return listed(params, found, lambda s: render_checkout_session(state, s), "/v1/checkout/sessions",
                  lambda s: s.id, request)


@routes.post("/v1/checkout/sessions/{id}/expire")
async def expire_session(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    session = find(ctx.state.checkout_sessions, request.match_info["id"], "checkout.session")
    paths = params.expand()
    params.finish()
    sessions.expire(ctx, session)
    return respond_expanded(request, render_checkout_session(ctx.state, session), paths)


@routes.get("/v1/checkout/sessions/{id}/line_items")
async def list_line_items(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    session = find(state.checkout_sessions, request.match_info["id"], "checkout.session")
    return listed(params, session.line_items, lambda line: render_session_line(state, line),
                  f"/v1/checkout/sessions/{session.id}/line_items", lambda line: line.id, request)


