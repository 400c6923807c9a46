"""Prometheus metrics shared by both services' transports."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RPC_HANDLED = Counter(
    "grpc_server_handled_total", "gRPC calls completed, by method and status code.", ["grpc_method", "grpc_code"]
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "gRPC call duration in seconds, by method.",
    ["grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
