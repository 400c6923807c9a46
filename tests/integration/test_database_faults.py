"""Database faults are transient for the caller: a connection cut in the middle of a transaction
loses nothing (the service applies the events again on a fresh connection, their ids
deduplicating them, and answers as if nothing had happened), and a call that finds no free
connection in time answers UNAVAILABLE instead of waiting without end."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from entitlement_service.db.pool import PoolBusy, PoolHandle, create_pool
from entitlement_service.grpc.errors import ERRORS
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client
from tests.support.provider import MONTH, T0, subscription_event
from tests.support.waiting import eventually


async def test_an_event_whose_connection_is_cut_mid_transaction_is_applied_once_all_the_same(
    service: Client, database_url: str
) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0, items=[("starter_monthly", 1)]))
    blocker = await asyncpg.connect(database_url)
    admin = await asyncpg.connect(database_url)
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM accounts WHERE account_id = 'acct_1' FOR UPDATE")
        upgrade = asyncio.create_task(service.apply(subscription_event(
            "evt_2", "sub_1", T0 + MONTH / 2, items=[("pro_monthly", 1)], start=T0)))

        async def waiting_backend() -> int | None:
            return await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> $1 "
                "AND query LIKE '%accounts%'", blocker.get_server_pid())

        pid = await eventually(waiting_backend, what="the service's transaction to wait for the account lock")
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await holding.rollback()
        [result] = await upgrade
    finally:
        await blocker.close()
        await admin.close()
    assert result.outcome == pb.EVENT_OUTCOME_APPLIED
    plans = (await service.entitlements(as_of=None)).plans
    assert [p.billing_plan_code for p in plans] == ["pro"]


async def test_a_call_that_finds_no_free_connection_in_time_answers_unavailable(database_url: str) -> None:
    pool = PoolHandle(acquire_timeout_s=0.1)
    pool.set(await create_pool(database_url, min_size=1, max_size=1, timeout_s=5))
    try:
        async with pool.acquire():
            with pytest.raises(PoolBusy) as busy:
                async with pool.acquire():
                    pass
        assert ERRORS.status_for(busy.value) == grpc.StatusCode.UNAVAILABLE
        async with pool.acquire() as conn:  # free again
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
