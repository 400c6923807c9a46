"""Change propagation client: `python -m bench.propagation_probe A B CHECKOUT_TOKEN PRODUCT_TOKEN COUNT`.

For each of COUNT new accounts: asks replica B's CheckGate first (B caches "not allowed"), applies a
subscription event through replica A's ApplyProviderEvents, then polls B's CheckGate without pause
until it allows the gate. Prints one JSON object: ms from A's reply to B's first allowing answer."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

from bench.report import percentile
from bench.services import subscription_created
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc

GATE = "api_access"
GIVE_UP_S = 5.0


async def probe(a: str, b: str, checkout: str, product: str, count: int) -> dict[str, object]:
    apply_meta, read_meta = (("authorization", f"Bearer {checkout}"),), (("authorization", f"Bearer {product}"),)
    delays: list[float] = []
    polls: list[int] = []
    missed = 0
    async with grpc.aio.insecure_channel(a) as channel_a, grpc.aio.insecure_channel(b) as channel_b:
        stub_a = entitlement_pb2_grpc.EntitlementServiceStub(channel_a)
        stub_b = entitlement_pb2_grpc.EntitlementServiceStub(channel_b)
        for n in range(count):
            account = f"acct_prop_{n}"
            check = pb.CheckGateRequest(account_id=account, gate=GATE)
            if (await stub_b.CheckGate(check, metadata=read_meta)).allowed:
                raise RuntimeError(f"{account} is allowed before its event")
            request = pb.ApplyProviderEventsRequest(events=[subscription_created(account, n)])
            await stub_a.ApplyProviderEvents(request, metadata=apply_meta)
            applied = time.perf_counter()
            tries = 0
            while True:
                tries += 1
                if (await stub_b.CheckGate(check, metadata=read_meta)).allowed:
                    delays.append((time.perf_counter() - applied) * 1000)
                    polls.append(tries)
                    break
                if time.perf_counter() - applied > GIVE_UP_S:
                    missed += 1
                    break
    mean_polls = round(sum(polls) / max(len(polls), 1), 1)
    return {"count": count, "seen": len(delays), "missed": missed, "mean_polls": mean_polls,
            **{f"p{q}_ms": round(percentile(delays, q), 2) for q in (50, 90, 99)},
            "max_ms": round(max(delays, default=0.0), 2)}


if __name__ == "__main__":
    a_, b_, checkout_, product_, count_ = sys.argv[1:6]
    print(json.dumps(asyncio.run(probe(a_, b_, checkout_, product_, int(count_)))))
