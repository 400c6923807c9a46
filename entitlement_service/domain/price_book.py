"""Which resolution of each price was in force when. A catalog change (a price's group, plan, gate
bundle or grants) takes effect from one instant, for every account alike; what happened before
that instant keeps the resolution it had, so history is never rewritten by a later change."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from catalog_rules.model import ResolvedPrice
from entitlement_service.domain.windows import Window


@dataclass(frozen=True)
class PriceVersion:
    """A price's resolution from `effective_from` (None: since always) until the next version's."""

    effective_from: datetime | None
    resolved: ResolvedPrice


@dataclass(frozen=True)
class PriceBook:
    """Every price's versions, each price's sorted by `effective_from`, the first since always."""

    versions: Mapping[str, tuple[PriceVersion, ...]] = field(default_factory=dict)

    @classmethod
    def constant(cls, prices: Mapping[str, ResolvedPrice]) -> PriceBook:
        """Prices that never changed: each resolution in force at every instant."""
        return cls({price_id: (PriceVersion(None, resolved),) for price_id, resolved in prices.items()})

    def at(self, price_id: str, instant: datetime) -> ResolvedPrice | None:
        """The resolution in force at `instant` (the first one before any version began)."""
        versions = self.versions.get(price_id, ())
        found = versions[0].resolved if versions else None
        for version in versions:
            if version.effective_from is None or version.effective_from <= instant:
                found = version.resolved
        return found

    def in_force(self, price_ids: Iterable[str], instant: datetime) -> dict[str, ResolvedPrice]:
        return {pid: resolved for pid in price_ids if (resolved := self.at(pid, instant)) is not None}

    def now(self, price_ids: Iterable[str]) -> dict[str, ResolvedPrice]:
        """The latest resolution of each price."""
        return {pid: self.versions[pid][-1].resolved for pid in price_ids if self.versions.get(pid)}

    def pieces(self, price_ids: Iterable[str], window: Window) -> list[Window]:
        """`window` cut wherever one of the prices changes inside it."""
        cuts = sorted({v.effective_from for pid in set(price_ids) for v in self.versions.get(pid, ())
                       if v.effective_from is not None and v.effective_from > window.start
                       and (window.end is None or v.effective_from < window.end)})
        starts = [window.start, *cuts]
        return [Window(start, end) for start, end in zip(starts, [*cuts, window.end], strict=True)]
