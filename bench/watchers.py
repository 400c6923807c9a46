"""(f) Uncached CheckGate latency while 1,000 WatchEntitlements streams wake: a catalog change wakes
every stream at once and clears the gate cache, so each stream reads its account again (after its
own random delay within the spread, 5 s for 1,000 streams, through a quarter of the connection pool) while
callers' CheckGate answers must all be read from the database too. Against the same calls on the
same process with no streams open and nothing changing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.support.provider import example_catalog_request

from .context import Context
from .procs import LOAD_CPU, ROOT, SERVER_CPU, describe_cpu, meter, pinned, python_module
from .profiling import profiled
from .report import Row, percentile, ratio
from .services import TOKENS, Entitlement, apply_events, bearer, load_example_catalog, start_entitlement
from .services import subscription_created as created

NAME = "f. CheckGate while 1,000 watchers wake"
TARGET = "p99 < 20 ms with 1,000 watchers and a catalog change"
# The service caps the calls in progress, streams included (ENTITLEMENT_GRPC_MAX_IN_FLIGHT, 1,024 by
# default): a CheckGate refused for want of room shows in the outcomes.
WATCHERS = 1000
# One HTTP/2 connection carries every stream: the service leaves gRPC's default, no limit on
# concurrent streams. Each channel more would open a connection of its own.
CHANNELS = 1
# CheckGate calls per second: about what one caller sending each call when the last was answered
# would send, a few hundred per window, without letting a slow answer hide the calls behind it.
RATE = 200.0
LEAD_S = 1.0  # calls before each measured window, so the client's connection is warm
STORM_BUDGET_S = 10.0  # the longest storm the second client has accounts for
# The service reads the same variables with the same defaults (entitlement_service/settings.py).
SPREAD_S = max(float(os.environ.get("WATCH_WAKE_SPREAD_S", "1")),
               WATCHERS / float(os.environ.get("WATCH_WAKES_PER_S", "200")))
POOL_MAX = int(os.environ.get("DB_POOL_MAX", "10"))
# Added to the bundle of the plan every account holds: each stream's next message must name it.
NEW_GATE = "bench_watch_storm"
WATCHED, ASKED = "acct_watch_", "acct_ask_"
APPLYING = 8  # setup calls in flight


@dataclass(frozen=True)
class Window:
    """The calls due within a window: latencies of the answered ones, outcomes of all, and the time
    the same calls spent in the service's handler (from its log lines)."""

    latencies_ms: list[float]
    outcomes: dict[str, int]
    handler_ms: list[float]

    @property
    def problems(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != "OK")

    def raw(self) -> dict[str, Any]:
        return {"calls": sum(self.outcomes.values()), "outcomes": self.outcomes,
                **{f"p{q}_ms": round(percentile(self.latencies_ms, q), 3) for q in (50, 90, 99)},
                "max_ms": round(max(self.latencies_ms, default=0.0), 3),
                **{f"handler_p{q}_ms": round(percentile(self.handler_ms, q), 3) for q in (50, 99)}}

    def text(self) -> str:
        return (f"p50 {percentile(self.latencies_ms, 50):.1f} ms, p99 {percentile(self.latencies_ms, 99):.1f} ms "
                f"(max {max(self.latencies_ms, default=0.0):.1f} ms, {sum(self.outcomes.values())} calls)")

    def handler_text(self) -> str:
        return f"p50 {percentile(self.handler_ms, 50):.1f} ms, p99 {percentile(self.handler_ms, 99):.1f} ms"


def window(result: dict[str, Any], first: int, start: float, end: float, handled: dict[str, float]) -> Window:
    """Call i of a client started at account `first` asked about account ASKED<first + i>."""
    due = [(f"{ASKED}{first + i}", ms, outcome) for i, (at, ms, outcome) in enumerate(result["calls"])
           if start <= at < end]
    return Window([ms for _, ms, outcome in due if outcome == "OK"], dict(Counter(o for _, _, o in due)),
                  [handled[account_id] for account_id, _, _ in due if account_id in handled])


