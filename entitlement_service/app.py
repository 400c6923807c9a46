"""Start-up and shutdown of the entitlement service: explicit wiring, no work at import time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import structlog
from aiohttp import web

from entitlement_service.db.migrate import migrate
from entitlement_service.db.pool import wait_for_pool
from entitlement_service.grpc.access import ROLES_BY_METHOD, SERVICE
from entitlement_service.grpc.errors import ERRORS
from entitlement_service.grpc.servicer import EntitlementServicer
from entitlement_service.settings import Settings
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.grpc_server import GrpcServer, build_grpc_server, wait_for_stop_signal
from service_runtime.http_probes import add_probe_routes, start_site
from service_runtime.logs import configure_logging
from service_runtime.rpc import RpcInterceptor

log = structlog.get_logger("entitlement_service")


@dataclass
class Runtime:
    """What the running process holds; `pool` is None until the database answers."""

    settings: Settings
    pool: asyncpg.Pool | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def readiness(self) -> dict[str, bool]:
        return {"database": self.ready.is_set()}


def build_server(settings: Settings, runtime: Runtime) -> GrpcServer:
    servicer = EntitlementServicer()  # type: ignore[abstract]  # unbuilt RPCs answer UNIMPLEMENTED
    interceptor = RpcInterceptor(settings.service_tokens, ROLES_BY_METHOD, ERRORS)
    return build_grpc_server(
        settings.grpc_addr,
        [SERVICE],
        lambda server: entitlement_pb2_grpc.add_EntitlementServiceServicer_to_server(servicer, server),
        [interceptor],
    )


async def connect_database(runtime: Runtime, server: GrpcServer) -> None:
    settings = runtime.settings
    pool = await wait_for_pool(settings.database_url, min_size=settings.db_pool_min,
                               max_size=settings.db_pool_max, timeout_s=settings.db_connect_timeout_s)
    async with pool.acquire() as conn:
        await migrate(conn)
    runtime.pool = pool
    runtime.ready.set()
    await server.set_serving(True)
    log.info("ready")


async def run(settings: Settings) -> None:
    runtime = Runtime(settings)
    server = build_server(settings, runtime)
    await server.server.start()
    await server.set_serving(False)
    metrics_app = web.Application()
    add_probe_routes(metrics_app, runtime.readiness)
    runner, metrics_port = await start_site(metrics_app, settings.metrics_addr.host, settings.metrics_addr.port)
    log.info("listening", grpc_port=server.port, metrics_port=metrics_port)
    connecting = asyncio.create_task(connect_database(runtime, server))
    try:
        signal_name = await wait_for_stop_signal()
        log.info("shutting_down", signal=signal_name, grace_s=settings.shutdown_grace_s)
        await server.stop(settings.shutdown_grace_s)
    finally:
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await runner.cleanup()
        if runtime.pool is not None:
            await runtime.pool.close()
    log.info("stopped")


def main() -> None:
    settings = Settings.from_env()
    configure_logging("entitlement_service", level=settings.log_level)
    asyncio.run(run(settings))
