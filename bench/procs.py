"""Child processes for the benchmarks: started with an optional CPU pin, logging to a file, and
CPU time read from /proc so every table row can say how the two cores were shared."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Servers on one core, load generators on the other; on a one-core machine nothing is pinned.
PINNED = (os.cpu_count() or 1) >= 2
SERVER_CPU = "0" if PINNED else None
LOAD_CPU = "1" if PINNED else None


def free_port() -> int:
    """A free port below Linux's ephemeral range, so outgoing connections cannot take it first."""
    while True:
        port = random.randint(20_000, 32_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@dataclass
class Child:
    """A long-running child (a service, a baseline server) whose stderr goes to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    cpus: str | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                found.append(entry)
        return found

    async def wait_for_event(self, event: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}; see {self.log_path}")
            found = [e for e in self.log_events() if e.get("event") == event]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} did not log {event!r} within {timeout_s} s; see {self.log_path}")

    async def wait_until_ready(self, url: str, timeout_s: float = 60) -> None:
        """Polls an HTTP readiness probe until it answers 200 (log lines depend on LOG_LEVEL)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited {self.proc.returncode}; see {self.log_path}")
                try:
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} was not ready at {url} within {timeout_s} s; see {self.log_path}")

    async def stop(self, timeout_s: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path, cpus: str | None = None) -> Child:
    """Starts a server in a session of its own, as a service manager or a container runtime starts
    one. Linux's scheduler shares the CPU between sessions first (autogroups) and only then between
    the processes of each: left in the benchmark's session, the servers would share one share with
    the benchmark and its load generator, while PostgreSQL has one of its own."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(pinned(argv, cpus), cwd=ROOT, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Child(name, proc, log_path, cpus)


@dataclass(frozen=True)
class ToolRun:
    stdout: str
    cpu_s: float
    wall_s: float

    @property
    def cores(self) -> float:
        return round(self.cpu_s / max(self.wall_s, 1e-9), 2)


async def run_tool(argv: Sequence[str], cpus: str | None = None, env: Mapping[str, str] | None = None,
                   timeout_s: float = 300) -> ToolRun:
    """Runs a load generator or client to completion; fails on a non-zero exit. Its CPU time is
    the growth of this process's reaped-children usage (one tool runs at a time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *pinned(argv, cpus), cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ToolRun(out.decode(errors="replace"), cpu, wall)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU used by named groups of processes while the `async with` block runs, in cores (CPU
    seconds per wall second). Sampled every 0.2 s, so processes that start or end inside the
    window (PostgreSQL backends of a pgbench run) still count."""

    def __init__(self, groups: Mapping[str, Callable[[], list[int]]]) -> None:
        self.groups = dict(groups)
        self.first: dict[str, dict[int, float]] = {}
        self.last: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}
        self._started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        for name, get in self.groups.items():
            self.last.setdefault(name, {}).update({pid: cpu_seconds(pid) for pid in get()})

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self._sample()

    async def __aenter__(self) -> CpuMeter:
        self._sample()
        self.first = {name: dict(values) for name, values in self.last.items()}
        self._started = time.monotonic()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sample()
        wall = max(time.monotonic() - self._started, 1e-9)
        for name, values in self.last.items():
            start = self.first.get(name, {})
            self.used[name] = round(sum(v - start.get(pid, 0.0) for pid, v in values.items()) / wall, 2)


def meter(children: Mapping[str, int], with_postgres: bool = True) -> CpuMeter:
    groups: dict[str, Callable[[], list[int]]] = {name: functools.partial(list, (pid,))
                                                  for name, pid in children.items()}
    if with_postgres:
        groups["postgres"] = postgres_pids
    return CpuMeter(groups)


def _busy_s() -> float:
    """CPU seconds every core has spent on anything but idling, since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


class MachineMeter:
    """Cores busy on the whole machine while the `async with` block runs, so a figure can say how
    much of the machine other work took meanwhile."""

    def __init__(self) -> None:
        self.busy = 0.0
        self._start = (0.0, 0.0)

    async def __aenter__(self) -> MachineMeter:
        self._start = (_busy_s(), time.monotonic())
        return self

    async def __aexit__(self, *_: object) -> None:
        busy, started = self._start
        self.busy = round((_busy_s() - busy) / max(time.monotonic() - started, 1e-9), 2)

    def others(self, used: Mapping[str, float]) -> float:
        """Cores busy beyond those `used` accounts for (with a CpuMeter's figures for the same block)."""
        return round(max(self.busy - sum(used.values()), 0.0), 2)


def machine_meter() -> MachineMeter:
    return MachineMeter()


def describe_cpu(used: Mapping[str, float]) -> str:
    return "CPU cores used: " + ", ".join(f"{name} {value:.2f}" for name, value in used.items())


def layout_note() -> str:
    if not PINNED:
        return "one core: nothing pinned"
    return f"servers pinned to core {SERVER_CPU}, generator to core {LOAD_CPU}"
