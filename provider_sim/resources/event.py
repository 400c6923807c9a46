"""`event` objects: the object as it was when the event happened, in the reader's API shape."""

from __future__ import annotations

from provider_sim.model import Event, Json
from provider_sim.versions import DEFAULT_API_VERSION, shape_for


def render_event(event: Event, api_version: str | None = None) -> Json:
    version = api_version or DEFAULT_API_VERSION
    shape = shape_for(version).value
    data: Json = {"object": event.objects[shape]}
    if event.previous is not None:
        data["previous_attributes"] = event.previous[shape]
    return {
        "id": event.id,
        "object": "event",
        "api_version": version,
        "created": event.created,
        "data": data,
        "livemode": False,
        "pending_webhooks": event.pending_webhooks,
        "request": {"id": event.request_id, "idempotency_key": event.idempotency_key},
        "type": event.type,
    }
