"""Fixtures: a fresh simulator per test, a webhook receiver, and a small catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.provider_sim.builders import Catalog, make_catalog
from tests.provider_sim.harness import Receiver, SimServer


@pytest.fixture
def sim() -> Iterator[SimServer]:
    server = SimServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def catalog(sim: SimServer) -> Catalog:
    return make_catalog(sim)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = await Receiver().start()
    try:
        yield found
    finally:
        await found.stop()
