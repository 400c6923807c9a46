"""The one table mapping checkout errors to gRPC status codes."""

from __future__ import annotations

import grpc

from checkout_service.errors import (
    AlreadyRunning,
    BadWebhook,
    GroupConflict,
    InvalidRequest,
    InvalidSelection,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from service_runtime.rpc import COMMON_ERRORS, ErrorTable

ERRORS = ErrorTable(
    (
        (GroupConflict, grpc.StatusCode.FAILED_PRECONDITION),
        (AlreadyRunning, grpc.StatusCode.FAILED_PRECONDITION),
        (InvalidSelection, grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound, grpc.StatusCode.NOT_FOUND),
        (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
        (BadWebhook, grpc.StatusCode.INVALID_ARGUMENT),
        (Unavailable, grpc.StatusCode.UNAVAILABLE),
        *COMMON_ERRORS,
    )
)
