"""The checkout service's configuration, read once from the environment at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from service_runtime.auth import Role, ServiceTokens
from service_runtime.config import SECRET, URL_WITH_PASSWORD, Address, ConfigError, Env, redacted_repr
from service_runtime.tls import ChannelTls, ServerTls
from service_runtime.tracing import TracingSettings, read_tracing_settings


@dataclass(frozen=True)
class Settings:
    """Its repr hides the provider key, the webhook secrets and every token (settings get printed)."""

    grpc_addr: Address
    http_addr: Address
    entitlement_target: str
    # TLS on the channel to the entitlement service, mutual with a client certificate
    # (ENTITLEMENT_TLS_*); None: plaintext.
    entitlement_tls: ChannelTls | None
    service_tokens: ServiceTokens
    # The token this service presents to the entitlement service (the `checkout` role's):
    # `ENTITLEMENT_TOKEN`, else a `checkout` entry listed in plain text in `SERVICE_TOKENS`.
    entitlement_token: str = field(metadata=SECRET)
    stripe_api_key: str = field(metadata=SECRET)
    stripe_api_base: str | None = field(metadata=URL_WITH_PASSWORD)
    stripe_webhook_secrets: tuple[str, ...] = field(metadata=SECRET)
    stripe_webhook_tolerance_s: float
    stripe_sync_mode: str
    # One provider request's timeout, how often the SDK tries it again (connection errors,
    # timeouts, 409 and 5xx answers, with backoff and jitter, under the request's idempotency key),
    # and the deadline of the whole call, retries included: a slow provider costs a caller at most
    # `stripe_deadline_s`, then UNAVAILABLE (HTTP 503).
    stripe_timeout_s: float
    stripe_max_retries: int
    stripe_deadline_s: float
    shutdown_grace_s: float
    log_level: str
    # Where browsers reach this service (the provider sends them back to its return page); None
    # means the HTTP listen address as bound.
    public_url: str | None
    # How often the return page polls while a purchase is not final.
    poll_interval_ms: int
    # How often the reconciler runs on its own; 0 turns the periodic run off.
    reconcile_interval_s: float
    # Requests handled at once on the HTTP port (probes aside) and calls in progress on the gRPC
    # port; beyond them a request is shed at once (503 with Retry-After, RESOURCE_EXHAUSTED) rather
    # than queued behind work the process cannot finish in time.
    http_max_in_flight: int
    grpc_max_in_flight: int
    # TLS on the gRPC port, mutual with a client CA (GRPC_TLS_*); None: plaintext.
    tls: ServerTls | None
    # Which exporters spans go to (none by default: incoming trace context is only passed on).
    tracing: TracingSettings

    def __repr__(self) -> str:
        return redacted_repr(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(os.environ if environ is None else environ)
        tokens = ServiceTokens.parse(env.text("SERVICE_TOKENS"))
        checkout_token = env.optional("ENTITLEMENT_TOKEN") or tokens.token_for(Role.CHECKOUT)
        if checkout_token is None:
            raise ConfigError("ENTITLEMENT_TOKEN (or a plain checkout:<token> entry in SERVICE_TOKENS) is needed "
                              "to call the entitlement service")
        secrets = tuple(s.strip() for s in env.text("STRIPE_WEBHOOK_SECRETS").split(",") if s.strip())
        if not secrets:
            raise ConfigError("STRIPE_WEBHOOK_SECRETS must list at least one secret")
        http_addr = env.address("CHECKOUT_HTTP_ADDR", "127.0.0.1:8080")
        return cls(
            grpc_addr=env.address("CHECKOUT_GRPC_ADDR", "127.0.0.1:50052"),
            http_addr=http_addr,
            entitlement_target=str(env.address("ENTITLEMENT_TARGET", "127.0.0.1:50051")),
            entitlement_tls=ChannelTls.from_env(env, "ENTITLEMENT_TLS"),
            service_tokens=tokens,
            entitlement_token=checkout_token,
            stripe_api_key=env.text("STRIPE_API_KEY"),
            stripe_api_base=env.optional("STRIPE_API_BASE"),
            stripe_webhook_secrets=secrets,
            stripe_webhook_tolerance_s=env.number("STRIPE_WEBHOOK_TOLERANCE_S", 300, minimum=1),
            stripe_sync_mode=env.choice("STRIPE_SYNC_MODE", "payload", ("payload", "refetch")),
            stripe_timeout_s=env.number("STRIPE_TIMEOUT_S", 10, minimum=0.01),
            stripe_max_retries=int(env.number("STRIPE_MAX_RETRIES", 2)),
            stripe_deadline_s=env.number("STRIPE_DEADLINE_S", 20, minimum=0.01),
            shutdown_grace_s=env.number("SHUTDOWN_GRACE_S", 10),
            log_level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            public_url=_public_url(env, http_addr),
            poll_interval_ms=int(env.number("PURCHASE_POLL_MS", 500, minimum=50)),
            reconcile_interval_s=env.number("RECONCILE_INTERVAL_S", 300),
            http_max_in_flight=int(env.number("CHECKOUT_HTTP_MAX_IN_FLIGHT", 256, minimum=1)),
            grpc_max_in_flight=int(env.number("CHECKOUT_GRPC_MAX_IN_FLIGHT", 256, minimum=1)),
            tls=ServerTls.from_env(env),
            tracing=read_tracing_settings(env, "checkout-service"),
        )


# Listen addresses that mean "every interface": no browser can be sent back to them.
WILDCARDS = frozenset({"0.0.0.0", "::"})


def _public_url(env: Env, http_addr: Address) -> str | None:
    url = (env.optional("CHECKOUT_PUBLIC_URL") or "").rstrip("/")
    if not url:
        if http_addr.host in WILDCARDS:
            raise ConfigError(f"CHECKOUT_PUBLIC_URL is required when CHECKOUT_HTTP_ADDR is {http_addr}: the provider "
                              "sends paying customers' browsers back to it, with their purchase and session ids")
        return None
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"CHECKOUT_PUBLIC_URL must be an http(s) URL, got {url!r}")
    return url
