"""`webhook_endpoint` objects; the secret is shown only in the answer that created the endpoint."""

from __future__ import annotations

from provider_sim.model import Json, WebhookEndpoint


def render_webhook_endpoint(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> Json:
    rendered: Json = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "api_version": endpoint.api_version,
        "application": None,
        "created": endpoint.created,
        "description": endpoint.description,
        "enabled_events": list(endpoint.enabled_events),
        "livemode": False,
        "metadata": dict(endpoint.metadata),
        "status": endpoint.status,
        "url": endpoint.url,
    }
    if with_secret:
        rendered["secret"] = endpoint.secret
    return rendered
