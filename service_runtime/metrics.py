"""Prometheus metrics shared by both services' transports."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BUCKET_LABELS = (*map(floatToGoString, SECONDS_BUCKETS), "+Inf")


class MethodCalls:
    """One RPC method's completed calls, by status code, and their durations.

    Only the event loop's thread records calls, so plain numbers do. prometheus_client's own
    counter and histogram take a lock for each of the three values a call changes: an eighth of
    what the call pipeline adds to a cached CheckGate answer."""

    __slots__ = ("buckets", "codes", "name", "seconds")

    def __init__(self, name: str) -> None:
        self.name = name
        self.codes: dict[str, int] = {}
        self.buckets = [0] * len(_BUCKET_LABELS)  # not cumulative; the last is +Inf
        self.seconds = 0.0

    def record(self, code: str, seconds: float) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        self.buckets[bisect_left(SECONDS_BUCKETS, seconds)] += 1
        self.seconds += seconds


class RpcMetrics(Collector):
    """`grpc_server_handled_total{grpc_method,grpc_code}` and `grpc_server_handling_seconds{grpc_method}`,
    built from each method's counts when /metrics is read."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodCalls] = {}

    def method(self, name: str) -> MethodCalls:
        return self._methods.setdefault(name, MethodCalls(name))

    def collect(self) -> Iterator[Metric]:
        handled = CounterMetricFamily("grpc_server_handled", "gRPC calls completed, by method and status code.",
                                      labels=["grpc_method", "grpc_code"])
        seconds = HistogramMetricFamily("grpc_server_handling_seconds", "gRPC call duration in seconds, by method.",
                                        labels=["grpc_method"])
        for method in list(self._methods.values()):
            for code, count in list(method.codes.items()):
                handled.add_metric([method.name, code], count)
            cumulative, buckets = 0, []
            for label, count in zip(_BUCKET_LABELS, list(method.buckets), strict=True):
                cumulative += count
                buckets.append((label, cumulative))
            seconds.add_metric([method.name], buckets, method.seconds)
        yield handled
        yield seconds


RPC_METRICS = RpcMetrics()
REGISTRY.register(RPC_METRICS)
