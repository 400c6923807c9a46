"""The call pipeline without a server: one log line per call with the request's ids, the caller's
request id on every line the call logs, refusals logged and aborted, no token in any line; a traced
call served in its span, its trace id logged beside the request id only when it is recorded."""

import asyncio
import json
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from entitlement_service.grpc.access import ROLES_BY_METHOD
from entitlement_service.grpc.errors import ERRORS
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime import rpc
from service_runtime.auth import Role
from service_runtime.logs import configure_logging, reset_logging
from service_runtime.rpc import CallContext, RpcPipeline
from service_runtime.tracing import NO_TRACING, Tracing, TracingSettings, current_span, setup_tracing
from tests.support.tokens import TOKENS, service_tokens

HANDLED, SECONDS = "grpc_server_handled_total", "grpc_server_handling_seconds"


class FakeContext(CallContext):
    """Records what the pipeline does with a call's context."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.trailing: Sequence[tuple[str, str]] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()

    def code(self) -> grpc.StatusCode | None:
        return self.aborted[0] if self.aborted else None

    def details(self) -> str | None:
        return self.aborted[1] if self.aborted else None

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.trailing = metadata


class Servicer(entitlement_pb2_grpc.EntitlementServiceServicer):
    def __init__(self) -> None:
        self.trace_ids: list[str] = []  # of the span current in each call

    async def CheckGate(self, request: pb.CheckGateRequest, context: Any) -> pb.CheckGateResponse:
        structlog.get_logger("servicer").info("checking")
        self.trace_ids.append(f"{current_span().get_span_context().trace_id:032x}")
        return pb.CheckGateResponse(allowed=True)


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Reads the JSON lines logged so far. Each test sets logging up itself: a capture set up in a
    fixture is closed before the test runs."""
    monkeypatch.setattr(rpc, "log", structlog.get_logger("rpc"))  # not one cached under another test's set-up
    yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    reset_logging()


def check_gate(tracing: Tracing = NO_TRACING, servicer: Servicer | None = None) -> Any:
    wrapped = RpcPipeline(service_tokens(), ROLES_BY_METHOD, ERRORS, tracing).wrap(
        servicer or Servicer(), pb.DESCRIPTOR.services_by_name["EntitlementService"])  # type: ignore[abstract]  # CheckGate only
    return wrapped.CheckGate  # type: ignore[attr-defined]


async def call(context: FakeContext, tracing: Tracing = NO_TRACING, servicer: Servicer | None = None) -> Any:
    request = pb.CheckGateRequest(account_id="acct_1", gate="api_access")
    # Each call in its own task, as grpc.aio does.
    return await asyncio.create_task(check_gate(tracing, servicer)(request, context))


async def test_the_callers_request_id_is_on_every_line_the_call_logs(lines: Any) -> None:
    configure_logging("test", json=True)
    metadata = (("authorization", f"Bearer {TOKENS[Role.PRODUCT]}"), ("x-request-id", "req-42"))
    started = time.perf_counter()
    assert (await call(FakeContext(metadata))).allowed
    elapsed_ms = (time.perf_counter() - started) * 1000
    inner, line = lines()
    assert inner["event"] == "checking" and inner["request_id"] == "req-42"
    assert line["event"] == "rpc" and line["request_id"] == "req-42" and line["code"] == "OK"
    assert line["method"] == "/selfserve.entitlement.v1.EntitlementService/CheckGate"
    assert (line["account_id"], line["gate"], line["service"]) == ("acct_1", "api_access", "test")
    assert "purchase_id" not in line and "error" not in line
    assert 0 < line["duration_ms"] <= elapsed_ms  # the call's own time, in milliseconds


async def test_a_call_without_a_request_id_gets_a_fresh_one_for_all_its_lines(lines: Any) -> None:
    configure_logging("test", json=True)
    metadata = (("authorization", f"Bearer {TOKENS[Role.PRODUCT]}"),)
    await call(FakeContext(metadata))
    await call(FakeContext(metadata))
    ids = [line["request_id"] for line in lines()]
    assert ids[0] == ids[1] != ids[2] == ids[3]
    assert all(re.fullmatch("[0-9a-f]{16}", i) for i in ids)


@pytest.mark.parametrize(("role", "code"), [(None, grpc.StatusCode.UNAUTHENTICATED),
                                            (Role.SUPPORT, grpc.StatusCode.PERMISSION_DENIED)])
