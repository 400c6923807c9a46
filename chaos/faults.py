"""The faults: which, in which order and during which round of the workload (a pure plan from the
seed), and injecting one: SIGKILL and a restart of one replica, every database connection cut,
PostgreSQL restarted, one entitlement replica's notification connection silenced for a while.

Faults run one after the other; each waits until every replica is ready again before the next one
starts, so each fault's effect is its own."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from chaos.stack import LISTENING, Stack

KILL, CUT, RESTART, BLACK_HOLE = "kill", "cut_connections", "restart_database", "black_hole"
KIND_NAMES = {KILL: "SIGKILL and restart", CUT: "every database connection cut",
              RESTART: "PostgreSQL restarted", BLACK_HOLE: "notification connection black-holed"}
KILLED = ("entitlement-1", "entitlement-2", "checkout-1", "checkout-2")
# The replica that reaches PostgreSQL through the proxy.
PROXIED = "entitlement-2"


@dataclass(frozen=True)
class Fault:
    kind: str
    round: int  # the workload round during which it starts
    target: str = ""  # the killed or silenced process
    seconds: float = 0.0  # how long a killed process stays down, or a connection silent
    delay_s: float = 0.0  # how far into its round it starts


@dataclass(frozen=True)
class Injected:
    fault: Fault
    started: float  # wall clock
    took_s: float  # until every replica was ready again
    detail: str  # for the report, e.g. how many backends were terminated


def plan(rounds: int, live_rounds: int, kills_each: int, cuts: int, seed: int) -> list[Fault]:
    """Every kind of fault, each process killed `kills_each` times, spread over the rounds in a
    seeded order. The black hole falls in a round while gates still change at our clock's present
    (the first `live_rounds`), where a stale gate answer can be seen."""
    rng = random.Random(f"faults:{seed}")
    kinds = [(KILL, name) for name in KILLED for _ in range(kills_each)]
    kinds += [(CUT, "")] * cuts + [(RESTART, "")]
    rng.shuffle(kinds)
    black_hole_at = rng.randrange(1, max(2, live_rounds))
    faults = [Fault(BLACK_HOLE, black_hole_at, PROXIED, seconds=rng.uniform(3.0, 5.0), delay_s=0.2)]
    for index, (kind, target) in enumerate(kinds):
        faults.append(Fault(kind, min(rounds - 1, index * rounds // len(kinds)), target,
                            seconds=rng.uniform(0.2, 1.5) if kind == KILL else 0.0, delay_s=rng.uniform(0.0, 1.0)))
    return sorted(faults, key=lambda f: (f.round, f.kind != BLACK_HOLE))


async def inject(stack: Stack, fault: Fault) -> Injected:
    started, clock = time.time(), time.monotonic()
    detail = ""
    if fault.kind == KILL:
        child = next(c for c in stack.services if c.name == fault.target)
        await child.kill()
        await asyncio.sleep(fault.seconds)  # down for a moment: deliveries and calls meet a closed port
        await child.start()
    elif fault.kind == CUT:
        detail = f"{await stack.cluster.cut_connections()} backends"
    elif fault.kind == RESTART:
        await stack.cluster.restart()
    elif fault.kind == BLACK_HOLE:
        detail = f"{stack.proxy.black_hole(LISTENING)} connection silenced for {fault.seconds:.1f} s"
        await asyncio.sleep(fault.seconds)
        stack.proxy.restore()
    if fault.kind in (CUT, RESTART, BLACK_HOLE):
        # Long enough for a missed heartbeat to be noticed, so "ready" means ready again.
        await asyncio.sleep(stack.tuning.heartbeat_s + stack.tuning.heartbeat_deadline_s)
    await stack.all_ready()
    return Injected(fault, started, time.monotonic() - clock, detail)


async def run_faults(stack: Stack, faults: list[Fault], round_started: list[asyncio.Event]) -> list[Injected]:
    """Each fault once its round has started (and `delay_s` into it), one after the other."""
    done: list[Injected] = []
    for fault in faults:
        await round_started[fault.round].wait()
        await asyncio.sleep(fault.delay_s)
        done.append(await inject(stack, fault))
    return done
