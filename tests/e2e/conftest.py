from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.processes import ServiceProcess
from tests.support.tokens import SERVICE_TOKENS

CHECKOUT_ENV = {
    "STRIPE_API_KEY": "sk_test_e2e",
    "STRIPE_WEBHOOK_SECRETS": "whsec_e2e",
}


@pytest.fixture
async def launch() -> AsyncIterator[Callable[[str, dict[str, str]], ServiceProcess]]:
    """Starts service processes on free ports; kills whatever a test left running."""
    started: list[ServiceProcess] = []

    def make(module: str, env: dict[str, str]) -> ServiceProcess:
        base = {
            "SERVICE_TOKENS": SERVICE_TOKENS,
            "ENTITLEMENT_GRPC_ADDR": "127.0.0.1:0",
            "ENTITLEMENT_METRICS_ADDR": "127.0.0.1:0",
            "CHECKOUT_GRPC_ADDR": "127.0.0.1:0",
            "CHECKOUT_HTTP_ADDR": "127.0.0.1:0",
            **CHECKOUT_ENV,
        }
        process = ServiceProcess(module, base | env)
        started.append(process)
        return process

    yield make
    for process in started:
        await process.kill()
