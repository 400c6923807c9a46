"""One product backend process for the client benchmark: `python -m bench.client_follower TARGET
TOKEN ACCOUNTS_FILE`.

Watches every account of the file through one `EntitlementsClient` (one multiplexed stream),
prints `ready` once it holds each account's state, then one JSON line `[account, revision, t]` for
every newer state it receives (t: CLOCK_MONOTONIC seconds, which every process on the machine
shares), until its standard input closes."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from selfserve.client import EntitlementsClient


async def follow(client: EntitlementsClient, account_id: str, held: dict[str, int], all_held: asyncio.Event,
                 wanted: int) -> None:
    async for entitlements in client.watch(account_id):
        revision = entitlements.revision
        if account_id not in held:
            held[account_id] = revision
            if len(held) == wanted:
                all_held.set()
        elif revision > held[account_id]:
            held[account_id] = revision
            print(json.dumps([account_id, revision, time.monotonic()]), flush=True)


async def main(target: str, token: str, accounts: list[str]) -> None:
    held: dict[str, int] = {}
    all_held = asyncio.Event()
    async with EntitlementsClient(target, token, max_accounts=len(accounts), max_staleness_s=5.0) as client:
        tasks = [asyncio.create_task(follow(client, a, held, all_held, len(accounts))) for a in accounts]
        await all_held.wait()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the driver closes it
        for task in tasks:
            task.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]).read_text().split()))
