"""The gRPC call pipeline both servers share: auth by role, error table, one log line per call."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import structlog
from google.protobuf.descriptor import ServiceDescriptor

from service_runtime.auth import AuthError, Role, ServiceTokens, authorize
from service_runtime.logs import CALL_LINES, new_request_id
from service_runtime.metrics import RPC_METRICS, MethodCalls

# Request fields worth a place on the call's log line.
LOGGED_FIELDS = ("account_id", "purchase_id", "checkout_session_id", "subscription_id", "gate")

log = structlog.get_logger("rpc")

# A status code's name, looked up here: an enum member's `.name` is a Python-level property.
CODE_NAMES = {code: code.name for code in grpc.StatusCode}


class CallContext(Protocol):
    """What the pipeline uses of grpc.aio.ServicerContext."""

    def invocation_metadata(self) -> Sequence[tuple[str, str]] | None: ...

    async def abort(self, code: grpc.StatusCode, details: str) -> None: ...

    def code(self) -> grpc.StatusCode | None: ...

    def details(self) -> str | None: ...

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None: ...


@dataclass(frozen=True)
class ErrorTable:
    """Maps exception types to gRPC status codes; the first matching row wins."""

    rows: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], grpc.StatusCode], ...]

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


@dataclass(frozen=True)
class _Method:
    """What the pipeline needs of one RPC, resolved when the server is built rather than per call."""

    name: str
    allowed: frozenset[Role]
    # The LOGGED_FIELDS its request message has: asking a message for a field it lacks costs an exception.
    logged: tuple[str, ...]
    calls: MethodCalls


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
            fields = method.input_type.fields_by_name
            resolved = _Method(name, self._roles.get(name, frozenset()), tuple(f for f in LOGGED_FIELDS if f in fields),
                               RPC_METRICS.method(name))
            inner = getattr(servicer, method.name)
            behavior = self._stream(resolved, inner) if method.server_streaming else self._unary(resolved, inner)
            setattr(wrapped, method.name, behavior)
        return wrapped

    def _unary(self, method: _Method, inner: Callable[[Any, Any], Awaitable[Any]]
               ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def behavior(request: Any, context: CallContext) -> Any:
            started = time.perf_counter()
            request_id, refused = self._admit(method, request, context, started)
            if refused is not None:
                await context.abort(*refused)
            try:
                response = await inner(request, context)
            except BaseException as exc:
                await self._failed(method, request, request_id, context, started, exc)
                raise
            _finish(method, request, request_id, started, grpc.StatusCode.OK, "")
            return response

        return behavior

    def _stream(self, method: _Method, inner: Callable[[Any, Any], AsyncIterator[Any]]
                ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def behavior(request: Any, context: CallContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            request_id, refused = self._admit(method, request, context, started)
            if refused is not None:
                await context.abort(*refused)
            try:
                async for response in inner(request, context):
                    yield response
            except BaseException as exc:
                await self._failed(method, request, request_id, context, started, exc)
                raise
            _finish(method, request, request_id, started, grpc.StatusCode.OK, "")

        return behavior

    def _admit(self, method: _Method, request: Any, context: CallContext,
               started: float) -> tuple[str, tuple[grpc.StatusCode, str] | None]:
        """The call's request id, bound for every line logged while it runs; and on a refusal, which
        it logs, the status to abort with."""
        authorization = given = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value
            elif key == "x-request-id":
                given = value
        request_id = given if isinstance(given, str) and given else new_request_id()
        # Each call runs in its own task, so what is bound here stays with this call.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            authorize(self._tokens, authorization if isinstance(authorization, str) else None, method.allowed)
        except AuthError as exc:
            code = grpc.StatusCode.UNAUTHENTICATED if exc.unauthenticated else grpc.StatusCode.PERMISSION_DENIED
            _finish(method, request, request_id, started, code, str(exc))
            return request_id, (code, str(exc))
        return request_id, None

    async def _failed(self, method: _Method, request: Any, request_id: str, context: CallContext,
                      started: float, exc: BaseException) -> None:
        """Logs a call that raised; aborts with the mapped status unless it was cancelled or aborted."""
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            _finish(method, request, request_id, started, grpc.StatusCode.CANCELLED, "cancelled by the caller")
            return
        if isinstance(exc, grpc.aio.AbortError):
            _finish(method, request, request_id, started, context.code() or grpc.StatusCode.UNKNOWN,
                    context.details() or "")
            return
        code = self._errors.status_for(exc)
        message = str(exc) if code is not None else "internal error"
        if code is None:
            code = grpc.StatusCode.INTERNAL
            log.error("rpc_failed", method=method.name, exc_info=exc)
        _finish(method, request, request_id, started, code, message)
        trailing = getattr(exc, "grpc_trailing_metadata", None)
        if callable(trailing):
            context.set_trailing_metadata(trailing())
        await context.abort(code, message)


def _finish(method: _Method, request: Any, request_id: str, started: float, code: grpc.StatusCode,
            message: str) -> None:
    seconds = time.perf_counter() - started
    code_name = CODE_NAMES[code]
    method.calls.record(code_name, seconds)
    fields = {"method": method.name, "code": code_name, "duration_ms": round(seconds * 1000, 3)}
    for name in method.logged:
        if value := getattr(request, name):
            fields[name] = value
    if message:
        fields["error"] = message
    CALL_LINES.write(log, request_id, fields)
