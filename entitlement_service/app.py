"""Start-up and shutdown of the entitlement service: explicit wiring, no work at import time."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web

from entitlement_service.db.listener import EVERYTHING, listen
from entitlement_service.db.migrate import (
    DatabaseUnreachable,
    MigrationError,
    migrate,
    migrate_database,
    wait_for_schema,
)
from entitlement_service.db.pool import DATABASE_ERRORS, PoolHandle, wait_for_pool
from entitlement_service.grpc.access import ROLES_BY_METHOD, SERVICE
from entitlement_service.grpc.convert_in import stored_event
from entitlement_service.grpc.errors import ERRORS
from entitlement_service.grpc.servicer import EntitlementServicer
from entitlement_service.service.catalog import rederive_queued
from entitlement_service.service.changes import Watchers
from entitlement_service.service.deps import Deps
from entitlement_service.service.gates import GateCache
from entitlement_service.service.metrics import (
    GATE_CACHE_ACCOUNTS,
    NOTIFICATIONS_PROVEN,
    NOTIFICATIONS_UNPROVEN,
    WATCH_STREAMS,
    WATCHED_ACCOUNTS,
)
from entitlement_service.service.retention import keep_events_pruned, run_once
from entitlement_service.service.support import refresh_gauges
from entitlement_service.settings import DEFAULT_DATABASE_URL, Settings
from selfserve.entitlement.v1 import entitlement_pb2, entitlement_pb2_grpc
from service_runtime import loop
from service_runtime.config import Env, redacted_url
from service_runtime.grpc_server import GrpcServer, build_grpc_server
from service_runtime.http_probes import add_probe_routes, start_site
from service_runtime.logs import configure_logging
from service_runtime.rpc import RpcPipeline
from service_runtime.signals import wait_for_stop_signal
from service_runtime.tracing import NO_TRACING, Tracing, setup_tracing

log = structlog.get_logger("entitlement_service")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Runtime:
    """What the running process holds and wires together."""

    def __init__(self, settings: Settings, tracing: Tracing = NO_TRACING) -> None:
        self.settings = settings
        self.tracing = tracing
        self.pool = PoolHandle(settings.db_acquire_timeout_s)
        self.gates = GateCache(self.pool, utc_now, settings.gate_cache_max_age)
        GATE_CACHE_ACCOUNTS.set_function(lambda: self.gates.tracked)
        self.deps = Deps(self.pool, stored_event, utc_now, settings.purchase_return_timeout,
                         committed=self.on_commit)
        # Watchers read through a quarter of the pool at most: the rest stays free for the other calls.
        self.watchers = Watchers(max(1, settings.db_pool_max // 4), settings.watch_wake_spread_s,
                                 settings.watch_wakes_per_s)
        WATCH_STREAMS.set_function(lambda: self.watchers.streams)
        WATCHED_ACCOUNTS.set_function(lambda: len(self.watchers))
        self.notifications_proven = False
        self.listening = asyncio.Event()  # set once notifications are first proven

    def on_commit(self, account_id: str, revision: int) -> None:
        """This replica's own write committed: its cache forgets the account at once."""
        if account_id == EVERYTHING:
            self.gates.clear()
        else:
            self.gates.invalidate(account_id, revision)

    def on_change(self, account_id: str, revision: int) -> None:
        """A change announced by any replica: the cache forgets it and the account's watchers wake."""
        self.on_commit(account_id, revision)
        self.watchers.notify(account_id, revision)

    def on_proven(self, proven: bool) -> None:
        if proven != self.notifications_proven:
            log.info("change_notifications", proven=proven)
            if not proven:
                NOTIFICATIONS_UNPROVEN.inc()
        self.notifications_proven = proven
        NOTIFICATIONS_PROVEN.set(int(proven))
        self.gates.trust(proven)
        self.watchers.proven = proven  # streams send heartbeats only while it holds
        if proven:
            self.listening.set()

    async def readiness(self) -> dict[str, bool]:
        return {"database": self.pool.ready, "change_notifications": self.notifications_proven}


