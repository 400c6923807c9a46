"""Stale gate answers, measured while the faults happen.

For an account the workload is changing, the probe reads the account's revision from the database
(what is committed), then asks one replica CheckGate. The answer carries the revision it was
computed from; one older than what was already committed when the question was asked is stale,
and it has been stale since the first change it misses committed (that change's transaction
start, `accounts.updated_at`, as the probe saw it). A replica whose notifications are silenced
must stop answering from its cache within its heartbeat interval plus deadline. An answer at the
current revision is also checked against the other replica's GetEntitlements at that revision:
the same state must open the same gate."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc

from selfserve.entitlement.v1 import entitlement_pb2 as pb

GATE = "api_access"  # the gate upgrades, downgrades and cancellations move


@dataclass
class GateStats:
    answers: int = 0
    stale: int = 0
    wrong: int = 0  # a different answer than the database's state at the same revision
    unanswered: int = 0  # the replica was down or the call failed
    longest_stale_s: float = 0.0
    longest: str = ""  # which answer, for the report

    def merge(self, other: GateStats) -> None:
        self.answers += other.answers
        self.stale += other.stale
        self.wrong += other.wrong
        self.unanswered += other.unanswered
        if other.longest_stale_s > self.longest_stale_s:
            self.longest_stale_s, self.longest = other.longest_stale_s, other.longest


@dataclass
class GateProbe:
    database_url: str
    stubs: list[Any]  # one EntitlementService stub per replica
    names: list[str]
    metadata: tuple[tuple[str, str]]
    hot: deque[str] = field(default_factory=lambda: deque(maxlen=48))  # accounts being changed now
    stats: dict[str, GateStats] = field(default_factory=dict)
    # Per account, the commit time of each revision the probe saw.
    _commits: dict[str, dict[int, float]] = field(default_factory=dict)
    _conn: asyncpg.Connection | None = None

    async def run(self, stop: asyncio.Event, pause_s: float = 0.01) -> None:
        turns = itertools.count()
        self.stats = {name: GateStats() for name in self.names}
        try:
            while not stop.is_set():
                if self.hot:
                    turn = next(turns)
                    account = self.hot[turn // len(self.stubs) % len(self.hot)]
                    await self._probe(account, turn % len(self.stubs))
                await asyncio.sleep(pause_s)
        finally:
            if self._conn is not None:
                await self._conn.close()

    async def _committed(self, account: str) -> tuple[int, float] | None:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.database_url, timeout=2)
            row = await self._conn.fetchrow(
                "SELECT revision, extract(epoch FROM updated_at)::float8 AS at FROM accounts WHERE account_id = $1",
                account, timeout=2)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError):
            self._conn = None  # PostgreSQL restarting or the connection cut: try again next time
            return None
        return (int(row["revision"]), float(row["at"])) if row else None

    async def _probe(self, account: str, replica: int) -> None:
        stats = self.stats[self.names[replica]]
        committed = await self._committed(account)
        if committed is None:
            return
        revision, at = committed
        seen = self._commits.setdefault(account, {})
        seen.setdefault(revision, at)
        try:
            answer = await self.stubs[replica].CheckGate(pb.CheckGateRequest(account_id=account, gate=GATE),
                                                         metadata=self.metadata, timeout=2)
        except grpc.aio.AioRpcError:
            stats.unanswered += 1
            return
        answered = time.time()
        stats.answers += 1
        if answer.revision < revision:
            stats.stale += 1
            missed = min(t for r, t in seen.items() if answer.revision < r <= revision)
            if answered - missed > stats.longest_stale_s:
                stats.longest_stale_s = answered - missed
                stats.longest = (f"{self.names[replica]} answered {account} from revision {answer.revision} "
                                 f"{answered - missed:.2f} s after revision {answer.revision + 1} or later committed")
            return
        other = self.stubs[(replica + 1) % len(self.stubs)]
        try:
            truth = await other.GetEntitlements(pb.GetEntitlementsRequest(account_id=account),
                                                metadata=self.metadata, timeout=2)
        except grpc.aio.AioRpcError:
            return
        if truth.entitlements.revision == answer.revision and (GATE in truth.entitlements.gates) != answer.allowed:
            stats.wrong += 1
