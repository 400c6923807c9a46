"""The gRPC call pipeline both servers share: auth by role, error table, one log line per call."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from service_runtime.auth import AuthError, Role, ServiceTokens, authorize
from service_runtime.metrics import RPC_HANDLED, RPC_SECONDS

# Health checking and reflection stay open so probes and grpcurl work without a token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1")
# Request fields worth a place on the call's log line.
LOGGED_FIELDS = ("account_id", "purchase_id", "checkout_session_id", "subscription_id", "gate")

log = structlog.get_logger("rpc")


@functools.cache
def handled(method: str, code: str) -> Any:
    """The labelled counter child, resolved once per method and code rather than per call."""
    return RPC_HANDLED.labels(method, code)


@functools.cache
def timed(method: str) -> Any:
    return RPC_SECONDS.labels(method)


@dataclass(frozen=True)
class ErrorTable:
    """Maps exception types to gRPC status codes; the first matching row wins."""

    rows: tuple[tuple[type[BaseException], grpc.StatusCode], ...]

    def status_for(self, exc: BaseException) -> grpc.StatusCode | None:
        for kind, code in self.rows:
            if isinstance(exc, kind):
                return code
        return None


# Rows every service shares; a service puts its own domain rows in front.
COMMON_ERRORS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ConnectionError, grpc.StatusCode.UNAVAILABLE),
)


class RpcInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authorizes each call by role, maps exceptions through one table and logs one line."""

    def __init__(
        self,
        tokens: ServiceTokens,
        roles_by_method: Mapping[str, frozenset[Role]],
        errors: ErrorTable,
    ) -> None:
        self._tokens = tokens
        self._roles = roles_by_method
        self._errors = errors

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        call = _Call(self, details)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                call.wrap_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                call.wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class _Call:
    def __init__(self, owner: RpcInterceptor, details: grpc.HandlerCallDetails) -> None:
        self.owner = owner
        self.method: str = details.method
        self.metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}

    def wrap_unary(self, inner: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._guard(request, context):
                return await inner(request, context)
            return None  # unreachable: the guard aborts on error

        return behavior

    def wrap_stream(self, inner: Callable[[Any, Any], AsyncIterator[Any]]) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._guard(request, context):
                async for response in inner(request, context):
                    yield response

        return behavior

    def _guard(self, request: Any, context: grpc.aio.ServicerContext) -> _Guard:
        return _Guard(self, request, context)


class _Guard:
    """Per-call scope: authorize on entry; on exit map any error, record metrics, log once."""

    def __init__(self, call: _Call, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.call, self.request, self.context = call, request, context
        self.started = time.perf_counter()
        self.request_id = call.metadata.get("x-request-id") or uuid.uuid4().hex

    async def __aenter__(self) -> None:
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        owner = self.call.owner
        allowed = owner._roles.get(self.call.method, frozenset())
        try:
            authorize(owner._tokens, self.call.metadata.get("authorization"), allowed)
        except AuthError as exc:
            code = grpc.StatusCode.UNAUTHENTICATED if exc.unauthenticated else grpc.StatusCode.PERMISSION_DENIED
            self._finish(code, str(exc))
            await self.context.abort(code, str(exc))

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> bool:
        if exc is None:
            self._finish(grpc.StatusCode.OK, "")
            return False
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            self._finish(grpc.StatusCode.CANCELLED, "cancelled by the caller")
            return False
        if isinstance(exc, grpc.aio.AbortError):
            self._finish(self.context.code() or grpc.StatusCode.UNKNOWN, self.context.details() or "")
            return False
        code = self.call.owner._errors.status_for(exc)
        message = str(exc) if code is not None else "internal error"
        if code is None:
            code = grpc.StatusCode.INTERNAL
            log.error("rpc_failed", method=self.call.method, exc_info=exc)
        self._finish(code, message)
        trailing = getattr(exc, "grpc_trailing_metadata", None)
        if callable(trailing):
            self.context.set_trailing_metadata(trailing())
        await self.context.abort(code, message)
        return False

    def _finish(self, code: grpc.StatusCode, message: str) -> None:
        seconds = time.perf_counter() - self.started
        handled(self.call.method, code.name).inc()
        timed(self.call.method).observe(seconds)
        ids = {f: v for f in LOGGED_FIELDS if (v := getattr(self.request, f, ""))}
        log.info("rpc", method=self.call.method, code=code.name, duration_ms=round(seconds * 1000, 3),
                 **({"error": message} if message else {}), **ids)
        structlog.contextvars.unbind_contextvars("request_id")
