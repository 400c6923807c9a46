"""The one table mapping entitlement errors to gRPC status codes."""

from __future__ import annotations

import grpc

from entitlement_service.db.pool import CONFLICTED, CONNECTION_LOST, POOL_EXHAUSTED, UNSTORABLE_TEXT
from entitlement_service.domain.errors import Conflict, InvalidRequest, NotFound
from service_runtime.rpc import COMMON_ERRORS, ErrorTable

ERRORS = ErrorTable(
    (
        (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound, grpc.StatusCode.NOT_FOUND),
        (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
        (UNSTORABLE_TEXT, grpc.StatusCode.INVALID_ARGUMENT),
        # The database went away mid-call: the caller may retry (db/pool.py says why it is safe).
        (CONNECTION_LOST, grpc.StatusCode.UNAVAILABLE),
        # The transaction lost to a concurrent one and was rolled back whole: retry.
        (CONFLICTED, grpc.StatusCode.ABORTED),
        (POOL_EXHAUSTED, grpc.StatusCode.RESOURCE_EXHAUSTED),
        *COMMON_ERRORS,
    )
)
