"""What every call of the checkout service's channel carries to the entitlement service, against a
stand-in server on a real socket that keeps each call's metadata: the service's bearer token, the
caller's request id, the caller's own metadata; and, while the caller's span is recorded, a
client span of its own, named as the parent in `traceparent` and ended with the call's status."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id

from checkout_service.entitlement_client import open_channel
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.tracing import NO_TRACING, Tracing, TracingSettings, activate, deactivate, setup_tracing
from tests.support.waiting import eventually

TOKEN = "checkout-token-for-tests"


class Recording(entitlement_pb2_grpc.EntitlementServiceServicer):
    """Answers GetAccount, or NOT_FOUND for `acct_missing`, keeping each call's metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def GetAccount(self, request: pb.GetAccountRequest, context: grpc.aio.ServicerContext
                         ) -> pb.GetAccountResponse:
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        if request.account_id == "acct_missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no account acct_missing")
        return pb.GetAccountResponse(account_id=request.account_id)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Recording, int]]:
    servicer = Recording()
    server = grpc.aio.server()
    entitlement_pb2_grpc.add_EntitlementServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(0)


async def stub(port: int, tracing: Tracing = NO_TRACING) -> entitlement_pb2_grpc.EntitlementServiceStub:
    return entitlement_pb2_grpc.EntitlementServiceStub(open_channel(f"127.0.0.1:{port}", TOKEN, tracing))


async def test_every_call_carries_the_token_the_callers_request_id_and_its_own_metadata(
        server: tuple[Recording, int]) -> None:
    recording, port = server
    entitlement = await stub(port)
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        await entitlement.GetAccount(pb.GetAccountRequest(account_id="acct_1"), metadata=(("x-extra", "kept"),))
    await entitlement.GetAccount(pb.GetAccountRequest(account_id="acct_1"))  # outside any request
    served, background = recording.metadata
    assert (served["authorization"], served["x-request-id"], served["x-extra"]) == (f"Bearer {TOKEN}", "req-1",
                                                                                      "kept")
    assert background["authorization"] == f"Bearer {TOKEN}" and "x-request-id" not in background
    assert "traceparent" not in background  # no span, nothing to continue


async def test_a_recorded_callers_call_has_a_client_span_named_as_the_parent_and_ended_with_its_status(
        server: tuple[Recording, int]) -> None:
    recording, port = server
    exporter = InMemorySpanExporter()
    tracing = setup_tracing(TracingSettings("checkout-service"), exporter)
    try:
        entitlement = await stub(port, tracing)
        serving = tracing.tracer.start_span("POST /webhooks/stripe", kind=SpanKind.SERVER)
        token = activate(serving)
        try:
            await entitlement.GetAccount(pb.GetAccountRequest(account_id="acct_1"))
            with pytest.raises(grpc.aio.AioRpcError):
                await entitlement.GetAccount(pb.GetAccountRequest(account_id="acct_missing"))
        finally:
            deactivate(token)
            serving.end()

        async def clients() -> list[ReadableSpan]:
            tracing.force_flush()
            found = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
            return found if len(found) == 2 else []

        ok, failed = sorted(await eventually(clients, what="both client spans ended"), key=lambda s: s.start_time or 0)
    finally:
        tracing.shutdown()
    for span, sent in zip((ok, failed), recording.metadata, strict=True):
        assert span.name == "selfserve.entitlement.v1.EntitlementService/GetAccount"
        assert span.parent is not None and span.parent.span_id == serving.get_span_context().span_id
        assert sent["traceparent"].split("-")[2] == format_span_id(span.get_span_context().span_id)
    assert ok.attributes is not None and ok.attributes["rpc.grpc.status_code"] == 0
    assert ok.status.status_code is not StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "NOT_FOUND: no account acct_missing"
