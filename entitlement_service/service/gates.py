"""CheckGate from an in-process cache kept coherent across replicas.

Every committed change bumps the account's revision and sends a PostgreSQL notification; each
replica drops its entry for that account when the notification arrives, and for its own writes as
soon as they commit (service/transactions.py). An entry also expires at the account's next window
boundary, so a cancellation that takes effect at a future instant needs no event to be seen, and
in any case after `max_age`, which bounds how long a missed notification can go unnoticed. While
the replica's notifications are unproven (db/listener.py) nothing is answered from the cache. A
value computed before a notification that arrived meanwhile is not kept."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from entitlement_service.db import catalog, reads
from entitlement_service.db.pool import PoolHandle
from entitlement_service.domain.entitlements import decide_gates, effective_at


@dataclass(frozen=True)
class GateAnswer:
    allowed: bool
    gate_bundle: str | None
    revision: int


@dataclass(frozen=True)
class _Entry:
    gates: frozenset[str]
    valid_until: datetime
    # The only two answers an entry can give, made once rather than per call.
    allowed: GateAnswer
    denied: GateAnswer

    @classmethod
    def of(cls, revision: int, gate_bundle: str | None, gates: frozenset[str], valid_until: datetime
           ) -> _Entry:
        answers = (GateAnswer(True, gate_bundle, revision), GateAnswer(False, gate_bundle, revision))
        return cls(gates, valid_until, *answers)

    def answer(self, gate: str) -> GateAnswer:
        return self.allowed if gate in self.gates else self.denied


class GateCache:
    def __init__(self, pool: PoolHandle, clock: Callable[[], datetime], max_age: timedelta,
                 max_entries: int = 100_000) -> None:
        self._pool = pool
        self._clock = clock
        self._max_age = max_age
        self._max = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Per account with a load in flight: how many, and the highest revision announced meanwhile.
        # Both are bounded by the loads in flight, and emptied as they finish.
        self._loading: dict[str, int] = {}
        self._notified: dict[str, int] = {}
        self._generation = 0
        self._trusted = False  # notifications proven (db/listener.py)

    def cached(self, account_id: str, gate: str) -> GateAnswer | None:
        """The answer while the account's entry is fresh, else None (then `check` loads it)."""
        entry = self._entries.get(account_id)
        if entry is None or self._clock() >= entry.valid_until:
            return None
        return entry.answer(gate)

    async def check(self, account_id: str, gate: str) -> GateAnswer:
        return self.cached(account_id, gate) or (await self._load(account_id, self._clock())).answer(gate)

    async def _load(self, account_id: str, now: datetime) -> _Entry:
        generation = self._generation
        self._loading[account_id] = self._loading.get(account_id, 0) + 1
        try:
            async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                revision, found = await reads.effective_assignments(conn, account_id, now)
                codes = {p.row.gate_bundle for p in found if p.row.gate_bundle}
                bundles = {b.code: b for b in await catalog.load_gate_bundles(conn, codes)} if codes else {}
                boundary = await reads.boundary_after(conn, account_id, now)
            decision = decide_gates(effective_at(found, now), bundles)
            valid_until = min(boundary, now + self._max_age) if boundary is not None else now + self._max_age
            entry = _Entry.of(revision, decision.gate_bundle, decision.gates, valid_until)
            if self._trusted and generation == self._generation and revision >= self._notified.get(account_id, 0):
                self._entries[account_id] = entry
                if len(self._entries) > self._max:
                    self._entries.popitem(last=False)
            return entry
        finally:
            self._loading[account_id] -= 1
            if not self._loading[account_id]:
                del self._loading[account_id]
                self._notified.pop(account_id, None)

    def invalidate(self, account_id: str, revision: int) -> None:
        if account_id in self._loading:
            self._notified[account_id] = max(revision, self._notified.get(account_id, 0))
        self._entries.pop(account_id, None)

    def clear(self) -> None:
        """Forgets everything: after a catalog change, or when notifications may have been missed."""
        self._generation += 1
        self._entries.clear()

    @property
    def tracked(self) -> int:
        """Accounts the cache keeps anything for: at most `max_entries` answers plus the loads in flight."""
        return len(self._entries) + len(self._loading)  # a notice is kept only for a load in flight

    def trust(self, proven: bool) -> None:
        """Whether notifications are proven; while they are not, every answer is read afresh."""
        if not proven:
            self.clear()
        self._trusted = proven
