"""(g) One more event on an account with a long history: accounts holding 10 and 10,000 stored
events of one subscription (hourly seat-count changes, a paid invoice every 30 days), then a burst
of further seat-count changes applied to each, one event per call, the sizes interleaved. Reports
p50 and p99 per event for each size and their ratio.

The stored events are written with the service's own statements (recorded events and history
rows); the first further event of each account derives it from its whole history (and writes its
derived rows), outside the measurement."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc

from entitlement_service.db import derived, events
from entitlement_service.domain.records import HistoryEntry, RecordedEvent
from entitlement_service.grpc.convert_in import provider_event
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.support.provider import example_catalog_request, invoice_event, subscription_event

from .context import Context
from .procs import SERVER_CPU, meter
from .report import Row
from .services import bearer, start_entitlement

NAME = "g. one more event, 10,000 vs 10 events of history"
TARGET = "p50 and p99 ratio ≤ 1.3"
SIZES = (10, 10_000)
ACCOUNTS_PER_SIZE = 3
BURST = 200  # further events per account
T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _event(account: str, i: int) -> pb.ProviderEvent:
    """The account's i-th event: a seat-count change each hour, every 720th a paid invoice instead."""
    at = T0 + i * HOUR
    customer, sub = f"cus_{account}", f"sub_{account}"
    if i and i % 720 == 0:
        return invoice_event(f"evt_{account}_{i}", f"in_{account}_{i}", sub, at, customer_id=customer,
                             lines=[("team_seats_monthly", 1 + i % 50, at, at + 30 * 24 * HOUR)])
    return subscription_event(f"evt_{account}_{i}", sub, at, items=[("team_seats_monthly", 1 + i % 50)],
                              account_id=account, customer_id=customer, start=T0, period_end=at + 30 * 24 * HOUR,
                              event_type="customer.subscription.created" if i == 0 else
                              "customer.subscription.updated")


async def _store(database_url: str, accounts: dict[str, int]) -> None:
    """Each account's first `size` events, recorded and in its history, as applying them leaves them."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany("INSERT INTO accounts (account_id, provider_customer_id) VALUES ($1, $2)",
                               [(a, f"cus_{a}") for a in accounts])
        for account, size in accounts.items():
            for start in range(0, size, 2000):
                stored = [provider_event(_event(account, i)) for i in range(start, min(size, start + 2000))]
                async with conn.transaction():
                    await events.insert_events(conn, [RecordedEvent.of(e, account) for e in stored])
                    await derived.write_rows(conn, history=[HistoryEntry.of(e, account) for e in stored])
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def run(ctx: Context) -> list[Row]:
    database_url = await ctx.server.create("history")
    service = await start_entitlement("entitlement_history", database_url, ctx.work, SERVER_CPU)
    accounts = {f"acct_h{size}_{n}": size for size in SIZES for n in range(ACCOUNTS_PER_SIZE)}
    latencies: dict[int, list[float]] = {size: [] for size in SIZES}
    try:
        started = time.monotonic()
        await _store(database_url, accounts)
        seed_s = time.monotonic() - started
        async with grpc.aio.insecure_channel(service.target) as channel:
            stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
            # In force from the accounts' first event on, so every event resolves its price.
            await stub.UpsertCatalog(example_catalog_request(T0), metadata=bearer(Role.OPERATOR))

            async def apply(account: str, i: int) -> float:
                began = time.perf_counter()
                reply = await stub.ApplyProviderEvents(pb.ApplyProviderEventsRequest(events=[_event(account, i)]),
                                                       metadata=bearer(Role.CHECKOUT))
                assert reply.results[0].outcome == pb.EVENT_OUTCOME_APPLIED, reply
                return (time.perf_counter() - began) * 1000

            whole_ms = {account: await apply(account, size) for account, size in accounts.items()}
            async with meter({"service": service.child.pid}) as cpu:
                for step in range(1, BURST + 1):
                    for account, size in accounts.items():
                        latencies[size].append(await apply(account, size + step))
    finally:
        await service.child.stop()
    (small_p50, small_p99), (large_p50, large_p99) = (_percentiles(latencies[size]) for size in SIZES)
    p50, p99 = large_p50 / small_p50, large_p99 / small_p99
    first = max(ms for account, ms in whole_ms.items() if accounts[account] == SIZES[-1])
    return [Row(
        NAME, f"p50 {large_p50:.2f} ms, p99 {large_p99:.2f} ms per event at {SIZES[-1]:,} events",
        f"p50 {small_p50:.2f} ms, p99 {small_p99:.2f} ms per event at {SIZES[0]:,} events", round(p50, 3), TARGET,
        p50 <= 1.3 and p99 <= 1.3,
        f"ApplyProviderEvents from the benchmark process, one event per call, {BURST} per account, "
        f"{ACCOUNTS_PER_SIZE} accounts of each size interleaved",
        f"p99 ratio {p99:.2f}; history stored in {seed_s:.0f} s; the first event of a {SIZES[-1]:,}-event account "
        f"(its whole history derived once) took {first:.0f} ms; service on core {SERVER_CPU}, CPU cores used "
        f"{cpu.used['service']:.2f}, postgres {cpu.used['postgres']:.2f}",
        {"latency_ms": {str(size): latencies[size] for size in SIZES}, "first_ms": whole_ms, "seed_s": seed_s})]
