"""The services' own counters: Prometheus text read from `/metrics`, summed over every life of a
process, and what a killed process counted after it was last read, taken from its own log.

A process's counters die with it. Each is read right before the SIGKILL, but an event applied
between that read and the kill would be missing from the sum; every event the entitlement service
counts is also logged in the same step (`provider_event` lines, `change_notifications` lines), so
the lines a killed life wrote tell exactly what its counters held when it died."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# name{label="value",...} value
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]

# The counters this run compares (name, labels that must match), and the log lines that mirror them.
Counted = tuple[str, dict[str, str]]
DUPLICATES: Counted = ("provider_events_total", {"outcome": "duplicate"})
LATE: Counted = ("provider_events_late_total", {})
UNPROVEN: Counted = ("change_notifications_unproven_total", {})
MISMATCHES: Counted = ("mismatches_found_total", {})
RECONCILE_RUNS: Counted = ("reconcile_runs_total", {"result": "completed"})


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            labels = frozenset(_LABEL.findall(match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def total(samples: Mapping[tuple[str, Labels], float], name: str, labels: Mapping[str, str]) -> int:
    """The sum of `name` over every sample carrying `labels` (others free)."""
    wanted = set(labels.items())
    return round(sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have))


@dataclass(frozen=True)
class Logged:
    """What one life of an entitlement replica counted, according to its log."""

    duplicates: int = 0
    late: int = 0
    unproven: int = 0


def logged(lines: Iterable[str]) -> Logged:
    duplicates = late = unproven = 0
    for raw in lines:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, dict):
            continue
        if line.get("event") == "provider_event":
            duplicates += line.get("outcome") == "duplicate"
            late += bool(line.get("late"))
        elif line.get("event") == "change_notifications" and line.get("proven") is False:
            unproven += 1
    return Logged(duplicates, late, unproven)


def logged_in(path: Path) -> Logged:
    with path.open(encoding="utf-8", errors="replace") as lines:
        return logged(lines)


@dataclass
class Life:
    """One run of one process: its log and the last reading of its counters."""

    log: Path
    last: Samples = field(default_factory=dict)
    killed: bool = False

    def counted(self, counter: tuple[str, Mapping[str, str]]) -> int:
        return total(self.last, *counter)
