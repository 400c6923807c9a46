"""`/v1/events`: newest first, filtered by `type` (with `*` wildcards), `types[]` and `created`."""

from __future__ import annotations

from aiohttp import web

from provider_sim.api.common import created_filter, listed, params_of, respond_expanded, state_of
from provider_sim.errors import invalid
from provider_sim.resources.event import render_event
from provider_sim.store import find

routes = web.RouteTableDef()


def type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


@routes.get("/v1/events/{id}")
async def retrieve_event(request: web.Request) -> web.Response:
    params = await params_of(request)
    event = find(state_of(request).events, request.match_info["id"], "event")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_event(event), paths)


@routes.get("/v1/events")
async def list_events(request: web.Request) -> web.Response:
    params = await params_of(request)
    single, several = params.text("type"), params.texts("types")
    if single and several:
        raise invalid("types", "You may only specify one of these parameters: type, types.")
    if several is not None and len(several) > 20:
        raise invalid("types", "You may pass at most 20 event types.")
    patterns = several or ([single] if single else [])
    when = created_filter(params)
    found = sorted((e for e in state_of(request).events.values()
                    if when(e.created) and (not patterns or any(type_matches(p, e.type) for p in patterns))),
                   key=lambda e: (e.created, e.seq), reverse=True)
    params.ignore("delivery_success")
    return listed(params, found, render_event, "/v1/events", lambda e: e.id, request)
