"""The entitlement service's configuration, read once from the environment at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from service_runtime.auth import ServiceTokens
from service_runtime.config import URL_WITH_PASSWORD, Address, Env, redacted_repr
from service_runtime.tls import ServerTls
from service_runtime.tracing import TracingSettings, read_tracing_settings

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/selfserve"


@dataclass(frozen=True)
class Settings:
    """Its repr shows the database URL without its password, and no token (settings get printed)."""

    database_url: str = field(metadata=URL_WITH_PASSWORD)
    # false: the schema is migrated by `python -m entitlement_service migrate` (run as the owner
    # role), and the service waits, not ready, until that has brought it to the latest migration.
    migrate_on_start: bool
    grpc_addr: Address
    metrics_addr: Address
    service_tokens: ServiceTokens
    db_pool_min: int
    db_pool_max: int
    db_connect_timeout_s: float
    shutdown_grace_s: float
    log_level: str
    purchase_return_timeout: timedelta
    gauges_interval_s: float
    gate_cache_max_age: timedelta
    heartbeat_s: float
    heartbeat_deadline_s: float
    # How long a call waits for a pooled connection before it answers UNAVAILABLE.
    db_acquire_timeout_s: float
    # A change to everything wakes each WatchEntitlements stream within this many seconds, or
    # longer when there are more streams than the wake rate reads again in that time.
    watch_wake_spread_s: float
    watch_wakes_per_s: float
    # gRPC calls in progress, WatchEntitlements streams included; beyond it a call is refused at
    # once with RESOURCE_EXHAUSTED.
    grpc_max_in_flight: int
    # TLS on the gRPC port, mutual with a client CA (GRPC_TLS_*); None: plaintext.
    tls: ServerTls | None
    # Which exporters spans go to (none by default: incoming trace context is only passed on).
    tracing: TracingSettings
    # Raw payloads of provider events older than this (by provider time) are dropped; everything
    # else about an event is kept, and a rejected event keeps its payload.
    event_payload_retention: timedelta
    # How often a replica runs the event retention (partitions made ahead, payloads pruned); 0: never
    # (then `python -m entitlement_service prune-events` must run, from a scheduled job).
    event_retention_interval_s: float

    def __repr__(self) -> str:
        return redacted_repr(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(os.environ if environ is None else environ)
        return cls(
            database_url=env.text("DATABASE_URL", DEFAULT_DATABASE_URL),
            migrate_on_start=env.choice("MIGRATE_ON_START", "true", ("true", "false")) == "true",
            grpc_addr=env.address("ENTITLEMENT_GRPC_ADDR", "127.0.0.1:50051"),
            metrics_addr=env.address("ENTITLEMENT_METRICS_ADDR", "127.0.0.1:9464"),
            service_tokens=ServiceTokens.parse(env.text("SERVICE_TOKENS")),
            db_pool_min=int(env.number("DB_POOL_MIN", 2, minimum=1)),
            db_pool_max=int(env.number("DB_POOL_MAX", 10, minimum=1)),
            db_connect_timeout_s=env.number("DB_CONNECT_TIMEOUT_S", 5, minimum=0.1),
            shutdown_grace_s=env.number("SHUTDOWN_GRACE_S", 10),
            log_level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            purchase_return_timeout=timedelta(seconds=env.number("PURCHASE_RETURN_TIMEOUT_S", 120, minimum=1)),
            gauges_interval_s=env.number("OPERATIONS_GAUGES_INTERVAL_S", 15, minimum=0.1),
            gate_cache_max_age=timedelta(seconds=env.number("GATE_CACHE_MAX_AGE_S", 30, minimum=0)),
            heartbeat_s=env.number("CHANGE_HEARTBEAT_INTERVAL_S", 2, minimum=0.05),
            heartbeat_deadline_s=env.number("CHANGE_HEARTBEAT_DEADLINE_S", 2, minimum=0.05),
            db_acquire_timeout_s=env.number("DB_ACQUIRE_TIMEOUT_S", 5, minimum=0.01),
            watch_wake_spread_s=env.number("WATCH_WAKE_SPREAD_S", 1, minimum=0),
            watch_wakes_per_s=env.number("WATCH_WAKES_PER_S", 200, minimum=1),
            grpc_max_in_flight=int(env.number("ENTITLEMENT_GRPC_MAX_IN_FLIGHT", 4096, minimum=1)),
            tls=ServerTls.from_env(env),
            tracing=read_tracing_settings(env, "entitlement-service"),
            event_payload_retention=timedelta(days=env.number("EVENT_PAYLOAD_RETENTION_DAYS", 90, minimum=1)),
            event_retention_interval_s=env.number("EVENT_RETENTION_INTERVAL_S", 3600, minimum=0),
        )
