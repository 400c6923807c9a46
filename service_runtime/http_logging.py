"""One log line per HTTP request, with the caller's `x-request-id` bound for everything the
request does (and passed on to the entitlement service)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from service_runtime.logs import new_request_id

log = structlog.get_logger("http")

# Paths probed constantly by orchestrators; logging each would drown the useful lines.
QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


@web.middleware
async def request_log(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    request_id = request.headers.get("x-request-id") or new_request_id()
    started = time.perf_counter()
    status = 500
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
            status = response.status
            response.headers["x-request-id"] = request_id
            return response
        finally:
            if request.path not in QUIET:
                ids = {k: v for k, v in request.query.items() if k in ("purchase_id", "account_id", "session_id")}
                ids.update({k: v for k, v in request.match_info.items() if k.endswith("_id")})
                log.info("http", method=request.method, path=request.path, status=status,
                         duration_ms=round((time.perf_counter() - started) * 1000, 3), **ids)
