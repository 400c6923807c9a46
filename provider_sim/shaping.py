"""Delivery shaping: rules that make webhook delivery behave like a bad day at a real provider.

A rule applies to every delivery it matches (by endpoint and/or event type), or only to the next
`times` of them. The most recently added matching rule wins; `normal` with no filter clears all."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MODES = ("normal", "hold", "duplicate", "delay", "drop", "stale")
DEFAULT_STALE_S = 600
DEFAULT_DELAY_MS = 1000


@dataclass
class Rule:
    mode: str
    endpoint: str | None = None
    event_type: str | None = None
    count: int = 2
    delay_ms: int = 0
    stale_seconds: int = 0
    times: int | None = None  # None: until replaced; otherwise the deliveries it still applies to

    def matches(self, endpoint_id: str, event_type: str) -> bool:
        if self.endpoint and self.endpoint != endpoint_id:
            return False
        if not self.event_type or self.event_type in ("*", event_type):
            return True
        return self.event_type.endswith(".*") and event_type.startswith(self.event_type[:-1])

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """What happens to one event's delivery to one endpoint."""

    copies: int = 1
    hold: bool = False
    drop: bool = False
    delay_s: float = 0.0
    stale_s: int = 0


class Shaper:
    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def add(self, rule: Rule) -> None:
        if rule.mode == "normal" and not (rule.endpoint or rule.event_type):
            self.rules.clear()
            return
        self.rules.append(rule)

    def plan(self, endpoint_id: str, event_type: str) -> Plan:
        rule = next((r for r in reversed(self.rules) if r.matches(endpoint_id, event_type)), None)
        if rule is None:
            return Plan()
        if rule.times is not None:
            rule.times -= 1
            if rule.times <= 0:
                self.rules.remove(rule)
        return Plan(
            copies=rule.count if rule.mode == "duplicate" else 1,
            hold=rule.mode == "hold", drop=rule.mode == "drop",
            delay_s=rule.delay_ms / 1000 if rule.mode == "delay" else 0.0,
            stale_s=rule.stale_seconds,
        )
