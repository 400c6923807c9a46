"""Tracing with OpenTelemetry: one purchase followed as one trace, from the HTTP request or gRPC call
that starts it, through the checkout service's calls to the entitlement service, to the SQL
statements that apply it.

A caller's W3C `traceparent` (an HTTP header, or gRPC metadata) is continued, and passed on with
every call the checkout service makes to the entitlement service while serving it. Spans are
recorded and exported only when an exporter is configured (`OTEL_TRACES_EXPORTER`, `none` by
default). With none, nothing is recorded and no span is made: the API's non-recording span carries
the caller's trace context through the request as it came, so the caller's tracing still sees one
trace, and a request without a `traceparent` costs nothing at all. With an exporter, the SDK's
tracer provider samples by the parent's decision and every trace that starts here
(`ParentBased(ALWAYS_ON)`), and spans leave through a batch processor, off the event loop.

Each service builds its own `Tracing` in its app.py and hands it to what traces: the gRPC call
pipeline and the HTTP middleware (server spans), the channel to the entitlement service (client
spans), the asyncpg pool (statement spans). Nothing is global, so two services in one process (the
integration tests) each trace under their own name; the OpenTelemetry context, a context variable,
is what links a span of one to its parent in the other."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from service_runtime.config import ConfigError, Env

EXPORTERS = ("otlp", "console")
# Where an OTLP/HTTP collector listens by default (the OpenTelemetry specification's default).
DEFAULT_OTLP_TRACES_ENDPOINT = "http://localhost:4318/v1/traces"
# The span attribute a request's `x-request-id` is kept under, so a trace is found by request id.
REQUEST_ID = "request.id"

Attributes = Mapping[str, AttributeValue]

_W3C = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class TracingSettings:
    service_name: str
    # Where spans go; empty for `none`, when nothing is recorded.
    exporters: tuple[str, ...] = ()
    # The full URL OTLP/HTTP spans are posted to.
    otlp_endpoint: str = DEFAULT_OTLP_TRACES_ENDPOINT


def read_tracing_settings(env: Env, service_name: str) -> TracingSettings:
    """The standard OpenTelemetry variables: `OTEL_TRACES_EXPORTER` (`none`, or `otlp` and/or
    `console`), `OTEL_SERVICE_NAME` (default `service_name`), and the OTLP endpoint."""
    exporters = env.choices("OTEL_TRACES_EXPORTER", "none", ("none", *EXPORTERS))
    if "none" in exporters and len(exporters) > 1:
        raise ConfigError(f"OTEL_TRACES_EXPORTER cannot list none with other exporters, got {','.join(exporters)!r}")
    return TracingSettings(
        service_name=env.text("OTEL_SERVICE_NAME", service_name),
        exporters=tuple(e for e in exporters if e != "none"),
        otlp_endpoint=_otlp_endpoint(env),
    )


def _otlp_endpoint(env: Env) -> str:
    """`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else `OTEL_EXPORTER_OTLP_ENDPOINT` (the base
    every signal shares) with the traces path, as the specification has them."""
    if (url := env.optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) is not None:
        return _http_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    if (base := env.optional("OTEL_EXPORTER_OTLP_ENDPOINT")) is not None:
        return _http_url("OTEL_EXPORTER_OTLP_ENDPOINT", base).rstrip("/") + "/v1/traces"
    return DEFAULT_OTLP_TRACES_ENDPOINT


def _http_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
    return url


class Tracing:
    """What a service traces with: its tracer, and the provider behind it when spans are recorded."""

    def __init__(self, tracer: trace.Tracer, provider: TracerProvider | None = None) -> None:
        self.tracer = tracer
        self._provider = provider

    @property
    def recording(self) -> bool:
        """Whether spans are recorded and exported; when not, incoming trace context is only passed on."""
        return self._provider is not None

    def server_span(self, name: str, attributes: Attributes, traceparent: str | None,
                    tracestate: str | None = None) -> Span | None:
        """The span a request is served in, a child of the caller's `traceparent` (a new trace without
        one). Without an exporter it is the caller's own context, not recorded, or None when the
        caller sent none: there is nothing to record or pass on."""
        if traceparent is None and self._provider is None:
            return None
        return self.tracer.start_span(name, extract(traceparent, tracestate), SpanKind.SERVER, attributes)

    def client_span(self, name: str, attributes: Attributes) -> Span | None:
        """A span for an outgoing call, a child of the span being served; None outside a recorded one,
        so background calls (readiness checks, the reconciler's timer) start no traces of their own."""
        if self._provider is None or not trace.get_current_span().is_recording():
            return None
        return self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    def force_flush(self) -> None:
        """Exports every span ended so far, before returning."""
        if self._provider is not None:
            self._provider.force_flush()

    def shutdown(self) -> None:
        """Exports what is left and stops the exporters; blocks while they send."""
        if self._provider is not None:
            self._provider.shutdown()


# No exporter: nothing recorded, incoming trace context passed on (the API's no-op tracer returns
# the parent's non-recording span as the span it starts).
NO_TRACING = Tracing(trace.NoOpTracer())


def setup_tracing(settings: TracingSettings, exporter: SpanExporter | None = None) -> Tracing:
    """The service's tracing, from its settings; `exporter`, when given, replaces the configured
    ones (tests pass an in-memory exporter). Starts the batch processors' threads, so it is called
    once, by the service's `main`, which shuts it down on the way out."""
    exporters = [exporter] if exporter is not None else [_exporter(name, settings) for name in settings.exporters]
    if not exporters:
        return NO_TRACING
    # Resource.create adds the SDK's own attributes and OTEL_RESOURCE_ATTRIBUTES; the name given wins.
    resource = Resource.create({SERVICE_NAME: settings.service_name})
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), resource=resource, shutdown_on_exit=False)
    for each in exporters:
        provider.add_span_processor(BatchSpanProcessor(each))
    return Tracing(provider.get_tracer("selfserve"), provider)


def _exporter(name: str, settings: TracingSettings) -> SpanExporter:
    if name == "otlp":
        # Other standard OTEL_EXPORTER_OTLP_* variables (headers, timeout, compression, certificates)
        # are read by the exporter itself.
        return OTLPSpanExporter(endpoint=settings.otlp_endpoint)
    return ConsoleSpanExporter(service_name=settings.service_name)


def extract(traceparent: str | None, tracestate: str | None = None) -> Context:
    """A context whose span is the caller's (not recorded), from its W3C headers; an empty context
    when they are missing or malformed, so a server span never inherits anything else."""
    carrier = {"traceparent": traceparent} if traceparent is not None else {}
    if tracestate is not None:
        carrier["tracestate"] = tracestate
    return _W3C.extract(carrier, Context())


def inject(span: Span, metadata: list[tuple[str, str]]) -> None:
    """Appends the W3C headers naming `span` as the parent (`traceparent`, and `tracestate` when it
    carries one) to outgoing metadata; nothing for an invalid span."""
    if not span.get_span_context().is_valid:
        return
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, trace.set_span_in_context(span, Context()))
    metadata.extend(carrier.items())


def activate(span: Span) -> Token[Context]:
    """Makes `span` the current one in this task, so outgoing calls and SQL statements become its
    children; `deactivate` takes the token back."""
    return attach(trace.set_span_in_context(span))


def deactivate(token: Token[Context]) -> None:
    detach(token)


def current_span() -> Span:
    """The span being served in this task (an invalid, non-recording one when there is none)."""
    return trace.get_current_span()


def trace_id_of(span: Span | None) -> str | None:
    """The trace id as logged (32 hex digits) when `span` is recorded; None otherwise."""
    if span is None or not span.is_recording():
        return None
    return trace.format_trace_id(span.get_span_context().trace_id)


def finish(span: Span, attributes: Attributes, error: str | None = None) -> None:
    """Ends `span` with what the call's outcome adds to it; `error` marks it failed, saying why."""
    if span.is_recording():
        span.set_attributes(attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
    span.end()
