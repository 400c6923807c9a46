"""The one table mapping checkout errors to HTTP statuses, and the JSON error body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from checkout_service.errors import (
    Aborted,
    AlreadyExists,
    AlreadyRunning,
    BadWebhook,
    CheckoutError,
    CheckoutInProgress,
    FailedPrecondition,
    GroupConflict,
    InvalidRequest,
    InvalidSelection,
    NotFound,
    PermissionDenied,
    RateLimited,
    RetryLater,
    Unauthenticated,
    Unavailable,
)

log = structlog.get_logger("http")

# docs/contract.md#error-contract; tests/unit/test_error_contract.py holds this table to it. A
# RetryLater answer (429, 503) carries `Retry-After`.
STATUS: tuple[tuple[type[CheckoutError], int], ...] = (
    (GroupConflict, 409),
    (CheckoutInProgress, 409),
    (FailedPrecondition, 409),
    (AlreadyRunning, 409),
    (AlreadyExists, 409),
    (InvalidSelection, 422),
    (InvalidRequest, 422),
    (NotFound, 404),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (BadWebhook, 400),
    (RateLimited, 429),
    (Aborted, 503),
    (Unavailable, 503),
)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _details(exc: CheckoutError) -> dict[str, Any]:
    if isinstance(exc, GroupConflict):
        return {"portal_url": exc.portal_url, "subscription_ids": exc.subscription_ids}
    if isinstance(exc, CheckoutInProgress):
        return {"open_purchase_id": exc.open_purchase_id}
    if isinstance(exc, InvalidSelection):
        return {"problems": exc.problems}
    return {}


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """Every failure becomes `{"error": {"code", "message"}}` with its status; never a traceback."""
    try:
        return await handler(request)
    except CheckoutError as exc:
        status = next((s for kind, s in STATUS if isinstance(exc, kind)), 500)
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RetryLater) else None
        return web.json_response(error_body(exc.code, exc.message, **_details(exc)), status=status, headers=headers)
    except web.HTTPRequestEntityTooLarge:
        return web.json_response(error_body("payload_too_large", "the body is larger than 1 MiB"), status=413)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return web.json_response(error_body(code, exc.reason), status=exc.status)
    except Exception:
        log.exception("request_failed", path=request.path)
        return web.json_response(error_body("internal", "internal error"), status=500)
