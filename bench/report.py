"""Result rows, the markdown table, and the files they are written to."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .procs import layout_note

RESULTS = Path(__file__).resolve().parent / "results"
NOT_MEASURED = "not measured"
COLUMNS = ("scenario", "measured", "baseline", "ratio", "target", "pass", "generator", "notes")


@dataclass
class Row:
    scenario: str
    measured: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None
    generator: str
    notes: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}"
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[self.passed]
        return [self.scenario, self.measured, self.baseline, ratio, self.target, verdict, self.generator, self.notes]


def failed_row(scenario: str, target: str, error: BaseException) -> Row:
    return Row(scenario, NOT_MEASURED, "", None, target, None, "", f"error: {type(error).__name__}: {error}")


def table(rows: list[Row]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    out = [line(list(COLUMNS)), line(["---"] * len(COLUMNS))]
    out += [line(row.cells()) for row in rows]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    # Which build runs the services matters as much as the version: see the README's "The interpreter".
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "interpreter": os.path.realpath(sys.executable), "platform": platform.platform(),
            "layout": layout_note()}


def write(rows: list[Row], command: str, started: datetime, name: str = "latest") -> tuple[Path, Path]:
    RESULTS.mkdir(exist_ok=True)
    info = machine()
    header = (f"Run {started.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC')} with `{command}` on "
              f"{info['cpus']} cores, Python {info['python']} ({info['interpreter']}); {info['layout']}.\n\n")
    markdown = RESULTS / f"{name}.md"
    markdown.write_text(header + table(rows) + "\n")
    raw = RESULTS / f"{name}.json"
    raw.write_text(json.dumps({"started": started.isoformat(), "command": command, "machine": info,
                               "rows": [asdict(r) for r in rows]}, indent=2, default=str) + "\n")
    return markdown, raw


def ratio(measured: float, baseline: float) -> float | None:
    return round(measured / baseline, 3) if baseline else None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of `values` (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
