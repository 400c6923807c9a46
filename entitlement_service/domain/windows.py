"""Half-open windows of provider time, [start, end), with end None meaning open-ended."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, order=True)
class Window:
    start: datetime
    end: datetime | None = None

    def contains(self, instant: datetime) -> bool:
        """True when start <= instant < end: a window ending exactly at `instant` no longer holds."""
        return self.start <= instant and (self.end is None or instant < self.end)

    def overlaps(self, other: Window) -> bool:
        return (self.end is None or other.start < self.end) and (other.end is None or self.start < other.end)

    def clipped(self, stop: datetime | None) -> Window | None:
        """This window cut at `stop`; None when nothing of it remains."""
        end = self.end if stop is None or (self.end is not None and self.end <= stop) else stop
        return None if end is not None and end <= self.start else Window(self.start, end)

    def since(self, instant: datetime | None) -> Window | None:
        """The part of this window from `instant` on; None when it ends by then."""
        if instant is None:
            return self
        if self.end is not None and self.end <= instant:
            return None
        return self if self.start >= instant else Window(instant, self.end)


def coalesce(pieces: Iterable[tuple[K, Window]]) -> list[tuple[K, Window]]:
    """Merges pieces with the same key whose windows touch or overlap, so that an unchanged
    attribute carried across several snapshots is one window, not one per snapshot."""
    merged: dict[K, list[Window]] = {}
    for key, window in sorted(pieces, key=lambda p: p[1].start):
        runs = merged.setdefault(key, [])
        last = runs[-1] if runs else None
        if last is not None and (last.end is None or window.start <= last.end):
            end = None if last.end is None or window.end is None else max(last.end, window.end)
            runs[-1] = Window(last.start, end)
        else:
            runs.append(window)
    found = [(k, w) for k, runs in merged.items() for w in runs]
    if len({w.start for _, w in found}) == len(found):
        # No two windows start together, so the start alone orders them; the key's text, which
        # breaks ties, costs a repr of each key (dataclasses among them) and is not needed.
        return sorted(found, key=lambda p: p[1].start)
    return sorted(found, key=lambda p: (p[1].start, str(p[0])))


def intersection(a: Window, b: Window) -> Window | None:
    if not a.overlaps(b):
        return None
    ends = [e for e in (a.end, b.end) if e is not None]
    return Window(max(a.start, b.start), min(ends) if ends else None)


def boundaries(windows: Iterable[Window]) -> list[Window]:
    """Splits the union of `windows` at every start and end into elementary windows."""
    windows = list(windows)  # read twice below; a generator would be empty the second time
    cuts = sorted({w.start for w in windows} | {w.end for w in windows if w.end is not None})
    if not cuts:
        return []
    pieces = [Window(a, b) for a, b in pairwise(cuts)]
    pieces.append(Window(cuts[-1], None))
    return pieces
