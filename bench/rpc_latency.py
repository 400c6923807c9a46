"""GetEntitlements latency client: `python -m bench.rpc_latency TARGET TOKEN ACCOUNTS REQUESTS CONCURRENCY`.

Asks for accounts `acct_seed_<n>` with n drawn uniformly from 1..ACCOUNTS, CONCURRENCY calls in
flight, after a warm-up of REQUESTS / 10 calls. Prints one JSON object with latency percentiles in
ms and the number of calls that were not OK or came back empty."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import grpc

from bench.report import percentile
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc


async def _worker(stub: entitlement_pb2_grpc.EntitlementServiceStub, metadata: tuple[tuple[str, str]],
                  accounts: int, todo: list[int], latencies: list[float], problems: list[str]) -> None:
    while todo:
        todo.pop()
        request = pb.GetEntitlementsRequest(account_id=f"acct_seed_{random.randint(1, accounts)}")
        started = time.perf_counter()
        try:
            reply = await stub.GetEntitlements(request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            problems.append(exc.code().name)
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        if not reply.entitlements.plans:
            problems.append("no plan")


async def measure(target: str, token: str, accounts: int, requests: int, concurrency: int) -> dict[str, object]:
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
        for count, keep in ((max(requests // 10, 50), False), (requests, True)):
            latencies: list[float] = []
            problems: list[str] = []
            todo = list(range(count))
            started = time.perf_counter()
            await asyncio.gather(*(_worker(stub, metadata, accounts, todo, latencies, problems)
                                   for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            if keep:
                return {"requests": count, "elapsed_s": round(elapsed, 3), "problems": len(problems),
                        "problem_kinds": sorted(set(problems)),
                        **{f"p{q}_ms": round(percentile(latencies, q), 3) for q in (50, 90, 99)},
                        "mean_ms": round(sum(latencies) / max(len(latencies), 1), 3)}
    raise AssertionError("unreachable")


if __name__ == "__main__":
    target_, token_, accounts_, requests_, concurrency_ = sys.argv[1:6]
    print(json.dumps(asyncio.run(measure(target_, token_, int(accounts_), int(requests_), int(concurrency_)))))
