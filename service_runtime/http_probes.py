"""Liveness, readiness and Prometheus routes for an aiohttp application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

Readiness = Callable[[], Awaitable[dict[str, bool]]]


def add_probe_routes(app: web.Application, readiness: Readiness) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = await readiness()
        ready = all(checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Starts `app` on host:port (0 picks a free port) and returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = [addr[1] for addr in runner.addresses if isinstance(addr, tuple)]
    return runner, bound[0] if bound else port
