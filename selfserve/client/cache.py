"""The client's in-process answers: per account, the gate schedule the watch stream sent, and the
rule that decides whether an answer is fresh enough to give.

Pure: no I/O, no clocks of its own. Times are passed in: `wall` in seconds since the epoch (to
compare with the schedule's boundaries, which are the server's times) and `mono` in seconds of a
monotonic clock (to measure staleness)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from selfserve.entitlement.v1 import entitlement_pb2 as pb


@dataclass(frozen=True, slots=True)
class Span:
    """The gates in force from `start` (inclusive) until `end` (exclusive; `math.inf` when open)."""

    start: float
    end: float
    gate_bundle: str
    gates: frozenset[str]


def seconds(stamp: object) -> float:
    """A protobuf Timestamp in seconds since the epoch."""
    return stamp.seconds + stamp.nanos / 1e9  # type: ignore[attr-defined, no-any-return]


def spans_of(schedule: Iterable[pb.GateSpan]) -> tuple[Span, ...]:
    return tuple(Span(seconds(s.start), seconds(s.end) if s.HasField("end") else math.inf, s.gate_bundle,
                      frozenset(s.gates)) for s in schedule)


@dataclass(slots=True)
class Entry:
    """One account as the stream last described it."""

    entitlements: pb.Entitlements
    spans: tuple[Span, ...]
    confirmed_at: float  # monotonic time the stream last sent this account
    index: int = 0  # the span in force at the last lookup; only moves forward

    @property
    def revision(self) -> int:
        return self.entitlements.revision

    @property
    def as_of(self) -> float:
        return seconds(self.entitlements.as_of)

    def span_at(self, wall: float) -> Span | None:
        """The span in force at `wall`, or None once the schedule has run out. A time before the
        first span (a clock behind the server's) is read as the first span."""
        spans, i = self.spans, self.index
        if not spans:
            return None
        while wall >= spans[i].end:
            i += 1
            if i == len(spans):
                return None
        self.index = i
        return spans[i]

    def newer_than(self, other: Entry) -> bool:
        return (self.revision, self.as_of) > (other.revision, other.as_of)


@dataclass
class Liveness:
    """The stream that covers accounts right now: which accounts, and the last moment it was known
    alive (its last message, a heartbeat or an update)."""

    accounts: frozenset[str] = frozenset()
    alive_at: float = -math.inf


def fresh(entry: Entry, account_id: str, live: Liveness, mono: float, max_staleness_s: float) -> bool:
    """The staleness rule: an answer from `entry` may be given at `mono` when the stream sent the
    account within `max_staleness_s`, or when a stream that covers the account was alive within
    `max_staleness_s`. So an answer is never older than `max_staleness_s`, measured from the last
    moment a stream was known to be telling this process about the account."""
    last = entry.confirmed_at
    if account_id in live.accounts and live.alive_at > last:
        last = live.alive_at
    return mono - last <= max_staleness_s


@dataclass
class Accounts:
    """The accounts the process watches, least recently used first, at most `max_accounts`: each
    with its entry, or None while its first message is awaited. Accounts `pinned` (someone is
    watching them) are never the ones evicted."""

    max_accounts: int
    entries: OrderedDict[str, Entry | None] = field(default_factory=OrderedDict)
    pinned: dict[str, int] = field(default_factory=dict)

    def __contains__(self, account_id: str) -> bool:
        return account_id in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, account_id: str) -> Entry | None:
        return self.entries.get(account_id)

    def touch(self, account_id: str) -> None:
        self.entries.move_to_end(account_id)

    def want(self, account_id: str) -> list[str]:
        """Watches `account_id` (most recently used); returns the accounts evicted to make room."""
        if account_id in self.entries:
            self.entries.move_to_end(account_id)
        else:
            self.entries[account_id] = None
        evicted: list[str] = []
        for candidate in list(self.entries):
            if len(self.entries) <= self.max_accounts:
                break
            if candidate != account_id and candidate not in self.pinned:
                del self.entries[candidate]
                evicted.append(candidate)
        return evicted

    def put(self, entry: Entry) -> bool:
        """Keeps `entry` when its account is watched and it is newer than what is held (a later
        revision, or the same revision computed later); returns whether it was kept. Its place in
        the eviction order does not change: being sent is not being used."""
        account_id = entry.entitlements.account_id
        if account_id not in self.entries:
            return False
        held = self.entries[account_id]
        if held is not None and not entry.newer_than(held):
            if held.revision == entry.revision:
                held.confirmed_at = max(held.confirmed_at, entry.confirmed_at)
            return False
        self.entries[account_id] = entry
        return True

    def known_revisions(self, wall: float) -> dict[str, int]:
        """What a resumed stream may skip: every account held whose schedule has not run out."""
        return {a: e.revision for a, e in self.entries.items() if e is not None and e.span_at(wall) is not None}
