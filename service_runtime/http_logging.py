"""One log line per HTTP request, with the caller's `x-request-id` bound for everything the
request does (and passed on to the entitlement service); and the request's server span when it is
traced, a child of the caller's `traceparent`, current while the request is handled."""

from __future__ import annotations

import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.trace import Span

from service_runtime.logs import request_id_or_new
from service_runtime.tracing import NO_TRACING, REQUEST_ID, Tracing, activate, deactivate, finish, trace_id_of

log = structlog.get_logger("http")

# Paths probed constantly by orchestrators; logging or tracing each would drown the useful lines.
QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


def request_log(tracing: Tracing = NO_TRACING) -> Middleware:
    """The middleware, tracing through `tracing`. One connection serves its requests one after the
    other in one task, so what a request binds or makes current is undone when it ends."""

    @web.middleware
    async def log_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request_id_or_new(request.headers.get("x-request-id"))
        started = time.perf_counter()
        status = 500
        quiet = request.path in QUIET
        span = None if quiet else _server_span(tracing, request)
        token = None if span is None else activate(span)
        bound = {"request_id": request_id}
        if span is not None and (trace_id := trace_id_of(span)) is not None:
            span.set_attribute(REQUEST_ID, request_id)
            bound["trace_id"] = trace_id
        with structlog.contextvars.bound_contextvars(**bound):
            try:
                response = await handler(request)
                status = response.status
                response.headers["x-request-id"] = request_id
                return response
            finally:
                if span is not None and token is not None:
                    deactivate(token)
                    finish(span, {"http.response.status_code": status}, f"HTTP {status}" if status >= 500 else None)
                if not quiet:
                    ids = {k: v for k, v in request.query.items() if k in ("purchase_id", "account_id", "session_id")}
                    ids.update({k: v for k, v in request.match_info.items() if k.endswith("_id")})
                    log.info("http", method=request.method, path=request.path, status=status,
                             duration_ms=round((time.perf_counter() - started) * 1000, 3), **ids)

    return log_request


def _server_span(tracing: Tracing, request: web.Request) -> Span | None:
    """Named by the route the request matched as written (`POST /v1/purchases/{purchase_id}`), so
    spans group by route rather than by id; by its method alone when it matched none."""
    traceparent = request.headers.get("traceparent")
    if traceparent is None and not tracing.recording:
        return None  # nothing to record or pass on
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else None
    attributes = {"http.request.method": request.method, "url.path": request.path}
    if route is not None:
        attributes["http.route"] = route
    return tracing.server_span(f"{request.method} {route}" if route else request.method, attributes,
                               traceparent, request.headers.get("tracestate"))
