"""(e) Change propagation: from a commit through replica A to replica B's CheckGate seeing it."""

from __future__ import annotations

import json
from typing import Any

import grpc

from service_runtime.auth import Role

from .context import Context
from .procs import LOAD_CPU, SERVER_CPU, python_module, run_tool
from .report import Row
from .services import TOKENS, load_example_catalog, start_entitlement

NAME = "e. change propagation A → B"
TARGET = "p99 ≤ 100 ms"
COUNT = 200


async def run(ctx: Context) -> list[Row]:
    database_url = await ctx.server.create("propagation", migrated=False)
    a = await start_entitlement("entitlement_a", database_url, ctx.work, SERVER_CPU)
    try:
        b = await start_entitlement("entitlement_b", database_url, ctx.work, SERVER_CPU)
        try:
            async with grpc.aio.insecure_channel(a.target) as channel:
                await load_example_catalog(channel)
            argv = python_module("bench.propagation_probe", a.target, b.target, TOKENS[Role.CHECKOUT],
                                 TOKENS[Role.PRODUCT], str(COUNT))
            run_ = await run_tool(argv, LOAD_CPU)
        finally:
            await b.child.stop()
    finally:
        await a.child.stop()
    result: dict[str, Any] = json.loads(run_.stdout)
    p99 = float(result["p99_ms"])
    return [Row(
        NAME, f"p99 {p99:.1f} ms, p50 {result['p50_ms']:.1f} ms, max {result['max_ms']:.1f} ms", "", None, TARGET,
        p99 <= 100 and result["missed"] == 0 and result["seen"] == COUNT,
        f"python -m bench.propagation_probe (core {LOAD_CPU})",
        f"{result['seen']} of {COUNT} accounts seen ({result['missed']} not within 5 s), {result['mean_polls']} "
        f"CheckGate polls on B per change; from A's ApplyProviderEvents reply to B's first allowing answer; "
        f"both replicas on core {SERVER_CPU}, one database",
        {"probe": result, "client_cores": run_.cores})]
