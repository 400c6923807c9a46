"""The one table mapping checkout errors to gRPC status codes (docs/contract.md#error-contract;
tests/unit/test_error_contract.py holds it to that table), and the rich status a selection refusal
carries: its problems as standard `google.rpc` error details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from checkout_service.errors import (
    Aborted,
    AlreadyExists,
    AlreadyRunning,
    BadWebhook,
    CheckoutInProgress,
    FailedPrecondition,
    GroupConflict,
    InvalidRequest,
    InvalidSelection,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from service_runtime.rpc import COMMON_ERRORS, ErrorTable

ERRORS = ErrorTable(
    (
        (GroupConflict, grpc.StatusCode.FAILED_PRECONDITION),
        (CheckoutInProgress, grpc.StatusCode.FAILED_PRECONDITION),
        (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
        (AlreadyRunning, grpc.StatusCode.FAILED_PRECONDITION),
        (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
        (InvalidSelection, grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound, grpc.StatusCode.NOT_FOUND),
        (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
        (BadWebhook, grpc.StatusCode.INVALID_ARGUMENT),
        (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Aborted, grpc.StatusCode.ABORTED),
        (Unavailable, grpc.StatusCode.UNAVAILABLE),
        *COMMON_ERRORS,
    )
)

DOMAIN = "selfserve.checkout.v1"
# The trailing metadata key gRPC's rich status travels in (grpc_status.rpc_status reads it).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def selection_refusal(exc: InvalidSelection) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """What to abort the call with: the table's code, the message, and the rich status."""
    code = ERRORS.status_for(exc) or grpc.StatusCode.INVALID_ARGUMENT
    return code, exc.message, ((STATUS_DETAILS_KEY, selection_status(exc).SerializeToString()),)


def selection_status(exc: InvalidSelection) -> status_pb2.Status:
    """The refusal as a `google.rpc.Status`: an ErrorInfo naming it, and a BadRequest with one field
    violation per problem, in order, as the HTTP answer's `problems` list has them."""
    code = ERRORS.status_for(exc) or grpc.StatusCode.INVALID_ARGUMENT
    info = error_details_pb2.ErrorInfo(reason=exc.code.upper(), domain=DOMAIN)
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(
            field=f"items[{p['item_index']}].price" if _index(p) >= 0 else "items",
            reason=str(p["code"]).upper(), description=str(p["message"]))
        for p in exc.problems])
    details = []
    for detail in (info, bad):
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def _index(problem: dict[str, object]) -> int:
    index = problem.get("item_index")
    return index if isinstance(index, int) else -1
