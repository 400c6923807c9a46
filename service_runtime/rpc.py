"""The gRPC call pipeline both servers share: auth by role, error table, one log line per call, and
the call's server span when it is traced."""

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
from google.protobuf.message import DecodeError
from opentelemetry.trace import Span

from service_runtime.auth import AuthError, Role, ServiceTokens, authorize
from service_runtime.logs import CALL_LINES, request_id_or_new
from service_runtime.metrics import RPC_METRICS, MethodCalls
from service_runtime.tracing import NO_TRACING, REQUEST_ID, Tracing, activate, finish, trace_id_of

# Request fields worth a place on the call's log line.
LOGGED_FIELDS = ("account_id", "purchase_id", "checkout_session_id", "subscription_id", "gate")

log = structlog.get_logger("rpc")

# A status code's name, looked up here: an enum member's `.name` is a Python-level property.
CODE_NAMES = {code: code.name for code in grpc.StatusCode}
CODE_NUMBERS = {code: code.value[0] for code in grpc.StatusCode}
# The codes that mark a server span failed: the server's own failures, not the caller's mistakes
# (OpenTelemetry's semantic conventions for gRPC).
SERVER_ERRORS = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
                           grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})


class Undecodable:
    """Stands for a request message that did not decode, so the pipeline can refuse it by name."""


UNDECODABLE = Undecodable()


