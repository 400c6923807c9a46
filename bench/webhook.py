"""(a) Webhook ingest to finalized, through the whole stack, against pgbench running the
equivalent transaction; then receipt-to-finalized latency at half the measured rate."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from .context import Context
from .db import execute
from .pg_baseline import run_baseline
from .procs import LOAD_CPU, describe_cpu, machine_meter, meter, python_module, run_tool
from .profiling import profiled
from .report import Row, ratio
from .stack import Stack, start_stack
from .tools import WrkResult, wrk
from .webhook_bodies import bodies, price_for, renewals, template_event, write_signed

NAME = "a. webhook ingest → finalized"
TARGET = "≥ 0.75 of pgbench TPS"
MIN_RATIO = 0.75
LATENCY_NAME = "a. receipt → finalized at half rate"
LATENCY_TARGET = "p99 ≤ 50 ms"
RENEWAL_NAME = "a. renewal burst → finalized (existing accounts)"
RENEWAL_TARGET = "none (the target is for new accounts)"
CONCURRENCY = 64
MIN_EVENTS = 1000
MAX_LOAD_S = 60


@dataclass(frozen=True)
class Finalized:
    applied: int
    recorded: int
    assignments: int


async def finalized(database_url: str, tag: str, events: str = "") -> Finalized:
    """Events of batch `tag` the entitlement service recorded and applied (those whose ids go on
    with `events`, when given), and the plan assignments their accounts hold."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE outcome = 'applied') AS applied, count(*) AS recorded "
            "FROM provider_events WHERE starts_with(provider_event_id, $1)", f"evt_{tag}_{events}")
        assignments = await conn.fetchval(
            "SELECT count(*) FROM plan_assignments WHERE starts_with(account_id, $1)", f"acct_{tag}_")
    finally:
        await conn.close()
    return Finalized(row["applied"], row["recorded"], assignments)


async def _delivered(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{stack.sim}/_sim/delivery/wait",
                                                         params={"timeout_ms": "20000"}) as response:
        if not (await response.json()).get("idle"):
            raise RuntimeError("the simulator's webhook deliveries did not settle")


def signed(ctx: Context, stack: Stack, template: dict[str, Any], tag: str, count: int,
           created: int | None = None) -> Path:
    return write_signed(ctx.path(f"{tag}.requests"), bodies(template, tag, count, created), stack.secret)


async def _closed_loop(stack: Stack, requests: Path, duration_s: float) -> WrkResult:
    return await wrk(stack.webhook_url, requests, connections=CONCURRENCY, duration_s=duration_s)


async def _open_loop(ctx: Context, stack: Stack, template: dict[str, Any], rate: float) -> dict[str, Any]:
    count = max(200, int(rate * ctx.load_s))
    path = write_signed(ctx.path("bench_h.requests"), bodies(template, "bench_h", count), stack.secret)
    run = await run_tool(python_module("bench.openloop", stack.webhook_url, str(path), f"{rate:.2f}"), LOAD_CPU,
                         timeout_s=count / rate + 120)
    result: dict[str, Any] = json.loads(run.stdout)
    return result


@dataclass(frozen=True)
class Ingest:
    """One database's ingest figures: the closed-loop load of new accounts, the open-loop run at a
    fixed rate, and the renewal burst of the accounts the load created."""

    template: dict[str, Any]
    warmup_ok_per_s: float
    load: WrkResult
    duration_s: float
    done: Finalized
    cpu: dict[str, float]
    half: dict[str, Any]
    half_done: Finalized
    renewed: WrkResult
    renewal_done: Finalized
    renewal_cpu: dict[str, float]
    others: float  # cores busy with processes other than the stack's and PostgreSQL's during the load
    placement: str

    @property
    def unique_ok(self) -> float:
        return self.load.counts["ok"] - self.load.counts["wrapped"]

    @property
    def rate(self) -> float:
        return self.unique_ok / self.load.seconds

    @property
    def p99_ms(self) -> float:
        return float(self.load.counts["p99_us"]) / 1000

    @property
    def renewal_ok(self) -> float:
        return self.renewed.counts["ok"] - self.renewed.counts["wrapped"]

    @property
    def renewal_rate(self) -> float:
        return self.renewal_ok / self.renewed.seconds


async def warm_up(ctx: Context, stack: Stack, database_url: str) -> tuple[dict[str, Any], WrkResult]:
    """The event the loads clone, once a 1,500-event warm-up ran on a running stack and the
    database was analyzed; and the warm-up's result."""
    template = await template_event(stack.sim, await price_for(stack.sim, "pro_monthly"))
    await _delivered(stack)
    warm = await _closed_loop(stack, signed(ctx, stack, template, "bench_w", 1500), max(3.0, ctx.warmup_s))
    # Planner statistics for the tables the warm-up filled, as autovacuum keeps them in a running
    # system (and as the baseline's VACUUM ANALYZE does for its accounts).
    await execute(database_url, "ANALYZE")
    return template, warm


