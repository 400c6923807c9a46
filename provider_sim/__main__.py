"""`python -m provider_sim`: the simulator on PROVIDER_SIM_ADDR (default 127.0.0.1:12111)."""

from __future__ import annotations

import asyncio
import os
import sys

import structlog

from provider_sim.app import create_app
from provider_sim.clock import Clock
from provider_sim.delivery import Deliverer
from provider_sim.settings import Settings
from provider_sim.store import State, load_snapshot
from service_runtime.config import ConfigError
from service_runtime.http_probes import start_site
from service_runtime.logs import configure_logging
from service_runtime.signals import wait_for_stop_signal

log = structlog.get_logger("provider_sim")


async def serve(settings: Settings) -> None:
    snapshot = settings.options.snapshot
    loaded = load_snapshot(snapshot) if snapshot else None
    state, offset = loaded or (State(), 0)
    app = create_app(state, Clock(offset), Deliverer(settings.retry), settings.options)
    runner, port = await start_site(app, settings.addr.host, settings.addr.port)
    for preset in settings.options.presets:
        log.info("webhook_endpoint_preset", url=preset.url, api_version=preset.api_version)
    log.info("listening", url=f"http://{settings.addr.host}:{port}", snapshot=str(snapshot) if snapshot else None,
             restored=loaded is not None)
    signal_name = await wait_for_stop_signal()
    log.info("shutting_down", signal=signal_name)
    await runner.cleanup()
    log.info("stopped")


def main() -> None:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        sys.exit(f"provider_sim: configuration error: {exc}")
    configure_logging("provider_sim", level=settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