def handler_times(service: Entitlement) -> dict[str, float]:
    """Per account asked, the duration its CheckGate line logged: the time from the handler's start
    to its answer, which leaves out the wait for the event loop before it and the transport."""
    return {e["account_id"]: float(e["duration_ms"]) for e in service.child.log_events()
            if str(e.get("method", "")).endswith("/CheckGate") and "account_id" in e and "duration_ms" in e}


@dataclass
class Probe:
    """A running `bench.gate_latency`, and when its first call was due (monotonic clock)."""

    proc: asyncio.subprocess.Process
    start: float


@asynccontextmanager
async def probe(ctx: Context, service: Entitlement, first: int, count: int, label: str) -> AsyncIterator[Probe]:
    argv = python_module("bench.gate_latency", service.target, TOKENS[Role.PRODUCT], ASKED, str(first), str(count),
                         str(RATE))
    with ctx.path(f"gate_latency_{label}.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*pinned(argv, LOAD_CPU), cwd=ROOT, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=log)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                raise RuntimeError(f"bench.gate_latency exited {await proc.wait()}; see {log.name}")
            yield Probe(proc, json.loads(line)["start"])
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def finish(running: Probe, end: float) -> dict[str, Any]:
    """Tells the client to send no call due from `end` on; returns its calls once all are answered."""
    assert running.proc.stdin is not None and running.proc.stdout is not None
    running.proc.stdin.write(f"{end!r}\n".encode())
    running.proc.stdin.close()
    out = await asyncio.wait_for(running.proc.stdout.read(), 60)
    if await running.proc.wait() != 0:
        raise RuntimeError(f"bench.gate_latency exited {running.proc.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


async def until(monotonic: float) -> None:
    await asyncio.sleep(max(0.0, monotonic - time.monotonic()))


class Streams:
    """WatchEntitlements streams on distinct accounts, and when each saw the catalog change."""

    def __init__(self, accounts: list[str]) -> None:
        self.accounts = accounts
        self.opened = 0
        self.updated: dict[str, float] = {}  # account: when its message naming NEW_GATE arrived
        self.other = 0  # later messages that do not name it (none are expected)
        self.errors: Counter[str] = Counter()
        self.all_open = asyncio.Event()
        self.all_updated = asyncio.Event()
        self.channels: list[grpc.aio.Channel] = []
        self.tasks: list[asyncio.Task[None]] = []

    def _count(self) -> None:
        """Sets the events once every stream has its message, or has failed and will send none."""
        if self.opened + sum(self.errors.values()) >= len(self.accounts):
            self.all_open.set()
        if len(self.updated) + sum(self.errors.values()) >= len(self.accounts):
            self.all_updated.set()

    async def _follow(self, channel: grpc.aio.Channel, account_id: str) -> None:
        call = entitlement_pb2_grpc.EntitlementServiceStub(channel).WatchEntitlements(
            pb.WatchEntitlementsRequest(account_id=account_id), metadata=bearer(Role.PRODUCT))
        try:
            async for message in call:
                if message.initial:
                    self.opened += 1
                elif NEW_GATE in message.entitlements.gates and account_id not in self.updated:
                    self.updated[account_id] = time.monotonic()
                else:
                    self.other += 1
                self._count()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.errors[exc.code().name] += 1
                self._count()

    async def open(self, target: str) -> None:
        self.channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(CHANNELS)]
        self.tasks = [asyncio.create_task(self._follow(self.channels[n % CHANNELS], account_id))
                      for n, account_id in enumerate(self.accounts)]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()


def change() -> pb.UpsertCatalogRequest:
    """The example catalog's Pro bundle with one more gate: every account here holds Pro, so every
    stream's gates change. A bundle is read when entitlements are, so no account is derived again:
    what follows is the wake-up alone."""
    pro = next(b for b in example_catalog_request().config.gate_bundles if b.code == "pro")
    return pb.UpsertCatalogRequest(config=pb.CatalogConfig(gate_bundles=[
        pb.GateBundle(code="pro", gates=[*pro.gates, NEW_GATE])]))


async def _hold_plans(service: Entitlement, accounts: list[str]) -> None:
    events = [created(account_id, n) for n, account_id in enumerate(accounts)]
    async with grpc.aio.insecure_channel(service.target) as channel:
        await load_example_catalog(channel)
        done = await asyncio.gather(*(apply_events(channel, events[n::APPLYING]) for n in range(APPLYING)))
    outcomes = {outcome for chunk in done for outcome in chunk}
    if outcomes != {"EVENT_OUTCOME_APPLIED"}:
        raise RuntimeError(f"setup events were not all applied: {sorted(outcomes)}")


@dataclass(frozen=True)
class Calls:
    """One client's calls, from account ASKED<first>, and the window measured among them."""

    first: int
    result: dict[str, Any]
    start: float
    end: float
    cpu: dict[str, float]

    def window(self, handled: dict[str, float]) -> Window:
        return window(self.result, self.first, self.start, self.end, handled)

    @property
    def covered(self) -> bool:
        """Whether the client still had accounts to ask about when the window ended."""
        return max((at for at, _, _ in self.result["calls"]), default=0.0) >= self.end - 1 / RATE - 1e-5


async def _baseline(ctx: Context, service: Entitlement, count: int) -> Calls:
    async with probe(ctx, service, 0, count, "baseline") as running:
        start = running.start + LEAD_S
        await until(start)
        async with meter({"service": service.child.pid, "client": running.proc.pid}) as cpu:
            await until(start + ctx.load_s)
        return Calls(0, await finish(running, start + ctx.load_s), start, start + ctx.load_s, cpu.used)


@dataclass(frozen=True)
class Change:
    """What UpsertCatalog answered: how long it took, and the entries it changed."""

    answered_s: float
    changed: list[str]


async def _storm(ctx: Context, service: Entitlement, streams: Streams, first: int, count: int) -> tuple[Calls, Change]:
    async with probe(ctx, service, first, count, "storm") as running, \
            grpc.aio.insecure_channel(service.target) as channel:
        await until(running.start + LEAD_S)
        stub = service.stub(channel)
        async with meter({"service": service.child.pid, "client": running.proc.pid, "watchers": os.getpid()}) as cpu, \
                profiled(ctx.profile, {"watchers-entitlement": service.child.pid}):
            changed_at = time.monotonic()
            reply = await stub.UpsertCatalog(change(), metadata=bearer(Role.OPERATOR), timeout=30)
            answered = Change(time.monotonic() - changed_at,
                              [f"{entry.kind} {entry.id}" for entry in reply.entries if entry.changed])
            if not answered.changed:
                raise RuntimeError("the catalog change changed nothing; no stream would wake")
            with contextlib.suppress(TimeoutError):  # reported: fewer streams updated than opened
                await asyncio.wait_for(streams.all_updated.wait(), STORM_BUDGET_S)
            # The storm lasts until the last stream has its message, and at least the spread: a
            # stream still waiting out its delay has not read yet. Streams left without one keep
            # it going for as long as they were waited for.
            if len(streams.updated) < len(streams.accounts):
                end = time.monotonic()
            else:
                end = max([changed_at + SPREAD_S, *streams.updated.values()])
                await until(end)
        return Calls(first, await finish(running, end), changed_at, end, cpu.used), answered


async def run(ctx: Context) -> list[Row]:
    baseline_calls = math.ceil(RATE * (LEAD_S + ctx.load_s + 1))
    storm_calls = math.ceil(RATE * (LEAD_S + STORM_BUDGET_S))
    watched = [f"{WATCHED}{n}" for n in range(WATCHERS)]
    database_url = await ctx.server.create("watchers", migrated=False)
    service = await start_entitlement("entitlement_watchers", database_url, ctx.work, SERVER_CPU)
    streams = Streams(watched)
    try:
        started = time.monotonic()
        await _hold_plans(service, watched + [f"{ASKED}{n}" for n in range(baseline_calls + storm_calls)])
        setup_s = time.monotonic() - started
        base = await _baseline(ctx, service, baseline_calls)
        started = time.monotonic()
        await streams.open(service.target)
        await asyncio.wait_for(streams.all_open.wait(), 120)
        open_s = time.monotonic() - started
        if streams.opened < WATCHERS:
            raise RuntimeError(f"{streams.opened} of {WATCHERS} streams opened; errors {dict(streams.errors)}")
        storm, answered = await _storm(ctx, service, streams, baseline_calls, storm_calls)
    finally:
        await streams.close()
        await service.child.stop()
    handled = handler_times(service)
    return [_row(ctx, base, base.window(handled), storm, storm.window(handled), answered, streams, setup_s, open_s)]


def _row(ctx: Context, base: Calls, quiet: Window, storm: Calls, during: Window, answered: Change, streams: Streams,
         setup_s: float, open_s: float) -> Row:
    delays = sorted(at - storm.start for at in streams.updated.values())
    storm_s = storm.end - storm.start
    p99 = percentile(during.latencies_ms, 99)
    updated = len(streams.updated)
    covered = storm.covered and base.covered
    passed = (p99 < 20 and updated == WATCHERS and not streams.errors and during.problems == 0
              and quiet.problems == 0 and covered)
    lag = storm.result["max_dispatch_lag_ms"], base.result["max_dispatch_lag_ms"]
    return Row(
        NAME, f"{during.text()} during the storm: {updated:,} of {WATCHERS:,} streams updated, the last "
              f"{storm_s:.2f} s after the change",
        f"{quiet.text()} with no streams open", ratio(p99, percentile(quiet.latencies_ms, 99)), TARGET, passed,
        f"python -m bench.gate_latency, open loop at {RATE:.0f} calls/s, each account asked once (core {LOAD_CPU}); "
        f"{WATCHERS:,} WatchEntitlements streams on {CHANNELS} grpc.aio channel{'s' if CHANNELS > 1 else ''} in "
        "the benchmark process",
        f"window from just before UpsertCatalog (changed: {', '.join(answered.changed)}; answered in "
        f"{answered.answered_s * 1000:.0f} ms) to the last stream's message naming the new gate, at least "
        f"wake spread {SPREAD_S:g} s; streams' messages after the change: first "
        f"{percentile(delays, 0):.2f} s, p50 {percentile(delays, 50):.2f} s; other messages {streams.other}, "
        f"stream errors {dict(streams.errors) or 0}; CheckGate outcomes {during.outcomes} (baseline "
        f"{quiet.outcomes}); time in the service's handler, from its log lines: {during.handler_text()} (baseline "
        f"{quiet.handler_text()}); client at most {lag[0]:.1f} ms behind its schedule (baseline {lag[1]:.1f} ms)"
        f"{'' if covered else '; the client ran out of accounts before its window ended'}; {WATCHERS:,} streams "
        f"opened in {open_s:.1f} s, their reads through {max(1, POOL_MAX // 4)} of {POOL_MAX} pooled connections; "
        f"service on core {SERVER_CPU}, PostgreSQL and the benchmark process unpinned; {describe_cpu(storm.cpu)} "
        f"(baseline: service {base.cpu['service']:.2f}, postgres {base.cpu['postgres']:.2f}, client "
        f"{base.cpu['client']:.2f})",
        {"storm": {**during.raw(), "storm_s": storm_s, "answered_s": answered.answered_s, "changed": answered.changed,
                   "max_dispatch_lag_ms": lag[0], "covered": storm.covered},
         "baseline": {**quiet.raw(), "max_dispatch_lag_ms": lag[1], "covered": base.covered},
         "streams": {"opened": streams.opened, "updated": updated, "other": streams.other,
                     "errors": dict(streams.errors), "open_s": open_s,
                     **{f"update_p{q}_s": round(percentile(delays, q), 3) for q in (50, 99, 100)}},
         "setup_s": setup_s, "rate": RATE, "spread_s": SPREAD_S, "load_s": ctx.load_s,
         "cpu": {"storm": storm.cpu, "baseline": base.cpu}})
