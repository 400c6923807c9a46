"""The benchmark's stored billing histories (bench/seed.py) are what the services themselves make of
the same webhooks: each seeded event is what the checkout service's normalizer and the entitlement
service's encoder make of its body, and accounts seeded with COPY hold the same rows, table by
table, as the same accounts built by applying those events one by one through the service."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.provider_history import capture
from bench.seed import (
    HISTORY_TABLES,
    RECEIVED_AFTER_S,
    account_webhooks,
    has_table,
    history_seed,
    normalized,
    periods,
    plan_of,
    seed_histories,
)
from devstack.pg import server_url_for
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import catalog_service
from tests.support.pg import execute
from tests.support.provider import price_id

# Starter and Pro accounts, with 1 to 10 periods of history each.
ACCOUNTS = range(1, 13)
# Set when a row is written, which applying and seeding do at different times; and serial ids.
WRITTEN = frozenset({"id", "created_at", "updated_at", "recorded_at", "at"})


@pytest.fixture
async def applied_url(pg_admin_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"selfserve_applied_{os.getpid()}"
    await execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}"',
                  f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield server_url_for(pg_admin_url, name)
    await execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        found = {}
        for table in HISTORY_TABLES:
            if table == "account_history" and not await has_table(conn, table):
                continue
            rows = [tuple((k, v) for k, v in r.items() if k not in WRITTEN)
                    for r in await conn.fetch(f"SELECT * FROM {table}")]
            found[table] = sorted(rows, key=repr)
        return found
    finally:
        await conn.close()


async def test_seeded_accounts_hold_the_rows_their_events_leave_when_applied(
        database_url: str, applied_url: str, tmp_path: Path) -> None:
    captured = await capture(tmp_path, ["pro_monthly", "starter_monthly"])
    seed = history_seed(captured, {key: price_id(key) for key in captured.plans}, int(time.time()))
    assert {plan_of(i) for i in ACCOUNTS} == {"pro_monthly", "starter_monthly"}
    assert {periods(i) for i in ACCOUNTS} == set(range(1, 11))

    async with catalog_service(applied_url) as client:
        for i in ACCOUNTS:
            for body, snapshot in account_webhooks(seed, i):
                message = pb.ProviderEvent.FromString(snapshot)
                assert normalized(body, message.created.seconds + RECEIVED_AFTER_S, captured.products).snapshot \
                    == snapshot
                message.raw_payload = body
                (result,) = await client.apply(message)
                assert result.outcome == pb.EVENT_OUTCOME_APPLIED, (message.provider_event_id, result.reason)
    async with catalog_service(database_url):
        pass  # the same catalog, loaded the same way
    stored = await seed_histories(database_url, seed, ACCOUNTS.start, ACCOUNTS.stop - 1)

    applied, seeded = await _rows(applied_url), await _rows(database_url)
    assert stored == len(applied["provider_events"]) == sum(2 * periods(i) for i in ACCOUNTS)
    for table in applied:
        assert seeded[table] == applied[table], table
    assert len(seeded["issued_grants"]) == sum(periods(i) for i in ACCOUNTS if plan_of(i) == "pro_monthly")
