"""(d) GetEntitlements and uncached CheckGate latency with 1,000 accounts stored, then with 1,000,000
(same process)."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc

from service_runtime.auth import Role

from .context import Context
from .procs import LOAD_CPU, SERVER_CPU, meter, python_module, run_tool
from .profiling import profiled
from .report import Row
from .seed import seed
from .services import TOKENS, Entitlement, load_example_catalog, start_entitlement

NAME = "d. GetEntitlements, many vs 1k accounts"
TARGET = "p50 ratio ≤ 1.2"
GATE_NAME = "d. CheckGate uncached, many vs 1k accounts"
SMALL = 1_000
REQUESTS, CONCURRENCY = 2000, 2
# Each CheckGate call asks an account never asked before, so no answer comes from the gate cache:
# with 1,000 accounts stored, 900 measured calls after a warm-up of 90.
GATE_REQUESTS = 900


async def _measure(ctx: Context, service: Entitlement, accounts: int, method: str = "GetEntitlements"
                   ) -> tuple[dict[str, Any], dict[str, float]]:
    gate = method == "CheckGate"
    # CheckGate at the larger size asks only accounts added after the smaller size was asked.
    first = SMALL + 1 if gate and accounts > SMALL else 1
    argv = python_module("bench.rpc_latency", service.target, TOKENS[Role.PRODUCT], str(accounts),
                         str(GATE_REQUESTS if gate else REQUESTS), str(CONCURRENCY), method, str(first))
    async with meter({"service": service.child.pid}) as cpu, profiled(
            ctx.profile, {f"{method.lower()}-{accounts}": service.child.pid}):
        run = await run_tool(argv, LOAD_CPU)
    result: dict[str, Any] = json.loads(run.stdout)
    return result, {**cpu.used, "client": run.cores}


def _latency(result: dict[str, Any]) -> str:
    return f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"


async def run(ctx: Context) -> list[Row]:
    database_url = await ctx.server.create("entitlements", migrated=False)
    service = await start_entitlement("entitlement_reads", database_url, ctx.work, SERVER_CPU)
    try:
        async with grpc.aio.insecure_channel(service.target) as channel:
            await load_example_catalog(channel)
        await seed(database_url, 1, SMALL)
        small, small_cpu = await _measure(ctx, service, SMALL)
        small_gate, small_gate_cpu = await _measure(ctx, service, SMALL, "CheckGate")
        started = time.monotonic()
        await seed(database_url, SMALL + 1, ctx.accounts)
        seed_s = time.monotonic() - started
        large, large_cpu = await _measure(ctx, service, ctx.accounts)
        large_gate, large_gate_cpu = await _measure(ctx, service, ctx.accounts, "CheckGate")
    finally:
        await service.child.stop()
    return [_row(ctx, NAME, small, large, seed_s, small_cpu, large_cpu, REQUESTS, "random accounts"),
            _row(ctx, GATE_NAME, small_gate, large_gate, seed_s, small_gate_cpu, large_gate_cpu, GATE_REQUESTS,
                 "accounts never asked before (uncached)")]


def _row(ctx: Context, name: str, small: dict[str, Any], large: dict[str, Any], seed_s: float,
         small_cpu: dict[str, float], large_cpu: dict[str, float], requests: int, asked: str) -> Row:
    p50 = large["p50_ms"] / small["p50_ms"] if small["p50_ms"] else None
    p99 = large["p99_ms"] / small["p99_ms"] if small["p99_ms"] else None
    problems = small["problems"] + large["problems"]
    return Row(
        name, f"{_latency(large)} at {ctx.accounts:,} accounts", f"{_latency(small)} at {SMALL:,} accounts",
        round(p50, 3) if p50 else None, TARGET, p50 is not None and p50 <= 1.2 and problems == 0,
        f"python -m bench.rpc_latency, {CONCURRENCY} in flight, {requests} calls, {asked} (core {LOAD_CPU})",
        f"p99 ratio {p99:.2f}; rows per account: 1-2 subscriptions, items, plan assignments, bindings, 3 issued "
        f"grants, 4 audit rows (seeded in SQL in {seed_s:.0f} s); service on core {SERVER_CPU}; CPU cores used at "
        f"{ctx.accounts:,}: service {large_cpu['service']:.2f}, postgres {large_cpu['postgres']:.2f}, client "
        f"{large_cpu['client']:.2f}; calls failed, empty or not allowed: {problems}",
        {"small": small, "large": large, "seed_s": seed_s, "cpu": {"small": small_cpu, "large": large_cpu}})
