"""In-process gate checks for the client benchmark: `python -m bench.client_checks TARGET TOKEN
ACCOUNT GATE CALLS`.

Waits until the client holds the account's state (pushed by the watch stream), then times `CALLS`
`await client.check(account, gate)` one by one (perf_counter_ns around each call) and the same
number in one timed loop; prints one JSON object: p50/p99 per call in µs, checks per second, the
answer, and how many checks fell back to CheckGate while measuring (none expected)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time

from bench.report import percentile
from selfserve.client import EntitlementsClient


async def main(target: str, token: str, account_id: str, gate: str, calls: int) -> dict[str, object]:
    async with EntitlementsClient(target, token, max_staleness_s=30.0) as client:
        first = await client.check(account_id, gate)  # CheckGate, and the account joins the stream
        deadline = time.monotonic() + 30
        while client.cached(account_id, gate) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the watch stream never delivered the account's state")
            await asyncio.sleep(0.01)
        fallbacks = client.stats.fallbacks
        gc.disable()  # a collection inside a timed call would be this process's pause, not the check's
        durations = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            started = clock()
            await client.check(account_id, gate)
            durations.append(clock() - started)
        started = clock()
        for _ in range(calls):
            await client.check(account_id, gate)
        loop_s = (clock() - started) / 1e9
        gc.enable()
        return {"calls": calls, "p50_us": percentile([d / 1000 for d in durations], 50),
                "p99_us": percentile([d / 1000 for d in durations], 99), "checks_per_s": calls / loop_s,
                "allowed": first, "fallbacks_while_measuring": client.stats.fallbacks - fallbacks}


if __name__ == "__main__":
    target, token, account, gate, calls = sys.argv[1:6]
    print(json.dumps(asyncio.run(main(target, token, account, gate, int(calls)))))
