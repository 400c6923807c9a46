"""(a) Webhook ingest against a database holding a year of stored billing, against the same
measurements on an empty database in the same run: 100,000 accounts' histories (1.1 million stored
provider events, with every row the service derives from them) seeded with COPY (bench/seed.py),
then the ingest scenario's load, its open-loop run at the rate the empty database's ran at, and its
renewal burst."""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from .context import Context
from .procs import LOAD_CPU, describe_cpu, machine_meter, python_module, run_tool
from .provider_history import capture
from .report import Row, ratio
from .seed import history_seed, seed_histories
from .stack import start_stack
from .webhook import CONCURRENCY, Ingest, measure_ingest
from .webhook_bodies import price_for

NAME = "a. webhook ingest, stored history vs empty database"
TARGET = "≥ 0.90 of empty events/s, p99 ≤ 1.2× empty"
LATENCY_NAME = "a. receipt → finalized at a fixed rate, stored history vs empty"
LATENCY_TARGET = "p99 ≤ 1.2× empty"
RENEWAL_NAME = "a. renewal burst, stored history vs empty"
RENEWAL_TARGET = "none (reported beside)"
# The prices the seeded accounts hold (bench/seed.py: plan_of).
LOOKUP_KEYS = ("pro_monthly", "starter_monthly")


async def _sizes(database_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) "
            "        FROM pg_partition_tree('provider_events')) AS provider_events, "  # the parent holds nothing
            "pg_size_pretty(pg_database_size(current_database())) AS database")
    finally:
        await conn.close()
    return dict(row)


async def _empty(ctx: Context) -> Ingest:
    database_url = await ctx.server.create("webhook_empty", migrated=False)
    stack = await start_stack(database_url, ctx.work)
    try:
        return await measure_ingest(ctx, stack, database_url)
    finally:
        await stack.stop()


async def _large(ctx: Context, half_rate: float) -> tuple[Ingest, dict[str, Any]]:
    captured = await capture(ctx.work, LOOKUP_KEYS)
    database_url = await ctx.server.create("webhook_large", migrated=False)
    stack = await start_stack(database_url, ctx.work)
    try:
        seed = history_seed(captured, {key: await price_for(stack.sim, key) for key in LOOKUP_KEYS}, int(time.time()))
        started = time.monotonic()
        async with machine_meter() as machine:
            stored = await seed_histories(database_url, seed, 1, ctx.history_accounts)
        seeding: dict[str, Any] = {"accounts": ctx.history_accounts, "events": stored,
                                   "seconds": round(time.monotonic() - started, 1), "machine_busy": machine.busy}
        # As a database a year old stands: months past the retention age folded into the archive.
        started = time.monotonic()
        await run_tool(python_module("entitlement_service", "prune-events"), env=stack.env, timeout_s=1800)
        seeding.update(retention_s=round(time.monotonic() - started, 1), **await _sizes(database_url))
        return await measure_ingest(ctx, stack, database_url, half_rate), seeding
    finally:
        await stack.stop()


def _load(got: Ingest) -> str:
    return (f"{got.rate:,.0f} events/s, p99 {got.p99_ms:.0f} ms ({got.unique_ok:.0f} distinct 2xx in "
            f"{got.load.seconds:.1f} s)")


def _finalized(got: Ingest) -> bool:
    return got.done.applied >= got.unique_ok and got.done.assignments >= got.unique_ok and got.load.errors == 0


def _raw(got: Ingest) -> dict[str, Any]:
    return {"wrk": got.load.counts, "finalized": got.done.__dict__, "cpu": got.cpu, "others": got.others,
            "openloop": got.half, "openloop_finalized": got.half_done.__dict__, "renewal_wrk": got.renewed.counts,
            "renewal_finalized": got.renewal_done.__dict__, "renewal_cpu": got.renewal_cpu}


async def run(ctx: Context) -> list[Row]:
    empty = await _empty(ctx)
    large, seeding = await _large(ctx, float(empty.half["rate"]))
    rate = ratio(large.rate, empty.rate)
    p99 = ratio(large.p99_ms, empty.p99_ms)
    stored = f"{seeding['events']:,} events of {seeding['accounts']:,} accounts stored"
    ingest = Row(
        NAME, f"{_load(large)} with {stored}", f"{_load(empty)} on an empty database", rate, TARGET,
        rate is not None and p99 is not None and rate >= 0.90 and p99 <= 1.2 and _finalized(large)
        and _finalized(empty),
        f"wrk -c{CONCURRENCY} -t1 + lua (core {LOAD_CPU}), as in a.",
        f"p99 ratio {p99}; seeded in {seeding['seconds']:.0f} s (COPY from 2 processes, then VACUUM ANALYZE; "
        f"machine {seeding['machine_busy']:.2f} cores busy meanwhile), then old months folded into the archive "
        f"by prune-events in {seeding['retention_s']:.0f} s: provider_events {seeding['provider_events']}, "
        f"database {seeding['database']}; each run ANALYZEd after its 1,500-event warm-up; finalized: "
        f"{large.done.applied} / {empty.done.applied} applied, errors {large.load.errors} / {empty.load.errors}; "
        f"{large.placement}; stored history: {describe_cpu(large.cpu)}, other processes {large.others:.2f}; empty: "
        f"{describe_cpu(empty.cpu)}, other processes {empty.others:.2f}",
        {"large": _raw(large), "empty": _raw(empty), "seeding": seeding, "p99_ratio": p99})
    large_p99, empty_p99 = float(large.half["p99_ms"]), float(empty.half["p99_ms"])
    latency_ratio = ratio(large_p99, empty_p99)
    latency = Row(
        LATENCY_NAME, f"p99 {large_p99:.1f} ms, p50 {large.half['p50_ms']:.1f} ms with {stored}",
        f"p99 {empty_p99:.1f} ms, p50 {empty.half['p50_ms']:.1f} ms on an empty database",
        latency_ratio, LATENCY_TARGET,
        latency_ratio is not None and latency_ratio <= 1.2 and large.half["ok"] == large.half["sent"]
        and empty.half["ok"] == empty.half["sent"],
        f"python -m bench.openloop at {empty.half['rate']:.0f} events/s, both runs (core {LOAD_CPU})",
        f"statuses {large.half['statuses']} / {empty.half['statuses']}; max dispatch lag "
        f"{large.half['max_dispatch_lag_ms']} / {empty.half['max_dispatch_lag_ms']} ms", {})
    renewal = Row(
        RENEWAL_NAME, f"{large.renewal_rate:,.0f} events/s, p99 {large.renewed.counts['p99_us'] / 1000:.0f} ms "
                      f"with {stored}",
        f"{empty.renewal_rate:,.0f} events/s, p99 {empty.renewed.counts['p99_us'] / 1000:.0f} ms on an empty database",
        ratio(large.renewal_rate, empty.renewal_rate), RENEWAL_TARGET, None,
        f"wrk -c{CONCURRENCY} -t1 + lua (core {LOAD_CPU}), as in a.",
        f"`customer.subscription.updated` for the accounts each load created; finalized "
        f"{large.renewal_done.applied} / {empty.renewal_done.applied}; stored history: "
        f"{describe_cpu(large.renewal_cpu)}; empty: {describe_cpu(empty.renewal_cpu)}", {})
    return [ingest, latency, renewal]
