"""One purchase as one trace: both services in-process over real sockets, PostgreSQL behind them,
each tracing into one in-memory exporter. A request carrying a W3C `traceparent` is continued by
the checkout service's HTTP span, its gRPC client spans, the entitlement service's server spans and
their SQL statements, each the child of the one before; a checkout service without an exporter
still passes the caller's trace on; and the HTTP middleware binds the trace id beside the request
id only when the request is recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service_runtime.http_logging import request_log
from service_runtime.http_probes import start_site
from service_runtime.tracing import NO_TRACING, Tracing, TracingSettings, current_span, setup_tracing
from tests.integration.conftest import Stack, open_stack

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@dataclass
class Traced:
    stack: Stack
    exporter: InMemorySpanExporter
    tracings: Sequence[Tracing]

    def spans(self) -> list[ReadableSpan]:
        """The incoming trace's spans ended so far, once each service has exported its own."""
        for tracing in self.tracings:
            tracing.force_flush()
        return [s for s in self.exporter.get_finished_spans() if trace_id(s) == TRACE_ID]


@asynccontextmanager
async def traced_stack(database_url: str, *, checkout_records: bool = True) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    entitlement = setup_tracing(TracingSettings("entitlement-service"), exporter)
    checkout = setup_tracing(TracingSettings("checkout-service"), exporter) if checkout_records else NO_TRACING
    try:
        async with open_stack(database_url, entitlement_tracing=entitlement, checkout_tracing=checkout) as stack:
            yield Traced(stack, exporter, (entitlement, checkout))
    finally:
        entitlement.shutdown()
        checkout.shutdown()


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[Traced]:
    async with traced_stack(database_url) as found:
        yield found


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def attribute(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def service_of(span: ReadableSpan) -> Any:
    return span.resource.attributes.get("service.name")


def rpc_spans(spans: Sequence[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind and attribute(s, "rpc.system") == "grpc"]


def sql_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if attribute(s, "db.system") == "postgresql"]


def by_span_id(spans: Sequence[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans if s.context is not None}


def parent_of(span: ReadableSpan, spans: Mapping[int, ReadableSpan]) -> ReadableSpan | None:
    return spans.get(span.parent.span_id) if span.parent is not None else None


def ancestors(span: ReadableSpan, spans: Mapping[int, ReadableSpan]) -> list[ReadableSpan]:
    """Its parent, the parent's parent, and so on, as far as the trace's spans go here."""
    chain = []
    while (parent := parent_of(span, spans)) is not None:
        chain.append(parent)
        span = parent
    return chain


def checkout_body() -> dict[str, Any]:
    return {"account_id": "acct_1", "items": [{"price": "pro_monthly", "quantity": 1}],
            "success_url": "https://app.example/done", "cancel_url": "https://app.example/pricing"}


def subscription_created() -> dict[str, Any]:
    item = {"id": "si_t", "object": "subscription_item", "quantity": 1, "created": 1_767_225_600,
            "current_period_start": 1_767_225_600, "current_period_end": 1_769_904_000,
            "price": {"id": "price_pro", "object": "price", "product": "pro", "active": True, "currency": "usd",
                      "unit_amount": 2000, "recurring": {"interval": "month", "interval_count": 1},
                      "lookup_key": "pro_monthly", "metadata": {}}}
    return {"id": "evt_traced", "object": "event", "type": "customer.subscription.created", "created": 1_767_225_600,
            "api_version": "2026-08-27", "data": {"object": {
                "id": "sub_t", "object": "subscription", "customer": "cus_t", "status": "active",
                "created": 1_767_225_600, "start_date": 1_767_225_600, "cancel_at_period_end": False,
                "metadata": {"account_id": "acct_t"}, "items": {"object": "list", "data": [item]}}}}


def assert_continues_the_caller(span: ReadableSpan) -> None:
    assert span.parent is not None and span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == CALLER_SPAN


async def test_a_checkout_request_is_one_trace_from_its_http_span_to_its_sql_statements(traced: Traced) -> None:
    status, created = await traced.stack.post("/v1/checkout/sessions", checkout_body(),
                                              {"traceparent": TRACEPARENT, "x-request-id": "req-traced"})
    assert status == 201, created
    spans = traced.spans()
    index = by_span_id(spans)

    [http] = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "POST /v1/checkout/sessions"]
    assert_continues_the_caller(http)
    assert service_of(http) == "checkout-service"
    assert attribute(http, "request.id") == "req-traced"
    assert attribute(http, "http.route") == "/v1/checkout/sessions"
    assert attribute(http, "http.response.status_code") == 201

    clients = rpc_spans(spans, SpanKind.CLIENT)
    assert {"ValidatePurchase", "RegisterPurchase"} <= {attribute(c, "rpc.method") for c in clients}
    assert all(parent_of(c, index) is http for c in clients)

    servers = rpc_spans(spans, SpanKind.SERVER)
    assert sorted(attribute(s, "rpc.method") for s in servers) == sorted(attribute(c, "rpc.method") for c in clients)
    for server in servers:
        client = parent_of(server, index)
        assert client is not None and client.kind is SpanKind.CLIENT
        assert attribute(client, "rpc.method") == attribute(server, "rpc.method")
        assert service_of(server) == "entitlement-service"
        assert attribute(server, "request.id") == "req-traced"  # x-request-id is passed on as before
        assert attribute(server, "rpc.grpc.status_code") == 0

    statements = sql_spans(spans)
    assert any("INSERT INTO purchases" in attribute(s, "db.statement") for s in statements)
    for statement in statements:
        chain = ancestors(statement, index)
        assert chain[0] in servers and chain[-1] is http
        assert statement.kind is SpanKind.CLIENT and service_of(statement) == "entitlement-service"
        assert "acct_1" not in attribute(statement, "db.statement")  # the text, never the parameters


async def test_a_webhook_delivery_is_traced_to_the_statements_that_apply_its_event(traced: Traced) -> None:
    status, reply = await traced.stack.webhook(subscription_created(), headers={"traceparent": TRACEPARENT})
    assert status == 200 and reply["outcome"] == "applied", reply
    spans = traced.spans()
    index = by_span_id(spans)

    [http] = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "POST /webhooks/stripe"]
    assert_continues_the_caller(http)
    [client] = rpc_spans(spans, SpanKind.CLIENT)
    [server] = rpc_spans(spans, SpanKind.SERVER)
    assert attribute(client, "rpc.method") == attribute(server, "rpc.method") == "ApplyProviderEvents"
    assert parent_of(client, index) is http and parent_of(server, index) is client

    statements = sql_spans(spans)
    assert any("provider_events" in attribute(s, "db.statement") for s in statements)
    assert {"BEGIN", "COMMIT"} <= {attribute(s, "db.operation") for s in statements}
    for statement in statements:
        chain = ancestors(statement, index)
        assert chain[0] is server and chain[-1] is http
        text = attribute(statement, "db.statement")
        assert "acct_t" not in text and "sub_t" not in text


