"""The gRPC call pipeline both servers share: auth by role, error table, one log line per call."""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf.descriptor import ServiceDescriptor

from service_runtime.auth import AuthError, Role, ServiceTokens, authorize
from service_runtime.metrics import RPC_HANDLED, RPC_SECONDS

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


class RpcPipeline:
    """Authorizes each call by role, maps exceptions through one table and logs one line.

    It wraps a servicer's methods once, when the server is built, rather than intercepting every
    call: grpc.aio's interceptor machinery costs more per call than the work it wraps on a hot
    path such as CheckGate. Health checking and reflection are registered unwrapped: open."""

    def __init__(
        self,
        tokens: ServiceTokens,
        roles_by_method: Mapping[str, frozenset[Role]],
        errors: ErrorTable,
    ) -> None:
        self._tokens = tokens
        self._roles = roles_by_method
        self._errors = errors

    def wrap(self, servicer: object, service: ServiceDescriptor) -> object:
        """A stand-in for `servicer` whose RPC methods run through the pipeline."""
        wrapped = types.SimpleNamespace()
        for method in service.methods:
            name = f"/{service.full_name}/{method.name}"
            inner = getattr(servicer, method.name)
            behavior = self._stream(name, inner) if method.server_streaming else self._unary(name, inner)
            setattr(wrapped, method.name, behavior)
        return wrapped

    def _unary(self, method: str, inner: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _Guard(self, method, request, context):
                return await inner(request, context)
            return None  # unreachable: the guard aborts on error

        return behavior

    def _stream(self, method: str, inner: Callable[[Any, Any], AsyncIterator[Any]]
                ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with _Guard(self, method, request, context):
                async for response in inner(request, context):
                    yield response

        return behavior


class _Guard:
    """Per-call scope: authorize on entry; on exit map any error, record metrics, log once."""

    def __init__(self, pipeline: RpcPipeline, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.pipeline, self.method, self.request, self.context = pipeline, method, request, context
        self.started = time.perf_counter()
        authorization = request_id = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value
            elif key == "x-request-id":
                request_id = value
        self.authorization = authorization if isinstance(authorization, str) else None
        self.request_id = request_id if isinstance(request_id, str) and request_id else secrets.token_hex(8)

    async def __aenter__(self) -> None:
        # Each call runs in its own task, so what is bound here stays with this call.
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        allowed = self.pipeline._roles.get(self.method, frozenset())
        try:
            authorize(self.pipeline._tokens, self.authorization, allowed)
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
        code = self.pipeline._errors.status_for(exc)
        message = str(exc) if code is not None else "internal error"
        if code is None:
            code = grpc.StatusCode.INTERNAL
            log.error("rpc_failed", method=self.method, exc_info=exc)
        self._finish(code, message)
        trailing = getattr(exc, "grpc_trailing_metadata", None)
        if callable(trailing):
            self.context.set_trailing_metadata(trailing())
        await self.context.abort(code, message)
        return False

    def _finish(self, code: grpc.StatusCode, message: str) -> None:
        seconds = time.perf_counter() - self.started
        handled(self.method, code.name).inc()
        timed(self.method).observe(seconds)
        ids = {f: v for f in LOGGED_FIELDS if (v := getattr(self.request, f, ""))}
        log.info("rpc", method=self.method, code=code.name, duration_ms=round(seconds * 1000, 3),
                 **({"error": message} if message else {}), **ids)
