"""Start-up and shutdown of the checkout service: explicit wiring, no work at import time."""

from __future__ import annotations

import asyncio

import grpc
import structlog

from checkout_service.entitlement_client import is_serving, open_channel
from checkout_service.grpc.access import ROLES_BY_METHOD, SERVICE
from checkout_service.grpc.errors import ERRORS
from checkout_service.grpc.servicer import CheckoutServicer
from checkout_service.http.app import create_app
from checkout_service.settings import Settings
from selfserve.checkout.v1 import checkout_pb2_grpc
from service_runtime.grpc_server import GrpcServer, build_grpc_server, wait_for_stop_signal
from service_runtime.http_probes import start_site
from service_runtime.logs import configure_logging
from service_runtime.rpc import RpcInterceptor

log = structlog.get_logger("checkout_service")


def build_server(settings: Settings, entitlement: grpc.aio.Channel) -> GrpcServer:
    servicer = CheckoutServicer()  # type: ignore[abstract]  # unbuilt RPCs answer UNIMPLEMENTED
    interceptor = RpcInterceptor(settings.service_tokens, ROLES_BY_METHOD, ERRORS)
    return build_grpc_server(
        settings.grpc_addr,
        [SERVICE],
        lambda server: checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(servicer, server),
        [interceptor],
    )


async def run(settings: Settings) -> None:
    entitlement = open_channel(settings.entitlement_target, settings.entitlement_token)

    async def readiness() -> dict[str, bool]:
        return {"entitlement_service": await is_serving(entitlement)}

    server = build_server(settings, entitlement)
    await server.server.start()
    await server.set_serving(True)
    runner, http_port = await start_site(create_app(readiness), settings.http_addr.host, settings.http_addr.port)
    log.info("listening", grpc_port=server.port, http_port=http_port,
             entitlement_target=settings.entitlement_target)
    try:
        signal_name = await wait_for_stop_signal()
        log.info("shutting_down", signal=signal_name, grace_s=settings.shutdown_grace_s)
        await server.stop(settings.shutdown_grace_s)
        await runner.shutdown()
    finally:
        await runner.cleanup()
        await entitlement.close()
    log.info("stopped")


def main() -> None:
    settings = Settings.from_env()
    configure_logging("checkout_service", level=settings.log_level)
    asyncio.run(run(settings))
