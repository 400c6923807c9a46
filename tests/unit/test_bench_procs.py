"""The benchmarks start each server as a service manager would: in a session of its own, so the
scheduler gives it its own share of the CPU rather than a part of the benchmark's; and on the core
it is given."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.procs import pinned, spawn

# Prints its session and the cores it may run on, as a JSON log line, then waits to be stopped.
REPORT = ("import json, os, sys, time; "
          "print(json.dumps({'event': 'placed', 'sid': os.getsid(0), 'cpus': sorted(os.sched_getaffinity(0))}), "
          "flush=True); time.sleep(60)")


async def test_a_server_runs_in_a_session_of_its_own(tmp_path: Path) -> None:
    child = spawn("reporter", [sys.executable, "-c", REPORT], {}, tmp_path)
    try:
        placed = await child.wait_for_event("placed", timeout_s=30)
    finally:
        await child.stop()
    assert placed["sid"] == child.pid  # it leads its own session
    assert placed["sid"] != os.getsid(0)


async def test_a_server_given_a_core_runs_on_it(tmp_path: Path) -> None:
    core = min(os.sched_getaffinity(0))
    child = spawn("reporter", [sys.executable, "-c", REPORT], {}, tmp_path, str(core))
    try:
        placed = await child.wait_for_event("placed", timeout_s=30)
    finally:
        await child.stop()
    assert placed["cpus"] == [core]


def test_no_core_given_runs_the_command_as_it_is() -> None:
    assert pinned(["wrk", "-c1"], None) == ["wrk", "-c1"]
    assert pinned(["wrk", "-c1"], "1") == ["taskset", "-c", "1", "wrk", "-c1"]
