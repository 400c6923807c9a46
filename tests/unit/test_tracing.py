"""Tracing settings (off unless an exporter is named, bad values refused by name), what each setting
builds, and the W3C headers read and written."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, get_current_span

from checkout_service.settings import Settings as CheckoutSettings
from entitlement_service.db.tracing import operation_of
from entitlement_service.settings import Settings as EntitlementSettings
from service_runtime.config import ConfigError, Env
from service_runtime.tracing import (
    DEFAULT_OTLP_TRACES_ENDPOINT,
    NO_TRACING,
    TracingSettings,
    extract,
    inject,
    read_tracing_settings,
    setup_tracing,
)
from tests.support.tokens import SERVICE_TOKENS

CHECKOUT_ENV = {"SERVICE_TOKENS": SERVICE_TOKENS, "STRIPE_API_KEY": "sk_test_123", "STRIPE_WEBHOOK_SECRETS": "whsec_1"}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def read(**environ: str) -> TracingSettings:
    return read_tracing_settings(Env(environ), "some-service")


def test_tracing_is_off_by_default_and_each_service_has_its_own_name() -> None:
    checkout = CheckoutSettings.from_env(CHECKOUT_ENV).tracing
    entitlement = EntitlementSettings.from_env({"SERVICE_TOKENS": SERVICE_TOKENS}).tracing
    assert checkout == TracingSettings("checkout-service", (), DEFAULT_OTLP_TRACES_ENDPOINT)
    assert entitlement == TracingSettings("entitlement-service", (), DEFAULT_OTLP_TRACES_ENDPOINT)
    assert setup_tracing(checkout) is NO_TRACING and not NO_TRACING.recording


def test_the_standard_variables_name_the_exporters_the_service_and_the_endpoint() -> None:
    assert read(OTEL_TRACES_EXPORTER="none").exporters == ()
    assert read(OTEL_TRACES_EXPORTER="otlp, console,otlp").exporters == ("otlp", "console")
    assert read(OTEL_SERVICE_NAME="checkout-eu").service_name == "checkout-eu"
    assert read(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/").otlp_endpoint == "http://collector:4318/v1/traces"
    assert read(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
                OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="https://traces.example/ingest").otlp_endpoint == (
        "https://traces.example/ingest")


@pytest.mark.parametrize(("name", "value"), [
    ("OTEL_TRACES_EXPORTER", "jaeger"), ("OTEL_TRACES_EXPORTER", "otlp,zipkin"), ("OTEL_TRACES_EXPORTER", "none,otlp"),
    ("OTEL_TRACES_EXPORTER", ","), ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://collector:4317"),
])
def test_a_bad_tracing_value_stops_either_service_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        CheckoutSettings.from_env({**CHECKOUT_ENV, name: value})
    with pytest.raises(ConfigError, match=name):
        EntitlementSettings.from_env({"SERVICE_TOKENS": SERVICE_TOKENS, name: value})


@pytest.mark.parametrize("exporters", [("otlp",), ("console",), ("otlp", "console")])
def test_a_named_exporter_makes_spans_recorded(exporters: tuple[str, ...]) -> None:
    tracing = setup_tracing(TracingSettings("checkout-service", exporters))
    try:
        assert tracing.recording
    finally:
        tracing.shutdown()  # nothing was recorded, so nothing is sent


def test_a_server_span_continues_the_callers_trace_and_names_itself_as_the_parent_it_passes_on() -> None:
    exporter = InMemorySpanExporter()
    tracing = setup_tracing(TracingSettings("test"), exporter)
    try:
        span = tracing.server_span("serve", {"rpc.system": "grpc"}, TRACEPARENT, "vendor=1")
        assert span is not None and span.is_recording()
        metadata: list[tuple[str, str]] = []
        inject(span, metadata)
        span.end()
    finally:
        tracing.shutdown()
    [ended] = exporter.get_finished_spans()
    assert ended.kind is SpanKind.SERVER and ended.parent is not None and ended.parent.span_id == 0x00f067aa0ba902b7
    own = f"{span.get_span_context().span_id:016x}"
    assert dict(metadata) == {"traceparent": f"00-4bf92f3577b34da6a3ce929d0e0e4736-{own}-01", "tracestate": "vendor=1"}


def test_without_an_exporter_only_a_caller_with_a_trace_gets_one_passed_on() -> None:
    assert NO_TRACING.server_span("serve", {}, None) is None  # nothing to record, nothing to pass on
    span = NO_TRACING.server_span("serve", {}, TRACEPARENT)
    assert span is not None and not span.is_recording()
    metadata: list[tuple[str, str]] = []
    inject(span, metadata)
    assert metadata == [("traceparent", TRACEPARENT)]  # the caller's own span is the parent downstream
    assert NO_TRACING.client_span("call", {}) is None


@pytest.mark.parametrize("traceparent", [
    None, "", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"])
def test_a_missing_or_malformed_traceparent_gives_no_parent(traceparent: str | None) -> None:
    assert not get_current_span(extract(traceparent)).get_span_context().is_valid


@pytest.mark.parametrize(("query", "operation"), [
    ("SELECT 1", "SELECT"), ("\n    WITH locked AS (SELECT 1) SELECT 2", "WITH"), ("BEGIN;", "BEGIN"),
    ("insert into t values ($1)", "INSERT"), ("", ""),
])
def test_a_statement_span_is_named_by_its_first_keyword(query: str, operation: str) -> None:
    assert operation_of(query) == operation
