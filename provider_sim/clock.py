"""Simulated time: real time plus an offset that only `advance` moves, in whole seconds."""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    def __init__(self, offset_s: int = 0, source: Callable[[], float] = time.time) -> None:
        self.offset_s = offset_s
        self._source = source

    def now(self) -> int:
        return int(self._source()) + self.offset_s

    def advance(self, seconds: int) -> int:
        if seconds < 0:
            raise ValueError("the simulated clock never goes back")
        self.offset_s += seconds
        return self.now()

    def reset(self) -> None:
        self.offset_s = 0
