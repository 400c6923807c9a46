"""The stack's processes: each a `python -m <module>` child that can be killed with SIGKILL and
started again on the same addresses, each life logging to a file of its own (its counters and log
lines are read from there once it is gone)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from chaos.counters import Life, parse

READY_TIMEOUT_S = 60.0


class Child:
    """One service process; `ready_url` answers 200 once it serves (its readiness probe)."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path, ready_url: str,
                 metrics_url: str | None, http: aiohttp.ClientSession) -> None:
        self.name, self.module, self.env = name, module, env
        self.log_dir, self.ready_url, self.metrics_url, self.http = log_dir, ready_url, metrics_url, http
        self.lives: list[Life] = []
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Starts a new life and waits until it is ready."""
        life = Life(self.log_dir / f"{self.name}.{len(self.lives) + 1}.log")
        self.lives.append(life)
        with life.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module, env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                stdout=asyncio.subprocess.DEVNULL, stderr=log)
        await self.wait_ready()

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Seconds until the readiness probe answered 200; fails when the process exits or time runs out."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if not self.running:
                raise RuntimeError(f"{self.name} exited with {self.proc and self.proc.returncode}; "
                                   f"see {self.lives[-1].log}")
            if await self.answers(self.ready_url):
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} was not ready within {timeout_s:.0f} s; see {self.lives[-1].log}")

    async def answers(self, url: str) -> bool:
        try:
            async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as reply:
                return reply.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def read_counters(self) -> None:
        """Reads this life's counters; keeps the last reading when the process cannot answer."""
        if self.metrics_url is None or not self.running:
            return
        try:
            async with self.http.get(self.metrics_url, timeout=aiohttp.ClientTimeout(total=5)) as reply:
                if reply.status == 200:
                    self.lives[-1].last = parse(await reply.text())
        except (aiohttp.ClientError, TimeoutError):
            return

    async def kill(self) -> None:
        """SIGKILL, right after a last reading of its counters."""
        await self.read_counters()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self.lives[-1].killed = True

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; for the end of the run."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def every(seconds: float, work: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Runs `work` every `seconds` until `stop` is set."""
    while not stop.is_set():
        await work()
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            continue