async def test_without_an_exporter_the_checkout_service_passes_the_callers_trace_on(database_url: str) -> None:
    async with traced_stack(database_url, checkout_records=False) as traced:
        status, created = await traced.stack.post("/v1/checkout/sessions", checkout_body(),
                                                  {"traceparent": TRACEPARENT})
        assert status == 201, created
        spans = traced.spans()
    assert {service_of(s) for s in spans} == {"entitlement-service"}  # the checkout service recorded nothing
    servers = rpc_spans(spans, SpanKind.SERVER)
    assert {"ValidatePurchase", "RegisterPurchase"} <= {attribute(s, "rpc.method") for s in servers}
    for server in servers:
        assert_continues_the_caller(server)  # the checkout service made no span of its own in between
    index = by_span_id(spans)
    assert sql_spans(spans) and all(ancestors(s, index)[-1] in servers for s in sql_spans(spans))


@asynccontextmanager
async def http_site(tracing: Tracing, seen: list[dict[str, Any]]) -> AsyncIterator[str]:
    """An application with only the request middleware, whose handler notes what it runs under."""

    async def handler(_: web.Request) -> web.Response:
        running_under = f"{current_span().get_span_context().trace_id:032x}"
        seen.append({**structlog.contextvars.get_contextvars(), "span_trace_id": running_under})
        return web.json_response({})

    app = web.Application(middlewares=[request_log(tracing)])
    app.router.add_get("/v1/things/{thing_id}", handler)
    app.router.add_get("/healthz", handler)
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_http_middleware_binds_the_trace_id_beside_the_request_id_only_when_recording() -> None:
    exporter, seen = InMemorySpanExporter(), []
    recording = setup_tracing(TracingSettings("test"), exporter)
    headers = {"traceparent": TRACEPARENT, "x-request-id": "req-http"}
    try:
        for tracing in (recording, NO_TRACING):
            async with http_site(tracing, seen) as base, aiohttp.ClientSession() as http:
                async with http.get(f"{base}/v1/things/t_1", headers=headers) as r:
                    assert r.status == 200 and r.headers["x-request-id"] == "req-http"
                async with http.get(f"{base}/healthz", headers=headers) as r:
                    assert r.status == 200
        recording.force_flush()
    finally:
        recording.shutdown()
    traced, probed, passed_on, probed_untraced = seen
    assert traced["request_id"] == "req-http" and traced["trace_id"] == traced["span_trace_id"] == TRACE_ID
    # Not recorded: the caller's trace is still the current one, for calls made on its behalf.
    assert "trace_id" not in passed_on and passed_on["span_trace_id"] == TRACE_ID
    assert "trace_id" not in probed and "trace_id" not in probed_untraced  # probes are never traced
    [span] = exporter.get_finished_spans()
    assert span.name == "GET /v1/things/{thing_id}" and attribute(span, "request.id") == "req-http"
    assert_continues_the_caller(span)
