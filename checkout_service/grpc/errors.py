"""The one table mapping checkout errors to gRPC status codes."""

from __future__ import annotations

from service_runtime.rpc import COMMON_ERRORS, ErrorTable

ERRORS = ErrorTable(COMMON_ERRORS)
