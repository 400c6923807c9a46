"""How the client connects and retries: TLS, the token, deadlines, backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a unary call on UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED, up to
    `attempts` calls in all, waiting between them a random time ("full jitter") up to
    `initial_backoff_s * multiplier ** n`, capped at `max_backoff_s`. The same backoff spaces the
    watch stream's reconnections."""

    attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    retry_on: frozenset[grpc.StatusCode] = RETRYABLE

    def backoff_s(self, failures: int, rng: random.Random | None = None) -> float:
        """How long to wait after `failures` consecutive failures (1 or more)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** max(failures - 1, 0))
        return (rng or random).uniform(0, ceiling)


@dataclass(frozen=True)
class Tls:
    """TLS to the service: `root_certificates` (PEM) to trust, the system's when None;
    `server_name` when the certificate names a host other than the target's; a client
    certificate and key (PEM) when the service asks for mutual TLS."""

    root_certificates: bytes | None = None
    server_name: str | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
