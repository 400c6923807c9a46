"""One fault-injection run, start to finish: the stack up, the workload's rounds with the faults
among them and the gate probe watching, then the reconciler for what was never delivered, then
the comparison with the reference until every account agrees or time runs out; the report.

The run fails (`Outcome.passed` false) on any difference left at the end, on any stale gate
answer older than the bound, on any wrong gate answer, and on any counter that disagrees with
what was injected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from chaos import compare, counters, faults, observe, workload
from chaos.faults import Injected
from chaos.gates import GateProbe, GateStats
from chaos.processes import Child, every
from chaos.relay import out_of_order
from chaos.stack import Stack, Tuning, start_stack, stop_stack
from chaos.workload import Shaping, Tally, Workload
from selfserve.checkout.v1 import checkout_pb2
from service_runtime.auth import Role

# The reconciler alone replays every event of the provider's future: 3 to 4 minutes in the full run.
CONVERGE_S = 900.0
RECONCILE_AGAIN_S = 20.0


@dataclass(frozen=True)
class Size:
    accounts: int
    periods: int  # months the simulator's clock moves after the live rounds
    live_rounds: int
    kills_each: int  # SIGKILLs per service
    cuts: int  # times every database connection is cut


FULL = Size(accounts=1000, periods=4, live_rounds=8, kills_each=2, cuts=2)
SMALL = Size(accounts=60, periods=2, live_rounds=4, kills_each=2, cuts=2)


@dataclass
class Check:
    """A counter the services keep, beside what the run injected or saw."""

    name: str
    counted: int
    expected: str
    ok: bool


@dataclass
class Outcome:
    size: Size
    seed: int
    events: int = 0
    deliveries: int = 0
    copies: int = 0
    delayed_rounds: int = 0
    withheld: int = 0
    late_arrivals: int = 0
    injected: list[Injected] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    gates: GateStats = field(default_factory=GateStats)  # every replica's answers
    per_replica: dict[str, GateStats] = field(default_factory=dict)
    gate_bound_s: float = 0.0
    reconciles: list[checkout_pb2.ReconcileResponse] = field(default_factory=list)
    converge_s: float | None = None
    workload_s: float = 0.0
    differences: list[compare.Difference] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (not self.differences and self.converge_s is not None and self.gates.wrong == 0
                and self.gates.longest_stale_s <= self.gate_bound_s and all(c.ok for c in self.checks)
                and not self.tally.failed)


async def run(size: Size, seed: int, log_dir: Path, log: Callable[[str], None]) -> Outcome:
    tuning = Tuning()
    outcome = Outcome(size, seed, gate_bound_s=tuning.gate_cache_max_age_s)
    stack = await start_stack(log_dir, tuning, log)
    try:
        await _drive(stack, outcome, log)
        await _converge(stack, outcome, log)
        await _count(stack, outcome)
    finally:
        await stop_stack(stack)
    return outcome


async def _drive(stack: Stack, outcome: Outcome, log: Callable[[str], None]) -> None:
    size = outcome.size
    rounds = workload.plan(size.accounts, size.periods, size.live_rounds, outcome.seed)
    planned = faults.plan(len(rounds), size.live_rounds, size.kills_each, size.cuts, outcome.seed)
    probe = GateProbe(stack.cluster.url, stack.entitlement_stubs, [c.name for c in stack.entitlements],
                      stack.metadata(Role.PRODUCT))
    work = Workload(stack, Shaping(), outcome.seed, probe.hot.append)
    started = [asyncio.Event() for _ in rounds]
    stop = asyncio.Event()

    async def read_counters() -> None:
        await asyncio.gather(*(child.read_counters() for child in stack.services))

    background = [asyncio.create_task(probe.run(stop)), asyncio.create_task(every(1.0, read_counters, stop))]
    injecting = asyncio.create_task(faults.run_faults(stack, planned, started))
    clock = time.monotonic()
    try:
        for number, round_ in enumerate(rounds):
            started[number].set()
            log(f"round {number + 1}/{len(rounds)}: {len(round_.actions)} actions"
                + (f", clock +{round_.advance_s} s" if round_.advance_s else ""))
            await work.run_round(round_)
            # A round ends once its webhooks are delivered (or given up on), so the faults land
            # while deliveries flow and the rounds after them find the backlog drained.
            await stack.wait_delivered()
            outcome.delayed_rounds += bool(round(len(round_.actions) * work.shaping.delayed))
        outcome.injected = await injecting
        outcome.workload_s = time.monotonic() - clock
    finally:
        stop.set()
        injecting.cancel()
        ended = await asyncio.gather(*background, injecting, return_exceptions=True)
    for failure in ended[:len(background)]:
        if isinstance(failure, Exception):  # a probe that died would report a quiet run
            raise RuntimeError(f"the gate probe or the counter reader failed: {failure!r}") from failure
    outcome.tally = work.tally
    outcome.per_replica = probe.stats
    for stats in probe.stats.values():
        outcome.gates.merge(stats)


async def _reconcile(stack: Stack) -> checkout_pb2.ReconcileResponse:
    """A full run, as an operator starts one, on either checkout replica: asked again, of the
    other one, while a replica is still settling."""
    for attempt in range(10):
        try:
            reply: checkout_pb2.ReconcileResponse = await stack.checkout_stubs[attempt % 2].Reconcile(
                checkout_pb2.ReconcileRequest(), metadata=stack.metadata(Role.OPERATOR), timeout=600)
            return reply
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            await asyncio.sleep(1)
    raise RuntimeError("no checkout replica could run the reconciler")


async def _converge(stack: Stack, outcome: Outcome, log: Callable[[str], None]) -> None:
    """Deliveries drain (the withheld ones run out of attempts), the reconciler replays what never
    arrived, and the replicas are compared with the reference until they agree."""
    clock = time.monotonic()
    await stack.wait_delivered()
    state = await observe.provider_state(stack)
    catalog = await observe.catalog(stack)
    last_reconcile = -RECONCILE_AGAIN_S
    while True:
        if time.monotonic() - clock - last_reconcile >= RECONCILE_AGAIN_S:
            log("reconciling")
            outcome.reconciles.append(await _reconcile(stack))
            await stack.wait_delivered()
            last_reconcile = time.monotonic() - clock
        outcome.differences = await observe.differences(stack, state, catalog)
        if not outcome.differences:
            outcome.converge_s = time.monotonic() - clock
            return
        log(f"{len(outcome.differences)} differences left, e.g. {outcome.differences[0].line()}")
        if time.monotonic() - clock > CONVERGE_S:
            return
        await asyncio.sleep(2)


async def _count(stack: Stack, outcome: Outcome) -> None:
    """What the provider sent, and the services' counters beside what the run injected."""
    outcome.events = len(await stack.provider_list("/v1/events"))
    arrivals = stack.relay.arrivals
    outcome.deliveries = len(arrivals)
    outcome.copies = outcome.tally.copies
    outcome.withheld = len(outcome.tally.lost)
    outcome.late_arrivals = out_of_order(arrivals)
    await asyncio.gather(*(child.read_counters() for child in stack.services))
    accepted = [a.event_id for a in arrivals if 200 <= a.status < 300]
    again = len(accepted) - len(set(accepted))
    duplicates = _summed(stack.entitlements, counters.DUPLICATES, lambda life: life.duplicates)
    late = _summed(stack.entitlements, counters.LATE, lambda life: life.late)
    unproven = _summed(stack.entitlements, counters.UNPROVEN, lambda life: life.unproven)
    replayed = sum(r.events_replayed for r in outcome.reconciles)
    black_holes = sum(1 for i in outcome.injected if i.fault.kind == faults.BLACK_HOLE)
    runs = _summed(stack.checkouts, counters.RECONCILE_RUNS, None)
    found = _summed(stack.entitlements, counters.MISMATCHES, None)
    reported = sum(r.mismatches_found for r in outcome.reconciles)
    outcome.checks = [
        Check("provider_events_total{outcome=duplicate}", duplicates,
              f">= {again} deliveries accepted again", duplicates >= again),
        Check("provider_events_late_total", late, f">= 1 ({outcome.late_arrivals} arrived after a later one)",
              late >= min(1, outcome.late_arrivals)),
        Check("change_notifications_unproven_total", unproven, f">= {black_holes} (black holes)",
              unproven >= black_holes),
        Check("reconcile_events_total (replayed, missed)", replayed, f">= {outcome.withheld} withheld",
              replayed >= outcome.withheld),
        Check("reconcile_runs_total{result=completed}", runs, f">= {len(outcome.reconciles)} asked",
              runs >= len(outcome.reconciles)),
        Check("mismatches_found_total", found, f">= {reported} reported by the runs", found >= reported),
    ]


def _summed(children: list[Child], counter: counters.Counted,
            from_log: Callable[[counters.Logged], int] | None) -> int:
    """A counter over every life of every child; a killed life's from its log when `from_log` is
    given (its last reading may be short of what it counted), else from its last reading."""
    found = 0
    for child in children:
        for life in child.lives:
            if life.killed and from_log is not None:
                found += from_log(counters.logged_in(life.log))
            else:
                found += life.counted(counter)
    return found
