"""From events to deliveries: one body per endpoint that wants the event, rendered in the API
version that endpoint is pinned to (Stripe's pretty-printed JSON, signed as sent)."""

from __future__ import annotations

import json

from provider_sim.model import Event, WebhookEndpoint
from provider_sim.resources.event import render_event
from provider_sim.sim import Sim


def dumps(obj: object) -> str:
    return json.dumps(obj, indent=2)


def event_body(event: Event, endpoint: WebhookEndpoint) -> bytes:
    return dumps(render_event(event, endpoint.api_version)).encode()


def dispatch_events(sim: Sim) -> None:
    """Hands the events created since the last call to delivery."""
    for event in sim.state.take_outbox():
        for endpoint in list(sim.state.webhook_endpoints.values()):
            if endpoint.wants(event.type):
                sim.deliverer.submit(event.id, event.type, endpoint, event_body(event, endpoint))
