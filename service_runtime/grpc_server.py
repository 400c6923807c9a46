"""A grpc.aio server with health checking, reflection and a graceful stop."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from service_runtime.config import Address
from service_runtime.rpc import decoding_or_undecodable
from service_runtime.tls import ServerTls

log = structlog.get_logger("server")


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    health: HealthServicer
    service_names: tuple[str, ...]
    port: int

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Reports NOT_SERVING to every watcher first, then refuses new calls and lets in-flight
        calls finish for up to `grace_s` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


class GenericHandlersOnly:
    """What the generated `add_*Servicer_to_server` functions are handed instead of the server: it
    serves each service's methods through one generic handler, made from their registration.

    Those functions register every method twice, as a generic handler and as "registered" methods.
    grpc.aio's accept loop keeps one pending request per registered method and waits on all of them
    with `asyncio.wait` for every call it accepts; with about twenty methods here, that wait is a
    visible share of what a cached CheckGate answer costs. Served through generic handlers alone,
    it waits on one.

    The methods of `guarded` services read their request with `decoding_or_undecodable`: a message
    that does not decode reaches the call pipeline, which answers INVALID_ARGUMENT, where gRPC
    itself would answer UNKNOWN naming a Python exception."""

    def __init__(self, server: grpc.aio.Server, guarded: Sequence[str] = ()) -> None:
        self._server = server
        self._guarded = frozenset(guarded)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Made again from the same methods in `add_registered_method_handlers`."""

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        if service in self._guarded:
            handlers = {name: h._replace(request_deserializer=decoding_or_undecodable(h.request_deserializer))
                        for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


def build_grpc_server(
    address: Address,
    service_names: Sequence[str],
    register: Callable[[GenericHandlersOnly], None],
    *,
    max_in_flight: int | None = None,
    tls: ServerTls | None = None,
) -> GrpcServer:
    """`max_in_flight` caps the calls in progress, open streams included (None: no cap); one more is
    refused at once with RESOURCE_EXHAUSTED before any handler runs, so an overloaded server sheds
    work instead of queueing calls past their deadlines. With `tls` the port speaks TLS only (every
    service on it, health and reflection included); without it, plaintext only."""
    server = grpc.aio.server(maximum_concurrent_rpcs=max_in_flight)
    handlers = GenericHandlersOnly(server, service_names)
    register(handlers)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, handlers)
    names = (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
    # What reflection.enable_server_reflection does for a grpc.aio server, which `handlers` is not.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(names), handlers)
    if tls is None:
        port = server.add_insecure_port(str(address))
    else:
        port = server.add_secure_port(str(address), tls.credentials())
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return GrpcServer(server, health, tuple(service_names), port)
