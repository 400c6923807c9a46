"""CheckGate from an in-process cache kept coherent across replicas.

Every committed change bumps the account's revision and sends a PostgreSQL notification; each
replica drops its entry for that account when the notification arrives. An entry also expires at
the account's next window boundary, so a cancellation that takes effect at a future instant needs
no event to be seen. A value computed before a notification that arrived meanwhile is not kept."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from entitlement_service.db import catalog, reads
from entitlement_service.domain.entitlements import decide_gates, effective_at
from entitlement_service.service.deps import Deps


@dataclass(frozen=True)
class GateAnswer:
    allowed: bool
    gate_bundle: str | None
    revision: int


@dataclass(frozen=True)
class _Entry:
    gates: frozenset[str]
    valid_until: datetime | None
    # The only two answers an entry can give, made once rather than per call.
    allowed: GateAnswer
    denied: GateAnswer

    @classmethod
    def of(cls, revision: int, gate_bundle: str | None, gates: frozenset[str], valid_until: datetime | None
           ) -> _Entry:
        answers = (GateAnswer(True, gate_bundle, revision), GateAnswer(False, gate_bundle, revision))
        return cls(gates, valid_until, *answers)

    def answer(self, gate: str) -> GateAnswer:
        return self.allowed if gate in self.gates else self.denied


class GateCache:
    def __init__(self, deps: Deps, max_entries: int = 100_000) -> None:
        self._deps = deps
        self._max = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._notified: dict[str, int] = {}
        self._generation = 0

    def cached(self, account_id: str, gate: str) -> GateAnswer | None:
        """The answer while the account's entry is fresh, else None (then `check` loads it)."""
        entry = self._entries.get(account_id)
        if entry is None or (entry.valid_until is not None and self._deps.clock() >= entry.valid_until):
            return None
        return entry.answer(gate)

    async def check(self, account_id: str, gate: str) -> GateAnswer:
        return self.cached(account_id, gate) or (await self._load(account_id, self._deps.clock())).answer(gate)

    async def _load(self, account_id: str, now: datetime) -> _Entry:
        generation = self._generation
        async with self._deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            revision, found = await reads.effective_assignments(conn, account_id, now)
            codes = {p.row.gate_bundle for p in found if p.row.gate_bundle}
            bundles = {b.code: b for b in await catalog.load_gate_bundles(conn, codes)} if codes else {}
            boundary = await reads.boundary_after(conn, account_id, now)
        decision = decide_gates(effective_at(found, now), bundles)
        entry = _Entry.of(revision, decision.gate_bundle, decision.gates, boundary)
        if generation == self._generation and revision >= self._notified.get(account_id, 0):
            self._entries[account_id] = entry
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return entry

    def invalidate(self, account_id: str, revision: int) -> None:
        self._notified[account_id] = max(revision, self._notified.get(account_id, 0))
        self._entries.pop(account_id, None)

    def clear(self) -> None:
        """Forgets everything: after a catalog change, or when notifications may have been missed."""
        self._generation += 1
        self._entries.clear()

