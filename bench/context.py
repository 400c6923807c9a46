"""What every scenario is handed: the database server, a work folder, durations, profiling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .db import Server


@dataclass(frozen=True)
class Context:
    server: Server
    work: Path
    load_s: float = 10.0  # each measured load
    warmup_s: float = 2.0
    profile: bool = False  # attach py-spy to the server under test (numbers then carry its overhead)
    accounts: int = 1_000_000  # the larger database of the GetEntitlements and CheckGate scenario
    history_accounts: int = 100_000  # accounts whose billing history webhook_large stores

    def path(self, name: str) -> Path:
        return self.work / name
