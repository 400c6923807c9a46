"""`/v1/webhook_endpoints`: registered the Stripe way; the secret appears only when created."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from provider_sim.api.common import ctx_of, listed, newest_first, params_of, respond, state_of
from provider_sim.errors import invalid
from provider_sim.model import WebhookEndpoint
from provider_sim.params import Params
from provider_sim.resources.lists import deleted
from provider_sim.resources.webhook_endpoint import render_webhook_endpoint
from provider_sim.store import find, new_id, new_secret
from provider_sim.versions import is_version

routes = web.RouteTableDef()


def checked_url(params: Params, *, required: bool) -> str | None:
    url = params.text("url", required=required)
    if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
        raise invalid("url", f"Invalid URL: {url}", "url_invalid")
    return url


def checked_events(params: Params, *, required: bool) -> list[str] | None:
    events = params.texts("enabled_events", required=required)
    if events is not None and not events:
        raise invalid("enabled_events", "enabled_events must list at least one event type, or '*'.")
    return events


def new_endpoint(url: str, events: list[str], created: int, *, secret: str | None = None,
                 api_version: str | None = None) -> WebhookEndpoint:
    return WebhookEndpoint(id=new_id("we_"), url=url, secret=secret or new_secret(), created=created,
                           enabled_events=events, api_version=api_version)


@routes.post("/v1/webhook_endpoints")
async def create_endpoint(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    url = str(checked_url(params, required=True))
    events = checked_events(params, required=True) or ["*"]
    api_version = params.text("api_version")
    if api_version is not None and not is_version(api_version):
        raise invalid("api_version", f"Invalid API version: {api_version}")
    endpoint = new_endpoint(url, events, ctx.now, api_version=api_version)
    endpoint.description = params.text("description")
    patch = params.metadata()
    endpoint.metadata = patch.apply({}) if patch else {}
    params.ignore("connect", "expand")
    params.finish()
    ctx.state.webhook_endpoints[endpoint.id] = endpoint
    return respond(render_webhook_endpoint(endpoint, with_secret=True))


@routes.get("/v1/webhook_endpoints/{id}")
async def retrieve_endpoint(request: web.Request) -> web.Response:
    params = await params_of(request)
    endpoint = find(state_of(request).webhook_endpoints, request.match_info["id"], "webhook endpoint")
    params.ignore("expand")
    params.finish()
    return respond(render_webhook_endpoint(endpoint))


@routes.post("/v1/webhook_endpoints/{id}")
async def update_endpoint(request: web.Request) -> web.Response:
    params = await params_of(request)
    endpoint = find(state_of(request).webhook_endpoints, request.match_info["id"], "webhook endpoint")
    url, events = checked_url(params, required=False), checked_events(params, required=False)
    disabled, patch = params.boolean("disabled"), params.metadata()
    description = params.text("description", unset=True)
    params.ignore("expand")
    params.finish()
    endpoint.url = url or endpoint.url
    endpoint.enabled_events = events or endpoint.enabled_events
    endpoint.status = endpoint.status if disabled is None else ("disabled" if disabled else "enabled")
    endpoint.metadata = patch.apply(endpoint.metadata) if patch else endpoint.metadata
    endpoint.description = endpoint.description if description is None else (description or None)
    return respond(render_webhook_endpoint(endpoint))


@routes.get("/v1/webhook_endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    params = await params_of(request)
    endpoints = newest_first(list(state_of(request).webhook_endpoints.values()))
    return listed(params, endpoints, render_webhook_endpoint, "/v1/webhook_endpoints", lambda e: e.id, request)


@routes.delete("/v1/webhook_endpoints/{id}")
async def delete_endpoint(request: web.Request) -> web.Response:
    params = await params_of(request)
    state = state_of(request)
    endpoint = find(state.webhook_endpoints, request.match_info["id"], "webhook endpoint")
    params.finish()
    del state.webhook_endpoints[endpoint.id]
    return respond(deleted(endpoint.id, "webhook_endpoint"))