def decoding_or_undecodable(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return UNDECODABLE

    return decode


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
    # Its server span's name (`package.Service/Method`) and the attributes every call of it has.
    span_name: str
    span_attributes: Mapping[str, str]
    input_type: str  # the request message's full name


class RpcPipeline:
    """Authorizes each call by role, maps exceptions through one table and logs one line; serves a
    traced call (a caller's `traceparent`, or any call when spans are recorded) in its server span.

    It wraps a servicer's methods once, when the server is built, rather than intercepting every
    call: grpc.aio's interceptor machinery costs more per call than the work it wraps on a hot
    path such as CheckGate (so does OpenTelemetry's gRPC instrumentation, an interceptor). Health
    checking and reflection are registered unwrapped: open, and untraced."""

    def __init__(
        self,
        tokens: ServiceTokens,
        roles_by_method: Mapping[str, frozenset[Role]],
        errors: ErrorTable,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._tokens = tokens
        self._roles = roles_by_method
        self._errors = errors
        self._tracing = tracing

    def wrap(self, servicer: object, service: ServiceDescriptor) -> object:
        """A stand-in for `servicer` whose RPC methods run through the pipeline."""
        wrapped = types.SimpleNamespace()
        for method in service.methods:
            name = f"/{service.full_name}/{method.name}"
            fields = method.input_type.fields_by_name
            resolved = _Method(name, self._roles.get(name, frozenset()), tuple(f for f in LOGGED_FIELDS if f in fields),
                               RPC_METRICS.method(name), name[1:],
                               {"rpc.system": "grpc", "rpc.service": service.full_name, "rpc.method": method.name},
                               method.input_type.full_name)
            inner = getattr(servicer, method.name)
            behavior = self._stream(resolved, inner) if method.server_streaming else self._unary(resolved, inner)
            setattr(wrapped, method.name, behavior)
        return wrapped

    def _unary(self, method: _Method, inner: Callable[[Any, Any], Awaitable[Any]]
               ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def behavior(request: Any, context: CallContext) -> Any:
            started = time.perf_counter()
            request_id, span, refused = self._admit(method, request, context, started)
            if refused is not None:
                await context.abort(*refused)
            try:
                response = await inner(request, context)
            except BaseException as exc:
                await self._failed(method, request, request_id, span, context, started, exc)
                raise
            _finish(method, request, request_id, span, started, grpc.StatusCode.OK, "")
            return response

        return behavior

    def _stream(self, method: _Method, inner: Callable[[Any, Any], AsyncIterator[Any]]
                ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def behavior(request: Any, context: CallContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            request_id, span, refused = self._admit(method, request, context, started)
            if refused is not None:
                await context.abort(*refused)
            try:
                async for response in inner(request, context):
                    yield response
            except BaseException as exc:
                await self._failed(method, request, request_id, span, context, started, exc)
                raise
            _finish(method, request, request_id, span, started, grpc.StatusCode.OK, "")

        return behavior

    def _admit(self, method: _Method, request: Any, context: CallContext,
               started: float) -> tuple[str, Span | None, tuple[grpc.StatusCode, str] | None]:
        """The call's request id, bound for every line logged while it runs (with the trace id when
        the call is recorded); its span, made the current one, when it is traced; and on a refusal,
        which it logs, the status to abort with."""
        authorization = given = traceparent = tracestate = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value
            elif key == "x-request-id":
                given = value
            elif key == "traceparent":
                traceparent = value
            elif key == "tracestate":
                tracestate = value
        request_id = request_id_or_new(given)
        span = None
        if traceparent is not None or self._tracing.recording:  # else nothing to record or pass on
            span = self._tracing.server_span(method.span_name, method.span_attributes,
                                             traceparent if isinstance(traceparent, str) else None,
                                             tracestate if isinstance(tracestate, str) else None)
        # Each call runs in its own task, so what is bound and made current here stays with this call.
        if span is None:
            structlog.contextvars.bind_contextvars(request_id=request_id)
        else:
            activate(span)
            if (trace_id := trace_id_of(span)) is not None:
                span.set_attribute(REQUEST_ID, request_id)
                structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id)
            else:
                structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            authorize(self._tokens, authorization if isinstance(authorization, str) else None, method.allowed)
        except AuthError as exc:
            code = grpc.StatusCode.UNAUTHENTICATED if exc.unauthenticated else grpc.StatusCode.PERMISSION_DENIED
            _finish(method, request, request_id, span, started, code, str(exc))
            return request_id, span, (code, str(exc))
        if request is UNDECODABLE:
            message = f"the request is not a {method.input_type} message"
            _finish(method, request, request_id, span, started, grpc.StatusCode.INVALID_ARGUMENT, message)
            return request_id, span, (grpc.StatusCode.INVALID_ARGUMENT, message)
        return request_id, span, None

    async def _failed(self, method: _Method, request: Any, request_id: str, span: Span | None,
                      context: CallContext, started: float, exc: BaseException) -> None:
        """Logs a call that raised; aborts with the mapped status unless it was cancelled or aborted."""
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            _finish(method, request, request_id, span, started, grpc.StatusCode.CANCELLED, "cancelled by the caller")
            return
        if isinstance(exc, grpc.aio.AbortError):
            _finish(method, request, request_id, span, started, context.code() or grpc.StatusCode.UNKNOWN,
                    context.details() or "")
            return
        code = self._errors.status_for(exc)
        message = str(exc) if code is not None else "internal error"
        if code is None:
            code = grpc.StatusCode.INTERNAL
            log.error("rpc_failed", method=method.name, exc_info=exc)
        _finish(method, request, request_id, span, started, code, message)
        trailing = getattr(exc, "grpc_trailing_metadata", None)
        if callable(trailing):
            context.set_trailing_metadata(trailing())
        await context.abort(code, message)


def _finish(method: _Method, request: Any, request_id: str, span: Span | None, started: float,
            code: grpc.StatusCode, message: str) -> None:
    seconds = time.perf_counter() - started
    code_name = CODE_NAMES[code]
    method.calls.record(code_name, seconds)
    fields = {"method": method.name, "code": code_name, "duration_ms": round(seconds * 1000, 3)}
    for name in method.logged if request is not UNDECODABLE else ():
        if value := getattr(request, name):
            fields[name] = value
    if message:
        fields["error"] = message
    if span is not None:
        if (trace_id := trace_id_of(span)) is not None:
            fields["trace_id"] = trace_id
        finish(span, {"rpc.grpc.status_code": CODE_NUMBERS[code]}, message if code in SERVER_ERRORS else None)
    CALL_LINES.write(log, request_id, fields)