def build_server(settings: Settings, runtime: Runtime) -> GrpcServer:
    servicer = EntitlementServicer(runtime.deps, runtime.gates, runtime.watchers)
    pipeline = RpcPipeline(settings.service_tokens, ROLES_BY_METHOD, ERRORS, runtime.tracing)
    wrapped = pipeline.wrap(servicer, entitlement_pb2.DESCRIPTOR.services_by_name["EntitlementService"])
    return build_grpc_server(
        settings.grpc_addr,
        [SERVICE],
        lambda server: entitlement_pb2_grpc.add_EntitlementServiceServicer_to_server(wrapped, server),  # type: ignore[arg-type]
        max_in_flight=settings.grpc_max_in_flight,
        tls=settings.tls,
    )


async def connect_database(runtime: Runtime, server: GrpcServer) -> None:
    settings = runtime.settings
    pool = await wait_for_pool(settings.database_url, min_size=settings.db_pool_min,
                               max_size=settings.db_pool_max, timeout_s=settings.db_connect_timeout_s,
                               tracer=runtime.tracing.tracer if runtime.tracing.recording else None)
    if settings.migrate_on_start:
        async with pool.acquire() as conn:
            await migrate(conn)
    else:
        await wait_for_schema(pool)
    runtime.pool.set(pool)
    listener = asyncio.create_task(listen(settings.database_url, runtime.pool, runtime.on_change, runtime.on_proven,
                                          heartbeat_s=settings.heartbeat_s,
                                          deadline_s=settings.heartbeat_deadline_s))
    await runtime.listening.wait()
    await server.set_serving(True)
    log.info("ready")
    background = [listener, keep_gauges_fresh(runtime.deps, settings.gauges_interval_s)]
    if settings.event_retention_interval_s > 0:
        background.append(keep_events_pruned(settings.database_url, settings.db_connect_timeout_s,
                                             settings.event_payload_retention, settings.event_retention_interval_s,
                                             utc_now))
    await asyncio.gather(*background)


async def keep_gauges_fresh(deps: Deps, interval_s: float) -> None:
    """Refreshes the operational gauges, and derives again any account a catalog change queued and
    left behind (the call that made the change derives them before answering, unless it died)."""
    while True:
        try:
            await refresh_gauges(deps)
            if found := await rederive_queued(deps):
                log.info("catalog_change_applied", accounts=found)
        except DATABASE_ERRORS as exc:
            log.warning("gauges_not_refreshed", error=str(exc))
        await asyncio.sleep(interval_s)


class Running:
    """A started service: its gRPC server, metrics site and database connection task."""

    def __init__(self, runtime: Runtime, server: GrpcServer, runner: web.AppRunner, metrics_port: int) -> None:
        self.runtime, self.server, self.runner, self.metrics_port = runtime, server, runner, metrics_port
        self.connecting = asyncio.create_task(connect_database(runtime, server))

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace_s: float) -> None:
        try:
            await self.server.stop(grace_s)
        finally:
            self.connecting.cancel()
            await asyncio.gather(self.connecting, return_exceptions=True)
            await self.runner.cleanup()
            await self.runtime.pool.close()


async def start(settings: Settings, tracing: Tracing = NO_TRACING) -> Running:
    """Listens at once (health NOT_SERVING) and turns SERVING once the database answers. `tracing`
    is the caller's to shut down; without it, nothing is recorded."""
    runtime = Runtime(settings, tracing)
    server = build_server(settings, runtime)
    await server.server.start()
    await server.set_serving(False)
    metrics_app = web.Application()
    add_probe_routes(metrics_app, runtime.readiness)
    runner, metrics_port = await start_site(metrics_app, settings.metrics_addr.host, settings.metrics_addr.port)
    log.info("listening", grpc_port=server.port, metrics_port=metrics_port)
    return Running(runtime, server, runner, metrics_port)


