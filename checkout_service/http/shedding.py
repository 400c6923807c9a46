"""Load shedding on the HTTP port: at most `max_in_flight` requests are handled at once, and one
more is answered 503 at once, with `Retry-After`, instead of queueing behind work the process
cannot finish in time (every request waiting holds its memory, its socket and, for a webhook, the
provider's patience). Probes are never shed and never counted, so a busy replica still answers its
orchestrator and its scraper."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter

from checkout_service.http.errors import error_body

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
# A shed request costs almost nothing to answer; a second later the burst that filled the server
# has usually drained. The provider retries webhooks on its own schedule whatever this says.
RETRY_AFTER_S = 1
SHED = Counter("http_requests_shed", "HTTP requests answered 503 because as many as allowed were being handled.")


def shedding(max_in_flight: int) -> Middleware:
    in_flight = 0

    @web.middleware
    async def shed(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if request.path in PROBES:
            return await handler(request)
        if in_flight >= max_in_flight:
            SHED.inc()
            return web.json_response(
                error_body("overloaded", "too many requests in progress; retry shortly"),
                status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return shed
