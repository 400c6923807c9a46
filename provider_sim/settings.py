"""The simulator's settings, read once from the environment; a bad value names its variable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provider_sim.delivery import RetryPolicy
from provider_sim.sim import Options, PresetEndpoint
from provider_sim.store import new_secret
from provider_sim.versions import is_version
from service_runtime.config import Address, ConfigError, Env

DEFAULT_ADDR = "127.0.0.1:12111"


@dataclass(frozen=True)
class Settings:
    addr: Address
    options: Options
    retry: RetryPolicy
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = Env(environ)
        snapshot = env.optional("PROVIDER_SIM_SNAPSHOT")
        keys = tuple(k.strip() for k in (env.optional("PROVIDER_SIM_API_KEY") or "").split(",") if k.strip())
        options = Options(api_keys=keys, public_url=env.optional("PROVIDER_SIM_PUBLIC_URL"),
                          snapshot=Path(snapshot) if snapshot else None, presets=_presets(env))
        retry = RetryPolicy(
            max_attempts=int(env.number("PROVIDER_SIM_RETRY_MAX_ATTEMPTS", 8, minimum=1)),
            initial_backoff_s=env.number("PROVIDER_SIM_RETRY_INITIAL_MS", 50, minimum=1) / 1000,
            max_backoff_s=env.number("PROVIDER_SIM_RETRY_MAX_MS", 2000, minimum=1) / 1000,
            timeout_s=env.number("PROVIDER_SIM_DELIVERY_TIMEOUT_S", 10, minimum=0.1),
        )
        level = env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error"))
        return cls(env.address("PROVIDER_SIM_ADDR", DEFAULT_ADDR), options, retry, level)


def _presets(env: Env) -> tuple[PresetEndpoint, ...]:
    url = env.optional("PROVIDER_SIM_WEBHOOK_URL")
    if url is None:
        return ()
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"PROVIDER_SIM_WEBHOOK_URL must be an http(s) URL, got {url!r}")
    version = env.optional("PROVIDER_SIM_WEBHOOK_API_VERSION")
    if version is not None and not is_version(version):
        raise ConfigError(f"PROVIDER_SIM_WEBHOOK_API_VERSION must look like 2025-03-31, got {version!r}")
    secret = env.optional("PROVIDER_SIM_WEBHOOK_SECRET") or new_secret()
    return (PresetEndpoint(url=url, secret=secret, api_version=version),)
