"""(i) The client library's in-process check against the CheckGate RPC, and (j) how fast a
committed change reaches every connected client.

(i) One account held by `selfserve.client.EntitlementsClient` in a process of its own
(bench/client_checks.py): `await client.check(...)` timed call by call, and checks per second in
a loop, against the service's CheckGate throughput measured by h2load at 64 streams in flight
(as in row c) in the same run.

(j) 1,000 accounts, each with a subscription, watched by several client processes
(bench/client_follower.py), every process watching every account on its one multiplexed stream.
Then changes, one account at a time (each a committed ApplyProviderEvents): the time from sending
each change to each client holding the account's new revision (CLOCK_MONOTONIC, shared by every
process), every change seen by every client."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack

import grpc

from service_runtime.auth import Role

from .checkgate import METHOD, REQUEST, STREAMS, grpc_frame
from .context import Context
from .procs import LOAD_CPU, SERVER_CPU, pinned, python_module, run_tool
from .report import Row, percentile
from .services import TOKENS, apply_events, load_example_catalog, start_entitlement, subscription_created
from .tools import h2load

NAME = "i. in-process check (selfserve.client) vs CheckGate RPC"
TARGET = "p50 < 5 µs; ≥ 100× CheckGate req/s"
FRESH_NAME = "j. commit → every client holds it (1,000 watched accounts)"
FRESH_TARGET = "p99 ≤ 100 ms"
CALLS = 200_000
ACCOUNTS = 1000
CLIENTS = 4
CHANGES = 200
PACE_S = 0.02  # between changes: a steady stream of commits, not a burst


async def _seed(target: str, accounts: list[str]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await load_example_catalog(channel)
        outcomes = await apply_events(channel, [subscription_created(a, 1) for a in accounts])
    if set(outcomes) != {"EVENT_OUTCOME_APPLIED"}:
        raise RuntimeError(f"setup events were not all applied: {sorted(set(outcomes))}")


async def _speed(ctx: Context, target: str) -> Row:
    run = await run_tool(python_module("bench.client_checks", target, TOKENS[Role.PRODUCT], REQUEST.account_id,
                                       REQUEST.gate, str(CALLS)), LOAD_CPU, timeout_s=300)
    checks = json.loads(run.stdout)
    body = ctx.path("checkgate-client.grpc")
    body.write_bytes(grpc_frame(REQUEST))
    headers = {"content-type": "application/grpc", "te": "trailers", "authorization": f"Bearer {TOKENS[Role.PRODUCT]}"}
    rpc = await h2load(f"http://{target}{METHOD}", body, headers, clients=1, streams=STREAMS, duration_s=ctx.load_s,
                       warmup_s=ctx.warmup_s, log_file=ctx.path("h2load-client.log"))
    times = checks["checks_per_s"] / rpc.req_per_s if rpc.req_per_s else None
    ok = (checks["allowed"] and checks["fallbacks_while_measuring"] == 0 and rpc.failed == 0)
    return Row(
        NAME, f"p50 {checks['p50_us']:.2f} µs, p99 {checks['p99_us']:.2f} µs per check; "
              f"{checks['checks_per_s']:,.0f} checks/s on one core",
        f"CheckGate RPC: {rpc.req_per_s:,.0f} req/s, p50 {rpc.p50_ms:.1f} ms (h2load, {STREAMS} streams)",
        times, TARGET, ok and checks["p50_us"] < 5 and times is not None and times >= 100,
        f"bench.client_checks, {CALLS:,} awaited checks timed one by one, then {CALLS:,} in a loop (core {LOAD_CPU}); "
        f"h2load -c1 -m{STREAMS} (core {LOAD_CPU})",
        f"service on core {SERVER_CPU}; ratio = in-process checks/s ÷ CheckGate req/s; "
        f"fallbacks to CheckGate while measuring: {checks['fallbacks_while_measuring']}",
        {"checks": checks, "rpc_req_per_s": rpc.req_per_s, "rpc_p50_ms": rpc.p50_ms})


async def _followers(ctx: Context, stack: AsyncExitStack, target: str, accounts: list[str]
                     ) -> list[asyncio.subprocess.Process]:
    listed = ctx.path("client-accounts.txt")
    listed.write_text("\n".join(accounts))
    procs = []
    for _ in range(CLIENTS):
        proc = await asyncio.create_subprocess_exec(
            *pinned(python_module("bench.client_follower", target, TOKENS[Role.PRODUCT], str(listed)), LOAD_CPU),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        stack.push_async_callback(_stop, proc)
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"a client did not get ready: {line!r}")
    return procs


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _seen(proc: asyncio.subprocess.Process, wanted: int) -> dict[str, float]:
    """Account -> when this client first held its changed revision, for `wanted` accounts."""
    assert proc.stdout is not None
    seen: dict[str, float] = {}
    while len(seen) < wanted:
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError("a client ended before it saw every change")
        account, _, at = json.loads(line)
        seen.setdefault(account, at)
    return seen


async def _freshness(target: str, procs: list[asyncio.subprocess.Process], accounts: list[str]) -> Row:
    changed = accounts[:CHANGES]
    watching = [asyncio.create_task(_seen(proc, len(changed))) for proc in procs]
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        for n, account in enumerate(changed):
            sent[account] = time.monotonic()
            [outcome] = await apply_events(channel, [subscription_created(account, 2, "team_seats_monthly")])
            answered[account] = time.monotonic()
            if outcome != "EVENT_OUTCOME_APPLIED":
                raise RuntimeError(f"change {n} was {outcome}")
            await asyncio.sleep(PACE_S)
    seen = await asyncio.wait_for(asyncio.gather(*watching), 60)
    from_send = [(client[a] - sent[a]) * 1000 for client in seen for a in changed]
    from_answer = [max(0.0, client[a] - answered[a]) * 1000 for client in seen for a in changed]
    worst = [max(client[a] for client in seen) for a in changed]
    every = [(w - sent[a]) * 1000 for w, a in zip(worst, changed, strict=True)]
    p99 = percentile(every, 99)
    return Row(
        FRESH_NAME, f"p50 {percentile(every, 50):.1f} ms, p99 {p99:.1f} ms, max {max(every):.1f} ms until the "
                    f"last of {CLIENTS} clients held each change",
        "", None, FRESH_TARGET, p99 <= 100,
        f"{CLIENTS} processes of bench.client_follower (core {LOAD_CPU}), each watching all {ACCOUNTS:,} accounts "
        f"on one stream; {CHANGES} changes, one every ~{PACE_S * 1000:.0f} ms plus its apply",
        f"from sending the change (the ApplyProviderEvents call, its commit included); per client and change: "
        f"p50 {percentile(from_send, 50):.1f} ms, p99 {percentile(from_send, 99):.1f} ms; from the call's answer: "
        f"p50 {percentile(from_answer, 50):.1f} ms, p99 {percentile(from_answer, 99):.1f} ms; service on core "
        f"{SERVER_CPU}",
        {"every_client_ms": every, "per_client_from_send_p99_ms": percentile(from_send, 99),
         "per_client_from_answer_p99_ms": percentile(from_answer, 99)})


async def run(ctx: Context) -> list[Row]:
    database_url = await ctx.server.create("client", migrated=False)
    service = await start_entitlement("entitlement_client", database_url, ctx.work, SERVER_CPU)
    try:
        accounts = [f"acct_follow_{n}" for n in range(ACCOUNTS)]
        await _seed(service.target, [REQUEST.account_id, *accounts])
        speed = await _speed(ctx, service.target)
        async with AsyncExitStack() as stack:
            procs = await _followers(ctx, stack, service.target, accounts)
            fresh = await _freshness(service.target, procs, accounts)
    finally:
        await service.child.stop()
    return [speed, fresh]
