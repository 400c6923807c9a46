"""The control API (`/_sim/...`, JSON or form bodies, no API key): what a customer or time would do
at the provider, and how webhook delivery misbehaves."""

from __future__ import annotations

from aiohttp import web

from provider_sim import sessions
from provider_sim.api.common import ctx_of, params_of, respond
from provider_sim.api.webhook_endpoints import checked_events, checked_url, new_endpoint
from provider_sim.billing import PRORATION_BEHAVIORS
from provider_sim.changes import PORTAL_ACTIONS, portal_action
from provider_sim.delivery import ORDERS
from provider_sim.dispatch import event_body
from provider_sim.errors import invalid, no_such
from provider_sim.events import Ctx
from provider_sim.latency import Latency
from provider_sim.params import Params
from provider_sim.resources.checkout_session import render_checkout_session
from provider_sim.resources.subscription import render_subscription
from provider_sim.resources.webhook_endpoint import render_webhook_endpoint
from provider_sim.shaping import DEFAULT_DELAY_MS, DEFAULT_STALE_S, MODES, Rule
from provider_sim.sim import sim_of
from provider_sim.store import find
from provider_sim.versions import is_version

routes = web.RouteTableDef()
MAX_WAIT_MS = 60_000


@routes.post("/_sim/checkout/sessions/{id}/complete")
async def complete_session(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    session = find(ctx.state.checkout_sessions, request.match_info["id"], "checkout.session")
    trial_days = params.integer("trial_days", minimum=0, maximum=730)
    payment = params.choice("payment", sessions.PAYMENTS) or "succeeded"
    email = params.text("email")
    params.finish()
    sessions.complete(ctx, session, payment=payment, trial_days=trial_days, email=email)
    return respond(render_checkout_session(ctx.state, session))


@routes.post("/_sim/checkout/sessions/{id}/expire")
async def expire_session(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    session = find(ctx.state.checkout_sessions, request.match_info["id"], "checkout.session")
    params.finish()
    sessions.expire(ctx, session)
    return respond(render_checkout_session(ctx.state, session))


@routes.post("/_sim/checkout/sessions/{id}/async_result")
async def async_result(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    session = find(ctx.state.checkout_sessions, request.match_info["id"], "checkout.session")
    result = params.choice("result", ("succeeded", "failed"), required=True)
    params.finish()
    sessions.async_result(ctx, session, result == "succeeded")
    return respond(render_checkout_session(ctx.state, session))


def price_param(ctx: Ctx, params: Params) -> str | None:
    """A price id, or a lookup key, which is what a person at a terminal remembers."""
    price = params.text("price")
    if price is None or price in ctx.state.prices:
        return price
    by_key = ctx.state.price_by_lookup_key(price)
    if by_key is None:
        raise no_such("price", price, param="price")
    return by_key.id


@routes.post("/_sim/subscriptions/{id}/portal")
async def portal(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    sub = find(ctx.state.subscriptions, request.match_info["id"], "subscription")
    action = str(params.choice("action", PORTAL_ACTIONS, required=True))
    price, quantity = price_param(ctx, params), params.integer("quantity", minimum=1)
    item = params.text("item")
    behavior = params.choice("proration_behavior", PRORATION_BEHAVIORS) or "create_prorations"
    params.finish()
    portal_action(ctx, sub, action, price=price, quantity=quantity, item=item, proration_behavior=str(behavior))
    return respond(render_subscription(ctx.state, sub))


@routes.get("/_sim/clock")
async def clock(request: web.Request) -> web.Response:
    sim = sim_of(request)
    return respond({"now": sim.clock.now(), "offset_seconds": sim.clock.offset_s})


@routes.post("/_sim/clock/advance")
async def advance_clock(request: web.Request) -> web.Response:
    params, sim = await params_of(request), sim_of(request)
    seconds = int(params.integer("seconds", required=True, minimum=0) or 0)
    params.finish()
    sim.clock.advance(seconds)
    sessions.catch_up(Ctx(sim.state, sim.clock.now()))
    return respond({"now": sim.clock.now(), "offset_seconds": sim.clock.offset_s})


def _rule(request: web.Request, params: Params) -> Rule:
    mode = str(params.choice("mode", MODES, required=True))
    endpoint = params.text("endpoint")
    if endpoint is not None:
        find(sim_of(request).state.webhook_endpoints, endpoint, "webhook endpoint", param="endpoint")
    delay_ms = params.integer("delay_ms", minimum=0, maximum=600_000)
    stale = params.integer("stale_seconds", minimum=1)
    return Rule(mode=mode, endpoint=endpoint, event_type=params.text("event_type"),
                count=params.integer("count", minimum=1, maximum=100) or 2,
                delay_ms=DEFAULT_DELAY_MS if delay_ms is None and mode == "delay" else (delay_ms or 0),
                stale_seconds=DEFAULT_STALE_S if stale is None and mode == "stale" else (stale or 0),
                times=params.integer("times", minimum=1))


@routes.post("/_sim/delivery")
async def shape_delivery(request: web.Request) -> web.Response:
    params = await params_of(request)
    rule = _rule(request, params)
    params.finish()
    shaper = sim_of(request).deliverer.shaper
    shaper.add(rule)
    return respond({"rules": [r.as_json() for r in shaper.rules]})


@routes.get("/_sim/delivery")
async def delivery_status(request: web.Request) -> web.Response:
    params, deliverer = await params_of(request), sim_of(request).deliverer
    wanted = {name: params.text(name) for name in ("event", "endpoint", "type", "state")}
    params.finish()
    found = [d.as_json() for d in deliverer.deliveries.values()
             if all(value is None or d.as_json()[name] == value for name, value in wanted.items())]
    counts = deliverer.counts()
    return respond({"idle": counts["pending"] == 0, **counts,
                    "rules": [r.as_json() for r in deliverer.shaper.rules], "deliveries": found})


@routes.post("/_sim/delivery/release")
async def release(request: web.Request) -> web.Response:
    params, deliverer = await params_of(request), sim_of(request).deliverer
    order = params.choice("order", ORDERS) or "fifo"
    endpoint, event_type, seed = params.text("endpoint"), params.text("event_type"), params.integer("seed")
    params.finish()
    released = deliverer.release(order, endpoint=endpoint, event_type=event_type, seed=seed)
    return respond({"released": [d.as_json() for d in released]})


@routes.post("/_sim/delivery/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    """Sends an existing event again, like the dashboard's "Resend", bypassing the shaping rules."""
    params, sim = await params_of(request), sim_of(request)
    event = find(sim.state.events, str(params.text("event", required=True)), "event", param="event")
    endpoint_id = params.text("endpoint")
    params.finish()
    endpoints = [e for e in sim.state.webhook_endpoints.values()
                 if (e.id == endpoint_id if endpoint_id else e.wants(event.type))]
    if endpoint_id and not endpoints:
        raise no_such("webhook endpoint", endpoint_id, param="endpoint")
    made = [d for e in endpoints for d in sim.deliverer.submit(
        event.id, event.type, e, event_body(event, e), shaped=False)]
    return respond({"deliveries": [d.as_json() for d in made]})


@routes.route("*", "/_sim/delivery/wait")
async def wait_idle(request: web.Request) -> web.Response:
    params, deliverer = await params_of(request), sim_of(request).deliverer
    timeout_ms = params.integer("timeout_ms", minimum=0, maximum=MAX_WAIT_MS)
    params.finish()
    idle = await deliverer.wait_idle((5000 if timeout_ms is None else timeout_ms) / 1000)
    return respond({"idle": idle, **deliverer.counts()})


@routes.post("/_sim/latency")
async def slow_down(request: web.Request) -> web.Response:
    """Every API request from now on waits `delay_ms` (0: none), or only the next `times`."""
    params, sim = await params_of(request), sim_of(request)
    delay_ms = int(params.integer("delay_ms", required=True, minimum=0, maximum=MAX_WAIT_MS) or 0)
    times = params.integer("times", minimum=1)
    params.finish()
    sim.latency = Latency(delay_ms=delay_ms, times=times)
    return respond(sim.latency.as_json())


@routes.get("/_sim/latency")
async def latency_status(request: web.Request) -> web.Response:
    params = await params_of(request)
    params.finish()
    return respond(sim_of(request).latency.as_json())


@routes.post("/_sim/reset")
async def reset(request: web.Request) -> web.Response:
    params = await params_of(request)
    params.finish()
    await sim_of(request).reset()
    return respond({"reset": True})


@routes.post("/_sim/webhook_endpoints")
async def preset_endpoint(request: web.Request) -> web.Response:
    """A webhook endpoint with a secret of the caller's choosing (Stripe always picks it)."""
    params, ctx = await params_of(request), ctx_of(request)
    url = str(checked_url(params, required=True))
    events = checked_events(params, required=False) or ["*"]
    secret, api_version = params.text("secret"), params.text("api_version")
    if api_version is not None and not is_version(api_version):
        raise invalid("api_version", f"Invalid API version: {api_version}")
    params.finish()
    endpoint = new_endpoint(url, events, ctx.now, secret=secret, api_version=api_version)
    ctx.state.webhook_endpoints[endpoint.id] = endpoint
    return respond(render_webhook_endpoint(endpoint, with_secret=True))