async def measure_ingest(ctx: Context, stack: Stack, database_url: str, half_rate: float | None = None) -> Ingest:
    """Warm-up, ANALYZE, the measured load, the open-loop run (at `half_rate`, else at half the
    measured rate) and the renewal burst, on a running stack."""
    template, warm = await warm_up(ctx, stack, database_url)
    duration = min(MAX_LOAD_S, max(ctx.load_s, math.ceil(1.2 * MIN_EVENTS / max(warm.ok_per_s, 1))))
    count = max(MIN_EVENTS, int(2 * warm.ok_per_s * duration) + 500)
    created = int(time.time())
    requests = signed(ctx, stack, template, "bench_m", count, created)  # signed before the CPU meter starts
    async with meter(stack.pids()) as cpu, machine_meter() as machine, profiled(ctx.profile, {
            "webhook-entitlement": stack.children["entitlement"].pid,
            "webhook-checkout": stack.children["checkout"].pid}):
        load = await _closed_loop(stack, requests, duration)
    done = await finalized(database_url, "bench_m")
    unique_ok = load.counts["ok"] - load.counts["wrapped"]
    rate = unique_ok / load.seconds
    half = await _open_loop(ctx, stack, template, half_rate or rate / 2)
    half_done = await finalized(database_url, "bench_h")
    # Each account the measured load created renewed once, fewer than would run out at the
    # creation rate, so none is sent twice.
    renewing = write_signed(ctx.path("bench_m_renewal.requests"),
                            renewals(template, "bench_m", int(unique_ok), created), stack.secret)
    renewal_s = max(3.0, min(duration, 0.6 * unique_ok / max(rate, 1)))
    async with meter(stack.pids()) as renewal_cpu:
        renewed = await _closed_loop(stack, renewing, renewal_s)
    renewal_done = await finalized(database_url, "bench_m", "renewal_")
    cpu_used = {**cpu.used, "wrk": load.run.cores}
    return Ingest(template, warm.ok_per_s, load, duration, done, cpu_used, half, half_done, renewed, renewal_done,
                  {**renewal_cpu.used, "wrk": renewed.run.cores}, machine.others(cpu_used), stack.placement())


async def run(ctx: Context) -> list[Row]:
    database_url = await ctx.server.create("webhook", migrated=False)
    stack = await start_stack(database_url, ctx.work)
    try:
        got = await measure_ingest(ctx, stack, database_url)
    finally:
        await stack.stop()
    baseline_url = await ctx.server.create("pgbench")
    async with meter({}) as pg_cpu:
        base = await run_baseline(baseline_url, json.dumps(got.template).encode(), ctx.work, clients=CONCURRENCY,
                                  duration_s=got.duration_s)
    load, done, half, half_done = got.load, got.done, got.half, got.half_done
    value = ratio(got.rate, base.tps)
    all_final = done.applied >= got.unique_ok and done.assignments >= got.unique_ok
    ingest = Row(
        NAME, f"{got.rate:,.0f} events/s ({got.unique_ok:.0f} distinct 2xx in {load.seconds:.1f} s, p99 "
              f"{got.p99_ms:.0f} ms)",
        f"{base.tps:,.0f} TPS pgbench ({base.transactions} tx, {base.latency_ms:.1f} ms avg)",
        value, TARGET, value is not None and value >= MIN_RATIO and all_final and load.errors == 0,
        f"wrk -c{CONCURRENCY} -t1 + lua (core {LOAD_CPU}); pgbench -c{CONCURRENCY} -j2 -M prepared (core {LOAD_CPU})",
        f"finalized: {done.applied} applied events, {done.assignments} plan assignments, {load.errors} errors; "
        "ANALYZE after a 1,500-event warm-up; "
        f"{got.placement}; {describe_cpu(got.cpu)}; pgbench run: postgres "
        f"{pg_cpu.used['postgres']:.2f}, pgbench {base.run.cores:.2f}",
        {"wrk": load.counts, "warmup_ok_per_s": got.warmup_ok_per_s, "finalized": done.__dict__, "cpu": got.cpu,
         "pgbench": {"tps": base.tps, "transactions": base.transactions, "latency_ms": base.latency_ms,
                     "failed": base.failed, "cpu": {"postgres": pg_cpu.used["postgres"], "pgbench": base.run.cores}}})
    p99 = float(half["p99_ms"])
    latency = Row(
        LATENCY_NAME, f"p99 {p99:.1f} ms, p50 {half['p50_ms']:.1f} ms at {half['rate']:.0f} events/s",
        "", None, LATENCY_TARGET,
        p99 <= 50 and half["ok"] == half["sent"] and half_done.applied >= half["ok"],
        f"python -m bench.openloop, open loop at a fixed rate (core {LOAD_CPU})",
        f"{half['sent']} events, statuses {half['statuses']}, {half_done.applied} applied; latency from each "
        f"request's due time to its answer (sent only after the commit); max dispatch lag "
        f"{half['max_dispatch_lag_ms']} ms",
        {"openloop": half, "finalized": half_done.__dict__})
    renewed, renewal_done = got.renewed, got.renewal_done
    renewal = Row(
        RENEWAL_NAME, f"{got.renewal_rate:,.0f} events/s ({got.renewal_ok:.0f} distinct 2xx in {renewed.seconds:.1f} "
                      f"s, p99 {renewed.counts['p99_us'] / 1000:.0f} ms)",
        ingest.baseline, ratio(got.renewal_rate, base.tps), RENEWAL_TARGET, None,
        f"wrk -c{CONCURRENCY} -t1 + lua (core {LOAD_CPU})",
        f"`customer.subscription.updated` one period on for accounts the measured load created (each read "
        f"and derived again from its history); finalized: {renewal_done.applied} applied of "
        f"{renewal_done.recorded} recorded, {renewed.errors} errors; {describe_cpu(got.renewal_cpu)}",
        {"wrk": renewed.counts, "finalized": renewal_done.__dict__, "cpu": got.renewal_cpu})
    return [ingest, latency, renewal]
