"""Start-up and shutdown of the checkout service: explicit wiring, no work at import time."""

from __future__ import annotations

import asyncio

import grpc
import structlog
from aiohttp import web

from checkout_service.entitlement_client import is_serving, open_channel
from checkout_service.grpc.access import ROLES_BY_METHOD, SERVICE
from checkout_service.grpc.errors import ERRORS
from checkout_service.grpc.servicer import CheckoutServicer
from checkout_service.http.app import create_app
from checkout_service.reconcile import reconcile_every
from checkout_service.service import Deps
from checkout_service.settings import Settings
from checkout_service.stripe.gateway import Provider, StripeGateway
from checkout_service.webhooks import BoundedCache, WebhookDeps
from selfserve.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime import loop
from service_runtime.grpc_server import GrpcServer, build_grpc_server
from service_runtime.http_probes import start_site
from service_runtime.logs import configure_logging
from service_runtime.rpc import RpcPipeline
from service_runtime.signals import wait_for_stop_signal
from service_runtime.tracing import NO_TRACING, Tracing, setup_tracing

log = structlog.get_logger("checkout_service")


def build_server(settings: Settings, deps: Deps, hooks: WebhookDeps, tracing: Tracing = NO_TRACING) -> GrpcServer:
    servicer = CheckoutServicer(deps, hooks)
    pipeline = RpcPipeline(settings.service_tokens, ROLES_BY_METHOD, ERRORS, tracing)
    wrapped = pipeline.wrap(servicer, checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"])
    return build_grpc_server(
        settings.grpc_addr,
        [SERVICE],
        lambda server: checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(wrapped, server),  # type: ignore[arg-type]
        max_in_flight=settings.grpc_max_in_flight,
        tls=settings.tls,
    )


class Running:
    def __init__(self, server: GrpcServer, runner: web.AppRunner, http_port: int, channel: grpc.aio.Channel,
                 gateway: StripeGateway | None, periodic: asyncio.Task[None] | None) -> None:
        self.server, self.runner, self.http_port, self.channel = server, runner, http_port, channel
        self.gateway, self.periodic = gateway, periodic

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace_s: float) -> None:
        if self.periodic is not None:
            self.periodic.cancel()
            await asyncio.gather(self.periodic, return_exceptions=True)
        try:
            await self.server.stop(grace_s)
            await self.runner.shutdown()
        finally:
            await self.runner.cleanup()
            await self.channel.close()
            if self.gateway is not None:
                await self.gateway.close()


async def start(settings: Settings, provider: Provider | None = None, tracing: Tracing = NO_TRACING) -> Running:
    """Serves until stopped. `tracing` is the caller's to shut down; without it, incoming trace
    context is passed on and nothing is recorded."""
    channel = open_channel(settings.entitlement_target, settings.entitlement_token, tracing, settings.entitlement_tls)
    gateway = None if provider else StripeGateway(
        settings.stripe_api_key, settings.stripe_api_base, timeout_s=settings.stripe_timeout_s,
        max_retries=settings.stripe_max_retries, deadline_s=settings.stripe_deadline_s)
    provider = provider or gateway
    assert provider is not None
    deps = Deps(entitlement_pb2_grpc.EntitlementServiceStub(channel), provider, settings.public_url or "",
                settings.poll_interval_ms)
    hooks = WebhookDeps(deps, settings.stripe_webhook_secrets, settings.stripe_webhook_tolerance_s,
                        settings.stripe_sync_mode == "refetch", BoundedCache(provider.retrieve_product),
                        BoundedCache(provider.retrieve_customer))

    async def readiness() -> dict[str, bool]:
        return {"entitlement_service": await is_serving(channel)}

    server = build_server(settings, deps, hooks, tracing)
    await server.server.start()
    await server.set_serving(True)
    app = create_app(readiness, deps, hooks, settings.service_tokens, settings.http_max_in_flight, tracing)
    runner, http_port = await start_site(app, settings.http_addr.host, settings.http_addr.port)
    # Browsers come back to this address unless CHECKOUT_PUBLIC_URL names another.
    deps.public_url = settings.public_url or f"http://{settings.http_addr.host}:{http_port}"
    log.info("listening", grpc_port=server.port, http_port=http_port, entitlement_target=settings.entitlement_target,
             provider=settings.stripe_api_base or "stripe", sync_mode=settings.stripe_sync_mode)
    periodic = (asyncio.create_task(reconcile_every(hooks, settings.reconcile_interval_s))
                if settings.reconcile_interval_s > 0 else None)
    return Running(server, runner, http_port, channel, gateway, periodic)


async def run(settings: Settings, tracing: Tracing = NO_TRACING) -> None:
    running = await start(settings, tracing=tracing)
    signal_name = await wait_for_stop_signal()
    log.info("shutting_down", signal=signal_name, grace_s=settings.shutdown_grace_s)
    await running.stop(settings.shutdown_grace_s)
    log.info("stopped")


def main() -> None:
    settings = Settings.from_env()
    configure_logging("checkout_service", level=settings.log_level)
    tracing = setup_tracing(settings.tracing)
    try:
        loop.run(run(settings, tracing))
    finally:
        tracing.shutdown()  # the spans still waiting in the batch go out, off the loop
