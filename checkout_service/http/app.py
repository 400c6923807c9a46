"""The checkout service's HTTP application: explicit wiring through `create_app`."""

from __future__ import annotations

from aiohttp import web

from service_runtime.http_probes import Readiness, add_probe_routes

# Webhook bodies and session requests are small; anything larger is refused before it is read.
MAX_BODY_BYTES = 1024 * 1024


def create_app(readiness: Readiness) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    add_probe_routes(app, readiness)
    return app
