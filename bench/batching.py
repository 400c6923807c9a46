"""(a, detail) What webhook ingest costs per call to the entitlement service and per event, in each
process: the same signed webhooks as the ingest scenario at 4, 16 and 64 connections, so the
checkout service's calls carry from one or two events to fifteen or more. Each process's CPU per
event is fitted to `per event + per call / events per call` (least squares over the levels)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from .context import Context
from .procs import meter
from .report import Row
from .stack import Stack, start_stack
from .tools import wrk
from .webhook import signed, warm_up

NAME = "a. webhook ingest: CPU per call and per event"
TARGET = "none (what the half-rate tail is made of)"
CONNECTIONS = (4, 16, 64)
ROUNDS = 2  # each level this many times, the levels taking turns, so the machine's drift is shared
LOAD_S = 6.0
PROCESSES = ("checkout", "entitlement", "postgres")


@dataclass(frozen=True)
class Level:
    connections: int
    events_per_s: float
    events_per_call: float
    us_per_event: dict[str, float]


async def _calls(stack: Stack) -> float:
    """ApplyProviderEvents calls the entitlement service has answered."""
    async with aiohttp.ClientSession() as http, http.get(stack.metrics_url) as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("grpc_server_handling_seconds_count") and "ApplyProviderEvents" in line)


async def _level(ctx: Context, stack: Stack, template: dict[str, object], connections: int, n: int) -> Level:
    requests = signed(ctx, stack, template, f"bench_b{n}", 12_000)
    before = await _calls(stack)
    async with meter(stack.pids()) as cpu:
        load = await wrk(stack.webhook_url, requests, connections=connections, duration_s=LOAD_S)
    calls = await _calls(stack) - before
    events = load.counts["ok"] - load.counts["wrapped"]
    cpu_s = {name: cpu.used[name] * load.seconds for name in PROCESSES}
    return Level(connections, events / load.seconds, events / max(calls, 1),
                 {name: round(seconds / max(events, 1) * 1e6) for name, seconds in cpu_s.items()})


def fit(levels: list[Level], process: str) -> tuple[float, float]:
    """(µs per event, µs per call) for `process`: least squares of µs/event on 1/(events per call)."""
    xs = [1 / level.events_per_call for level in levels]
    ys = [level.us_per_event[process] for level in levels]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    per_call = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0.0
    return mean_y - per_call * mean_x, per_call


async def run(ctx: Context) -> list[Row]:
    database_url = await ctx.server.create("batching", migrated=False)
    stack = await start_stack(database_url, ctx.work)
    try:
        template, _ = await warm_up(ctx, stack, database_url)
        levels = [await _level(ctx, stack, template, connections, n)
                  for n, connections in enumerate(CONNECTIONS * ROUNDS)]
    finally:
        await stack.stop()
    fitted = {process: fit(levels, process) for process in PROCESSES}
    measured = "; ".join(f"{process} {per_call:,.0f} µs per call + {per_event:,.0f} per event"
                         for process, (per_event, per_call) in fitted.items())
    notes = "; ".join(
        f"{level.connections} connections: {level.events_per_call:.1f} events per call, {level.events_per_s:,.0f} "
        f"events/s, µs per event " + ", ".join(f"{p} {level.us_per_event[p]:,.0f}" for p in PROCESSES)
        for level in levels)
    return [Row(NAME, measured, "", None, TARGET, None,
                f"wrk -c{'/'.join(map(str, CONNECTIONS))} -t1 + lua, {ROUNDS} rounds, {LOAD_S:.0f} s each",
                notes, {"levels": [level.__dict__ for level in levels],
                        "fitted": {p: {"per_event_us": e, "per_call_us": c} for p, (e, c) in fitted.items()}})]
