"""A slow provider, on demand, for tests of what callers do when the provider is slow (their
timeouts, retries and deadlines): each API request (`/v1/...`) waits `delay_ms` before it is
handled, every one or only the next `times`. Set by `POST /_sim/latency`, read by
`GET /_sim/latency`, cleared by `delay_ms=0` or `/_sim/reset`. The control API, the hosted pages
and webhook delivery are never slowed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Latency:
    delay_ms: int = 0
    times: int | None = None  # None: every request until changed; otherwise the requests it still delays
    delayed: int = 0  # requests delayed since it was set

    def next_delay_s(self) -> float:
        """How long the request arriving now waits, counting it."""
        if not self.delay_ms or self.times == 0:
            return 0.0
        if self.times is not None:
            self.times -= 1
        self.delayed += 1
        return self.delay_ms / 1000

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
