"""The one table mapping entitlement errors to gRPC status codes."""

from __future__ import annotations

import asyncpg
import grpc

from entitlement_service.domain.errors import Conflict, InvalidRequest, NotFound
from service_runtime.rpc import COMMON_ERRORS, ErrorTable

ERRORS = ErrorTable(
    (
        (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound, grpc.StatusCode.NOT_FOUND),
        (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
        # The database went away mid-call: the caller may retry; nothing was half-written because
        # every use case runs in one transaction.
        (asyncpg.PostgresConnectionError, grpc.StatusCode.UNAVAILABLE),
        (asyncpg.InterfaceError, grpc.StatusCode.UNAVAILABLE),
        (asyncpg.CannotConnectNowError, grpc.StatusCode.UNAVAILABLE),
        (asyncpg.TooManyConnectionsError, grpc.StatusCode.RESOURCE_EXHAUSTED),
        *COMMON_ERRORS,
    )
)
