"""Sampling profiles of a server under load with py-spy (`--profile`), summarized as the functions
holding the most samples, by themselves (self) and with what they call (total)."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from .report import RESULTS

LINE_NUMBER = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


@asynccontextmanager
async def profiled(enabled: bool, targets: Mapping[str, int]) -> AsyncIterator[None]:
    """Records each process of `targets` (name: pid) while the block runs and writes
    `results/profile-<name>.txt` (and the raw collapsed stacks beside it, for flame graph tools)."""
    tool = py_spy() if enabled else None
    if tool is None:
        yield
        return
    recorders = {}
    for name, pid in targets.items():
        recorders[name] = await asyncio.create_subprocess_exec(
            tool, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking",
            "--output", str(RESULTS / f"profile-{name}.folded"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        yield
    finally:
        for name, proc in recorders.items():
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 60)
            raw = RESULTS / f"profile-{name}.folded"
            if raw.exists():
                summary = summarize(raw.read_text())
                (RESULTS / f"profile-{name}.txt").write_text(
                    f"py-spy samples of {name} (pid {targets[name]})\n\n{summary}\n")


def _frame(text: str) -> str:
    return LINE_NUMBER.sub(")", text.strip())


def summarize(folded: str, top: int = 25) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return "no samples"

    def block(title: str, counts: Counter[str]) -> list[str]:
        return [title, *(f"{100 * n / samples:6.1f}%  {frame}" for frame, n in counts.most_common(top)), ""]

    return "\n".join([f"{samples} samples", "", *block("self", own), *block("total (inclusive)", total)])
