"""Running a service as a real process and reading its structured log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

from tests.support.waiting import eventually


class ServiceProcess:
    """A `python -m <module>` child whose JSON log lines are collected as they arrive."""

    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.module = module
        self.env = env
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> ServiceProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stderr
        async for raw in self.proc.stderr:
            text = raw.decode(errors="replace").rstrip()
            self.raw.append(text)
            try:
                self.lines.append(json.loads(text))
            except ValueError:
                continue

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    async def wait_for_event(self, name: str, timeout_s: float = 20) -> dict[str, Any]:
        async def seen() -> dict[str, Any] | None:
            if self.proc and self.proc.returncode is not None:
                raise AssertionError(f"{self.module} exited {self.proc.returncode}:\n" + "\n".join(self.raw))
            found = self.events(name)
            return found[0] if found else None

        return await eventually(seen, timeout_s=timeout_s, what=f"{self.module} to log {name!r}")

    async def terminate(self) -> int:
        assert self.proc
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        if self._reader:
            await asyncio.wait_for(self._reader, 5)
        return code

    async def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader:
            self._reader.cancel()

    async def wait_exit(self, timeout_s: float = 20) -> int:
        assert self.proc
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        if self._reader:
            await asyncio.wait_for(self._reader, 5)
        return code