async def run(settings: Settings, tracing: Tracing = NO_TRACING) -> int:
    """Serves until SIGTERM or SIGINT (exit 0), or until start-up fails for good, for example on a
    migration that changed after it was applied (exit 1, after one clear log line)."""
    running = await start(settings, tracing)
    stop = asyncio.create_task(wait_for_stop_signal())
    await asyncio.wait({stop, running.connecting}, return_when=asyncio.FIRST_COMPLETED)
    failed = running.connecting.done() and not running.connecting.cancelled() and running.connecting.exception()
    if failed:
        log.error("startup_failed", error=f"{type(failed).__name__}: {failed}")
        stop.cancel()
    else:
        log.info("shutting_down", signal=stop.result(), grace_s=settings.shutdown_grace_s)
    await running.stop(0 if failed else settings.shutdown_grace_s)
    log.info("stopped")
    return 1 if failed else 0


def main() -> None:
    settings = Settings.from_env()
    configure_logging("entitlement_service", level=settings.log_level)
    tracing = setup_tracing(settings.tracing)
    try:
        code = loop.run(run(settings, tracing))
    finally:
        tracing.shutdown()  # the spans still waiting in the batch go out, off the loop
    sys.exit(code)


def migrate_command(environ: Mapping[str, str]) -> int:
    """`python -m entitlement_service migrate`: applies the migrations as DATABASE_URL's role (the
    owner) and, with DATABASE_RUNTIME_ROLE, grants that role what the service needs. 0 when done;
    otherwise 1, after one line on stderr saying why."""
    env = Env(environ)
    url = env.text("DATABASE_URL", DEFAULT_DATABASE_URL)
    runtime_role = env.optional("DATABASE_RUNTIME_ROLE")
    connect_timeout_s = env.number("DB_CONNECT_TIMEOUT_S", 5, minimum=0.1)
    configure_logging("entitlement_service", level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning",
                                                                                        "error")))
    try:
        applied = asyncio.run(migrate_database(url, runtime_role, connect_timeout_s=connect_timeout_s))
    except DatabaseUnreachable as exc:
        print(f"entitlement_service migrate: cannot connect to DATABASE_URL ({redacted_url(url)}): {exc}",
              file=sys.stderr)
        return 1
    except MigrationError as exc:
        print(f"entitlement_service migrate: {exc}", file=sys.stderr)
        return 1
    log.info("migrated", applied=applied, runtime_role=runtime_role)
    return 0


def migrate_main() -> None:
    sys.exit(migrate_command(os.environ))


def prune_events_command(environ: Mapping[str, str]) -> int:
    """`python -m entitlement_service prune-events`: one event retention run, as the service runs
    every EVENT_RETENTION_INTERVAL_S (with DATABASE_URL and EVENT_PAYLOAD_RETENTION_DAYS read the
    same way), for a scheduled job when that is 0. 0 when done, or skipped because a replica was
    running one; otherwise 1, after one line on stderr saying why."""
    env = Env(environ)
    url = env.text("DATABASE_URL", DEFAULT_DATABASE_URL)
    retention_days = env.number("EVENT_PAYLOAD_RETENTION_DAYS", 90, minimum=1)
    connect_timeout_s = env.number("DB_CONNECT_TIMEOUT_S", 5, minimum=0.1)
    configure_logging("entitlement_service", level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning",
                                                                                        "error")))
    try:
        asyncio.run(run_once(url, connect_timeout_s, timedelta(days=retention_days), utc_now()))
    except (*DATABASE_ERRORS, TimeoutError) as exc:
        print(f"entitlement_service prune-events: {type(exc).__name__}: {exc} (DATABASE_URL {redacted_url(url)})",
              file=sys.stderr)
        return 1
    return 0


def prune_events_main() -> None:
    sys.exit(prune_events_command(os.environ))
