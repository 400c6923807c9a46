"""`/v1/billing_portal/sessions`."""

from __future__ import annotations

from aiohttp import web

from provider_sim.api.checkout_sessions import base_url
from provider_sim.api.common import ctx_of, params_of, respond_expanded
from provider_sim.model import PortalSession
from provider_sim.resources.portal_session import render_portal_session
from provider_sim.store import find, new_id

routes = web.RouteTableDef()
# The account's default portal configuration, the one sessions use unless told otherwise.
DEFAULT_CONFIGURATION = "bpc_1ProviderSimDefault00000"


@routes.post("/v1/billing_portal/sessions")
async def create_portal_session(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    customer = find(ctx.state.customers, str(params.text("customer", required=True)), "customer", param="customer")
    return_url = params.text("return_url")
    configuration = params.text("configuration") or DEFAULT_CONFIGURATION
    paths = params.expand()
    params.ignore("flow_data", "locale", "on_behalf_of")
    params.finish()
    session_id = new_id("bps_")
    session = PortalSession(id=session_id, customer=customer.id, created=ctx.now, configuration=configuration,
                            url=f"{base_url(request)}/portal/{session_id}", return_url=return_url)
    ctx.state.portal_sessions[session.id] = session
    return respond_expanded(request, render_portal_session(session), paths)
