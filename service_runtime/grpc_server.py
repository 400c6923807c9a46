"""A grpc.aio server with health checking, reflection and a graceful stop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from service_runtime.config import Address

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


def build_grpc_server(
    address: Address,
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
) -> GrpcServer:
    server = grpc.aio.server()
    register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(str(address))
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return GrpcServer(server, health, tuple(service_names), port)
