"""Tiny hosted pages for people trying the product in a browser: the checkout page a session's
`url` points to (Pay, Decline, Cancel) and the customer portal a portal session's `url` points to."""

from __future__ import annotations

from html import escape

from aiohttp import web

from provider_sim import sessions
from provider_sim.api.common import params_of
from provider_sim.changes import PORTAL_ACTIONS, portal_action
from provider_sim.control import price_param
from provider_sim.events import Ctx
from provider_sim.model import CheckoutSession, Subscription
from provider_sim.sim import sim_of
from provider_sim.store import State, find

routes = web.RouteTableDef()
STYLE = "body{font-family:sans-serif;max-width:40em;margin:2em auto}button{margin:.2em}"


def page(title: str, body: str) -> web.Response:
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>")
    return web.Response(text=html, content_type="text/html")


def _ctx(request: web.Request) -> Ctx:
    sim = sim_of(request)
    return Ctx(sim.state, sim.clock.now())


def _amount(cents: int, currency: str) -> str:
    return f"{cents / 100:.2f} {currency.upper()}"


def _session_lines(state: State, session: CheckoutSession) -> str:
    rows = []
    for line in session.line_items:
        price = state.prices[line.price]
        name = state.products[price.product].name if price.product in state.products else price.product
        per = f" / {price.interval}" if price.interval else ""
        rows.append(f"<li>{line.quantity} × {escape(name)}: {_amount(price.unit_amount, price.currency)}{per}</li>")
    return "<ul>" + "".join(rows) + "</ul>"


@routes.get("/checkout/{id}")
async def checkout_page(request: web.Request) -> web.Response:
    state = sim_of(request).state
    session = find(state.checkout_sessions, request.match_info["id"], "checkout.session")
    base = f"/checkout/{escape(session.id)}"
    notice = "<p><b>Your card was declined.</b></p>" if request.query.get("declined") else ""
    actions = (f"<form method='post' action='{base}/pay'><button name='payment' value='succeeded'>Pay</button>"
               "<button name='payment' value='failed'>Pay with a declined card</button></form>"
               f"<form method='post' action='{base}/cancel'><button>Cancel</button></form>"
               if session.status == "open" else f"<p>This session is {escape(session.status)}.</p>")
    return page("Checkout", f"{notice}{_session_lines(state, session)}{actions}")


def _success_url(session: CheckoutSession) -> str:
    return (session.success_url or f"/checkout/{session.id}").replace("{CHECKOUT_SESSION_ID}", session.id)


@routes.post("/checkout/{id}/pay")
async def pay(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), _ctx(request)
    session = find(ctx.state.checkout_sessions, request.match_info["id"], "checkout.session")
    payment = params.choice("payment", ("succeeded", "failed")) or "succeeded"
    sessions.complete(ctx, session, payment=payment)
    if session.status != "complete":
        raise web.HTTPSeeOther(f"/checkout/{session.id}?declined=1")
    raise web.HTTPSeeOther(_success_url(session))


@routes.post("/checkout/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    session = find(ctx.state.checkout_sessions, request.match_info["id"], "checkout.session")
    if session.status == "open":
        sessions.expire(ctx, session)
    raise web.HTTPSeeOther((session.cancel_url or f"/checkout/{session.id}").replace(
        "{CHECKOUT_SESSION_ID}", session.id))


def _subscription_block(state: State, portal_id: str, sub: Subscription) -> str:
    items = "".join(f"<li>{item.quantity} × {escape(item.price)} ({escape(state.prices[item.price].lookup_key or '')})"
                    f" until {item.current_period_end}</li>" for item in sub.items)
    flag = " — cancels at period end" if sub.cancel_at_period_end else ""
    action = f"/portal/{escape(portal_id)}/subscriptions/{escape(sub.id)}"
    buttons = "".join(f"<button name='action' value='{a}'>{a.replace('_', ' ')}</button>"
                      for a in PORTAL_ACTIONS if a not in ("change_price", "change_quantity"))
    return (f"<h2>{escape(sub.id)}: {escape(sub.status)}{flag}</h2><ul>{items}</ul>"
            f"<form method='post' action='{action}'>{buttons}</form>"
            f"<form method='post' action='{action}'><input name='quantity' type='number' min='1'>"
            "<button name='action' value='change_quantity'>change quantity</button></form>"
            f"<form method='post' action='{action}'><input name='price' placeholder='price id or lookup key'>"
            "<button name='action' value='change_price'>change price</button></form>")


@routes.get("/portal/{id}")
async def portal_page(request: web.Request) -> web.Response:
    state = sim_of(request).state
    portal = find(state.portal_sessions, request.match_info["id"], "billing_portal.session")
    subs = [s for s in state.subscriptions.values() if s.customer == portal.customer and s.status != "canceled"]
    blocks = "".join(_subscription_block(state, portal.id, sub) for sub in subs) or "<p>No subscriptions.</p>"
    back = f"<p><a href='{escape(portal.return_url)}'>Return</a></p>" if portal.return_url else ""
    return page("Customer portal", blocks + back)


@routes.post("/portal/{id}/subscriptions/{subscription}")
async def portal_act(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), _ctx(request)
    portal = find(ctx.state.portal_sessions, request.match_info["id"], "billing_portal.session")
    sub = find(ctx.state.subscriptions, request.match_info["subscription"], "subscription")
    if sub.customer != portal.customer:
        raise web.HTTPForbidden(reason="This subscription belongs to another customer.")
    action = str(params.choice("action", PORTAL_ACTIONS, required=True))
    portal_action(ctx, sub, action, price=price_param(ctx, params), quantity=params.integer("quantity", minimum=1))
    raise web.HTTPSeeOther(f"/portal/{portal.id}")
