"""Shared fixtures: a real PostgreSQL server (found or started the way the local stack finds it),
a migrated template database, and per-test isolation on top of it."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from devstack.pg import ensure_database, server_url_for
from entitlement_service.db.migrate import migrate
from tests.support.pg import execute

ROOT = Path(__file__).resolve().parents[1]
_names = itertools.count()


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL on the test server with the right to create databases."""
    database = ensure_database(ROOT, "postgres", log=lambda _: None)
    yield server_url_for(database.url, "postgres")
    database.stop()


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    """A database with every migration applied, cloned by each test that needs its own."""
    name = f"selfserve_tpl_{os.getpid()}"
    asyncio.run(execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'))
    asyncio.run(_migrate(server_url_for(pg_admin_url, name)))
    yield name
    asyncio.run(execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def fresh_database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """An empty database of its own, dropped afterwards."""
    name = f"selfserve_t_{os.getpid()}_{next(_names)}"
    await execute(pg_admin_url, f'CREATE DATABASE "{name}"')
    yield server_url_for(pg_admin_url, name)
    await execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(pg_admin_url: str, template_database: str) -> AsyncIterator[str]:
    """A migrated database of its own (cloned from the template), for tests that commit."""
    name = f"selfserve_t_{os.getpid()}_{next(_names)}"
    await execute(pg_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield server_url_for(pg_admin_url, name)
    await execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def shared_database(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """A migrated database shared by tests that roll back; never connected to the template so
    that cloning the template is never blocked."""
    name = f"selfserve_shared_{os.getpid()}"
    asyncio.run(execute(pg_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    yield name
    asyncio.run(execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def conn(pg_admin_url: str, shared_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a migrated database inside a transaction that is rolled back."""
    connection = await asyncpg.connect(server_url_for(pg_admin_url, shared_database))
    transaction = connection.transaction()
    await transaction.start()
    try:
        yield connection
    finally:
        await transaction.rollback()
        await connection.close()
