"""A grpc.aio server with health checking, reflection and a graceful stop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from service_runtime.config import Address
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
    passes each service's generic handler on and drops the same methods' registration.

    Those functions register every method twice, as a generic handler and as "registered" methods.
    grpc.aio's accept loop keeps one pending request per registered method and waits on all of them
    with `asyncio.wait` for every call it accepts; with about twenty methods here, that wait is a
    visible share of what a cached CheckGate answer costs. Served through generic handlers alone,
    it waits on one."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """The generic handler added beside these serves the same methods."""


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
    handlers = GenericHandlersOnly(server)
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
