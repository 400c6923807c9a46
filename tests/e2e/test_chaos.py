"""The fault-injection run, small: about a thousand provider events over sixty accounts, every
fault the full run injects (each service SIGKILLed twice, every database connection cut twice,
PostgreSQL restarted, one replica's notification connection black-holed), then every account on
every replica compared with the reference computed from the provider's final state."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from chaos.faults import KIND_NAMES

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def figure(report: str, row: str) -> str:
    found = re.search(rf"^\| {re.escape(row)}[^|]* \| ([^|]+) \|$", report, re.MULTILINE)
    assert found, f"no row {row!r} in the report:\n{report}"
    return found.group(1).strip()


def number(text: str) -> int:
    return int(text.split()[0].replace(",", ""))


async def test_the_small_fault_run_ends_with_every_account_as_the_provider_says(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chaos", "--small", "--log-dir", str(tmp_path), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 900)
    shown = out.decode(errors="replace")
    assert proc.returncode == 0, f"the run failed (logs in {tmp_path}):\n{shown[-6000:]}"
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert report.rstrip().endswith("PASSED")
    assert number(figure(report, "provider events")) >= 1000
    assert number(figure(report, "events delivered again on purpose")) > 0
    assert number(figure(report, "events never delivered")) > 0
    for kind in KIND_NAMES.values():
        assert number(figure(report, f"fault: {kind}")) >= 1, kind
    assert number(figure(report, "fault: SIGKILL and restart")) >= 8  # every service, twice
    assert figure(report, "**lost**") == "0"
    assert figure(report, "**doubled**") == "0"
    assert "wrong" not in report
