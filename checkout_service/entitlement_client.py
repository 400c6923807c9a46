"""The channel to the entitlement service: every call carries this service's bearer token, the
caller's request id and its trace context (W3C `traceparent`), so one purchase can be followed
across both services, and a call answered UNAVAILABLE is tried again a bounded number of times, by
gRPC itself. A call made while serving a recorded request has a client span of its own, covering
every attempt."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.trace import Span

from service_runtime.tls import ChannelTls
from service_runtime.tracing import NO_TRACING, Tracing, current_span, finish, inject


class _CallMetadata(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Runs in the task gRPC makes for each call, which starts with a copy of the caller's context:
    its request id and its current span are the caller's."""

    def __init__(self, token: str, tracing: Tracing) -> None:
        self._authorization = ("authorization", f"Bearer {token}")
        self._tracing = tracing

    def _details(self, details: grpc.aio.ClientCallDetails, parent: Span) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        metadata.append(self._authorization)
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            metadata.append(("x-request-id", request_id))
        inject(parent, metadata)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                          details.credentials, details.wait_for_ready)

    def _span(self, details: grpc.aio.ClientCallDetails) -> Span | None:
        method = _text(details.method)
        service, _, name = method.lstrip("/").partition("/")
        return self._tracing.client_span(method.lstrip("/"), {"rpc.system": "grpc", "rpc.service": service,
                                                              "rpc.method": name})

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        span = self._span(details)
        if span is None:
            return await continuation(self._details(details, current_span()), request)
        try:
            call = await continuation(self._details(details, span), request)
            code = await call.code()  # once the call has ended, retries included
        except BaseException as exc:
            finish(span, {}, f"{type(exc).__name__}: {exc}")
            raise
        finish(span, {"rpc.grpc.status_code": code.value[0]},
               None if code == grpc.StatusCode.OK else f"{code.name}: {await call.details()}")
        return call

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        span = self._span(details)
        call = await continuation(self._details(details, span or current_span()), request)
        if span is not None:
            call.add_done_callback(lambda _: finish(span, {}))
        return call


def _text(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


# Every EntitlementService call is safe to repeat (each RPC's comment in entitlement.proto says
# why): the reads change nothing, ApplyProviderEvents and ApplyReconciliation deduplicate by event
# id, RegisterPurchase is idempotent on the purchase id, LinkProviderCustomer on the pair. So a call
# answered UNAVAILABLE (the database or the server going away) is tried again, at most 3 attempts
# in all, after a random pause of up to 0.1 s, then of up to 0.2 s (exponential backoff with full
# jitter), all within the call's own deadline. Retries stop for the whole channel while calls keep
# failing: each attempt answered UNAVAILABLE spends a token, each success earns a tenth of one back,
# and at half of the 10 tokens or fewer nothing is retried, so a struggling service sees hardly more
# than the calls themselves. RESOURCE_EXHAUSTED (the server at its cap) is never retried, nor is a
# request larger than gRPC's retry buffer (256 KiB; a full batch of large events can be).
RETRY_SERVICE_CONFIG = {
    "methodConfig": [{
        "name": [{"service": "selfserve.entitlement.v1.EntitlementService"}],
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.1s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}


def open_channel(target: str, token: str, tracing: Tracing = NO_TRACING, tls: ChannelTls | None = None
                 ) -> grpc.aio.Channel:
    """Plaintext without `tls`; with it, TLS only, and mutual when `tls` holds a client certificate."""
    interceptors = [_CallMetadata(token, tracing)]
    options = [("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG))]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, tls.credentials(), options=options + tls.options(),
                                   interceptors=interceptors)


async def is_serving(channel: grpc.aio.Channel, timeout_s: float = 1.0) -> bool:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
