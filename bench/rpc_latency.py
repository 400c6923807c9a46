"""Read latency client: `python -m bench.rpc_latency TARGET TOKEN ACCOUNTS REQUESTS CONCURRENCY [CheckGate FIRST]`.

GetEntitlements (the default) asks for accounts `acct_seed_<n>` with n drawn uniformly from
1..ACCOUNTS. CheckGate asks each account at most once, drawn without replacement from
FIRST..ACCOUNTS, so no answer can come from the service's gate cache (accounts below FIRST are the
ones asked before); the gate is one every seeded plan's bundle holds. CONCURRENCY calls in flight,
after a warm-up of REQUESTS / 10 calls. Prints one JSON object with latency percentiles in ms and
the number of calls that were not OK or came back empty (or, for CheckGate, not allowed)."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable

import grpc

from bench.report import percentile
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc

GATE = "export"  # in the Starter and the Pro bundle alike
Call = Callable[[str], Awaitable[str | None]]


def _caller(stub: entitlement_pb2_grpc.EntitlementServiceStub, method: str, metadata: tuple[tuple[str, str]]
            ) -> Call:
    """One call for an account: its problem, if any."""
    async def entitlements(account_id: str) -> str | None:
        reply = await stub.GetEntitlements(pb.GetEntitlementsRequest(account_id=account_id), metadata=metadata,
                                           timeout=10)
        return None if reply.entitlements.plans else "no plan"

    async def gate(account_id: str) -> str | None:
        reply = await stub.CheckGate(pb.CheckGateRequest(account_id=account_id, gate=GATE), metadata=metadata,
                                     timeout=10)
        return None if reply.allowed else "not allowed"

    return gate if method == "CheckGate" else entitlements


async def _worker(call: Call, todo: list[str], latencies: list[float], problems: list[str]) -> None:
    while todo:
        account_id = todo.pop()
        started = time.perf_counter()
        try:
            problem = await call(account_id)
        except grpc.aio.AioRpcError as exc:
            problems.append(exc.code().name)
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        if problem:
            problems.append(problem)


def accounts_asked(method: str, accounts: int, count: int, first: int) -> list[list[str]]:
    """The accounts of the warm-up, then of the measured calls."""
    warmup = max(count // 10, 50)
    if method == "CheckGate":
        drawn = [f"acct_seed_{n}" for n in random.sample(range(first, accounts + 1), warmup + count)]
        return [drawn[:warmup], drawn[warmup:]]
    return [[f"acct_seed_{random.randint(1, accounts)}" for _ in range(n)] for n in (warmup, count)]


async def measure(target: str, token: str, accounts: int, requests: int, concurrency: int,
                  method: str = "GetEntitlements", first: int = 1) -> dict[str, object]:
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        call = _caller(entitlement_pb2_grpc.EntitlementServiceStub(channel), method, metadata)
        for todo in accounts_asked(method, accounts, requests, first):
            count = len(todo)
            latencies: list[float] = []
            problems: list[str] = []
            started = time.perf_counter()
            await asyncio.gather(*(_worker(call, todo, latencies, problems) for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        return {"method": method, "requests": count, "elapsed_s": round(elapsed, 3), "problems": len(problems),
                "problem_kinds": sorted(set(problems)),
                **{f"p{q}_ms": round(percentile(latencies, q), 3) for q in (50, 90, 99)},
                "mean_ms": round(sum(latencies) / max(len(latencies), 1), 3)}


if __name__ == "__main__":
    target_, token_, accounts_, requests_, concurrency_ = sys.argv[1:6]
    method_, first_ = (sys.argv[6], int(sys.argv[7])) if len(sys.argv) > 6 else ("GetEntitlements", 1)
    print(json.dumps(asyncio.run(measure(target_, token_, int(accounts_), int(requests_), int(concurrency_),
                                         method_, first_))))
