"""The channel to the entitlement service: every call carries this service's bearer token and the
caller's request id, so one purchase can be followed across both services, and a call answered
UNAVAILABLE is tried again a bounded number of times, by gRPC itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc


class _CallMetadata(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._authorization = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        metadata.append(self._authorization)
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            metadata.append(("x-request-id", request_id))
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                          details.credentials, details.wait_for_ready)

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


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


def open_channel(target: str, token: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, interceptors=[_CallMetadata(token)],
                                     options=[("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG))])


async def is_serving(channel: grpc.aio.Channel, timeout_s: float = 1.0) -> bool:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
