"""Uncached CheckGate latency client: `python -m bench.gate_latency TARGET TOKEN PREFIX FIRST COUNT RATE`.

Asks CheckGate about accounts PREFIX<FIRST> .. PREFIX<FIRST + COUNT - 1>, each once, so no answer can
come from the service's cache. Call i is due at start + i / RATE whatever the answers do (open loop:
a slow answer cannot hold the later calls back, nor hide them) and is timed with
`time.perf_counter` from when it was due to when its answer was read.

Times are exchanged on the monotonic clock, which every process on the machine shares. A first line
is printed as soon as it starts, `{"start": T}` with T the first call's due time; the caller ends
the run by writing a time to stdin and closing it: calls due before that time are all sent, even
when this process learns of the end late (a call it skipped would be a slow one left out), and
none after. Then one JSON object holds every call as [due, ms, outcome]."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import sys
import time

import grpc

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc

GATE = "api_access"  # in the Pro bundle the accounts hold: every answer should allow it


async def _call(stub: entitlement_pb2_grpc.EntitlementServiceStub, metadata: tuple[tuple[str, str]],
                account_id: str, due: float) -> tuple[float, str]:
    try:
        reply = await stub.CheckGate(pb.CheckGateRequest(account_id=account_id, gate=GATE), metadata=metadata,
                                     timeout=10)
        outcome = "OK" if reply.allowed else "DENIED"
    except grpc.aio.AioRpcError as exc:
        outcome = exc.code().name
    return (time.perf_counter() - due) * 1000, outcome


async def run(target: str, token: str, prefix: str, first: int, count: int, rate: float) -> dict[str, object]:
    metadata = (("authorization", f"Bearer {token}"),)
    # The schedule runs on perf_counter; its due times are reported on the monotonic clock.
    to_monotonic = time.monotonic() - time.perf_counter()
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    stopped = asyncio.ensure_future(stdin.read())  # the end time, once stdin closes
    stop_at = math.inf
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
        start = time.perf_counter() + 0.05
        print(json.dumps({"start": start + to_monotonic}), flush=True)
        calls: list[tuple[float, asyncio.Task[tuple[float, str]]]] = []
        late = 0.0
        for i in range(count):
            due = start + i / rate
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            if stopped.done():
                text = stopped.result().strip()
                stop_at = float(text) - to_monotonic if text else -math.inf  # closed without a time: now
            if due >= stop_at:
                break
            late = max(late, time.perf_counter() - due)
            calls.append((due, asyncio.create_task(_call(stub, metadata, f"{prefix}{first + i}", due))))
        answers = await asyncio.gather(*(task for _, task in calls))
    stopped.cancel()
    return {"rate": rate, "sent": len(calls), "ran_out": len(calls) == count,
            "max_dispatch_lag_ms": round(late * 1000, 2),
            "calls": [[round(due + to_monotonic, 6), round(ms, 3), outcome]
                      for (due, _), (ms, outcome) in zip(calls, answers, strict=True)]}


if __name__ == "__main__":
    # A pause of this process would be counted as the service's latency (see bench/openloop.py): its
    # garbage, a task per call kept to the end of a short run, is left to the end.
    gc.disable()
    target_, token_, prefix_, first_, count_, rate_ = sys.argv[1:7]
    print(json.dumps(asyncio.run(run(target_, token_, prefix_, int(first_), int(count_), float(rate_)))))