async def test_a_refused_call_is_logged_and_aborted_without_its_token(lines: Any, role: Role | None,
                                                                      code: grpc.StatusCode) -> None:
    configure_logging("test", json=True)
    token = TOKENS[role] if role else "not-a-known-token-at-all"
    context = FakeContext((("authorization", f"Bearer {token}"),))
    with pytest.raises(grpc.aio.AbortError):
        await call(context)
    assert context.aborted is not None and context.aborted[0] == code
    [line] = lines()
    assert line["code"] == code.name and line["error"] == context.aborted[1]
    assert token not in json.dumps(line)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_call_is_counted_by_code_and_timed(lines: Any) -> None:
    configure_logging("test", json=True)
    method = "/selfserve.entitlement.v1.EntitlementService/CheckGate"
    ok, refused = _sample(HANDLED, grpc_method=method, grpc_code="OK"), _sample(
        HANDLED, grpc_method=method, grpc_code="UNAUTHENTICATED")
    timed, fast = _sample(SECONDS + "_count", grpc_method=method), _sample(
        SECONDS + "_bucket", grpc_method=method, le="0.5")
    await call(FakeContext((("authorization", f"Bearer {TOKENS[Role.PRODUCT]}"),)))
    await call(FakeContext((("authorization", f"Bearer {TOKENS[Role.PRODUCT]}"),)))
    with pytest.raises(grpc.aio.AbortError):
        await call(FakeContext(()))
    assert _sample(HANDLED, grpc_method=method, grpc_code="OK") == ok + 2
    assert _sample(HANDLED, grpc_method=method, grpc_code="UNAUTHENTICATED") == refused + 1
    assert _sample(SECONDS + "_count", grpc_method=method) == timed + 3
    assert _sample(SECONDS + "_bucket", grpc_method=method, le="0.5") == fast + 3
    assert _sample(SECONDS + "_bucket", grpc_method=method, le="+Inf") == timed + 3
    assert _sample(SECONDS + "_sum", grpc_method=method) > 0


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACED = (("authorization", f"Bearer {TOKENS[Role.PRODUCT]}"), ("x-request-id", "req-7"),
          ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"))


async def test_a_recorded_call_is_served_in_its_span_with_the_trace_id_beside_the_request_id(lines: Any) -> None:
    configure_logging("test", json=True)
    exporter, servicer = InMemorySpanExporter(), Servicer()  # type: ignore[abstract]  # CheckGate only
    tracing = setup_tracing(TracingSettings("test"), exporter)
    try:
        await call(FakeContext(TRACED), tracing, servicer)
        with pytest.raises(grpc.aio.AbortError):
            await call(FakeContext(TRACED[1:]), tracing, servicer)  # refused: no token
        tracing.force_flush()
    finally:
        tracing.shutdown()
    inner, line, refused = lines()
    assert inner["trace_id"] == line["trace_id"] == refused["trace_id"] == servicer.trace_ids[0] == TRACE_ID
    assert inner["request_id"] == line["request_id"] == "req-7"
    served, denied = exporter.get_finished_spans()
    assert served.name == "selfserve.entitlement.v1.EntitlementService/CheckGate" and served.kind is SpanKind.SERVER
    assert served.parent is not None and served.parent.span_id == 0x00f067aa0ba902b7
    assert dict(served.attributes or {}) == {
        "rpc.system": "grpc", "rpc.service": "selfserve.entitlement.v1.EntitlementService", "rpc.method": "CheckGate",
        "request.id": "req-7", "rpc.grpc.status_code": 0}
    assert (denied.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]


async def test_without_an_exporter_the_callers_trace_is_current_and_no_trace_id_is_logged(lines: Any) -> None:
    configure_logging("test", json=True)
    servicer = Servicer()  # type: ignore[abstract]  # CheckGate only
    await call(FakeContext(TRACED), NO_TRACING, servicer)
    await call(FakeContext(TRACED[:2]), NO_TRACING, servicer)
    assert servicer.trace_ids == [TRACE_ID, "0" * 32]  # passed on to what the call calls; nothing without one
    assert not any("trace_id" in line for line in lines())


@pytest.mark.parametrize("given", ["é", "x" * 129, "a b", "", "req\n42", "req;42"])
async def test_a_request_id_outside_the_allowed_alphabet_is_replaced_by_a_fresh_one(lines: Any, given: str) -> None:
    configure_logging("test", json=True)
    metadata = (("authorization", f"Bearer {TOKENS[Role.PRODUCT]}"), ("x-request-id", given))
    assert (await call(FakeContext(metadata))).allowed
    ids = [line["request_id"] for line in lines()]
    assert ids[0] == ids[1] != given and re.fullmatch("[0-9a-f]{16}", ids[0])


@pytest.mark.parametrize("given", ["req-42", "a" * 128, "A.b_c:d-9"])
async def test_a_request_id_in_the_allowed_alphabet_is_kept(lines: Any, given: str) -> None:
    configure_logging("test", json=True)
    metadata = (("authorization", f"Bearer {TOKENS[Role.PRODUCT]}"), ("x-request-id", given))
    await call(FakeContext(metadata))
    assert [line["request_id"] for line in lines()] == [given, given]
