"""The run's report: a Markdown table of what was sent, what was injected and what was found, the
counters beside what they should show, and every difference left."""

from __future__ import annotations

from collections import Counter

from chaos import compare
from chaos.faults import KIND_NAMES, PROXIED
from chaos.gates import GateStats
from chaos.run import Outcome

SHOWN_DIFFERENCES = 40


def render(o: Outcome) -> str:
    kinds = compare.tally(o.differences)
    injected = Counter(i.fault.kind for i in o.injected)
    replayed = sum(r.events_replayed for r in o.reconciles)
    longest = _seconds(o.gates)
    rows = [
        ("accounts", f"{o.size.accounts:,} (seed {o.seed})"),
        ("provider events", f"{o.events:,}"),
        ("webhook deliveries", f"{o.deliveries:,}"),
        ("events delivered again on purpose (2 or 3 times, some before the original)", f"{o.copies:,}"),
        ("events never delivered (left to the reconciler)", f"{o.withheld:,}"),
        ("events that arrived after a later one of their subscription", f"{o.late_arrivals:,}"),
        ("rounds with delayed deliveries", f"{o.delayed_rounds:,}"),
        ("actions (purchases, portal changes, packs; refused by the provider)",
         f"{o.tally.actions:,} ({o.tally.refused:,} refused)"),
        ("checkout requests retried on the other replica", f"{o.tally.retried_purchases:,}"),
        *((f"fault: {KIND_NAMES[kind]}", f"{count}") for kind, count in sorted(injected.items())),
        ("longest recovery after a fault (every replica ready)",
         f"{max((i.took_s for i in o.injected), default=0):.1f} s"),
        ("**lost** (a paid period or pack not funded)", f"{kinds.get(compare.LOST, 0)}"),
        ("**doubled** (funded more than once)", f"{kinds.get(compare.DOUBLED, 0)}"),
        ("other differences", f"{sum(kinds.values()) - kinds.get(compare.LOST, 0) - kinds.get(compare.DOUBLED, 0)}"),
        ("gate answers probed during the run", f"{o.gates.answers:,} ({o.gates.unanswered:,} unanswered)"),
        *((f"gate answers from {name}{' (its notifications black-holed)' if name == PROXIED else ''}: stale",
           f"{stats.stale:,} of {stats.answers:,}, longest {_seconds(stats)}")
          for name, stats in o.per_replica.items()),
        ("stale gate answers seen", f"{o.gates.stale:,}"),
        ("longest a gate answer was stale (bound: the cache's maximum age)",
         f"{longest} (bound {o.gate_bound_s:.0f} s)"),
        ("gate answers that disagreed with the database at the same revision", f"{o.gates.wrong}"),
        ("reconciler runs after the workload (events replayed)", f"{len(o.reconciles)} ({replayed:,})"),
        ("workload and faults (each round until its webhooks are delivered)", f"{o.workload_s:.0f} s"),
        ("time to converge (after the workload: the reconciler, then every account compared)",
         f"{o.converge_s:.1f} s" if o.converge_s is not None else "**did not converge**"),
    ]
    lines = ["| | |", "|---|---:|", *(f"| {name} | {value} |" for name, value in rows), "",
             "| counter (summed over every life of every replica) | counted | should be | |", "|---|---:|---|---|",
             *(f"| {c.name} | {c.counted:,} | {c.expected} | {'ok' if c.ok else '**wrong**'} |" for c in o.checks)]
    if o.gates.longest:
        lines += ["", f"Longest stale answer: {o.gates.longest}."]
    if o.tally.failed:
        lines += ["", "Purchases the checkout service never took:", *(f"- {f}" for f in o.tally.failed[:10])]
    if o.differences:
        lines += ["", f"Differences left ({len(o.differences)}):",
                  *(f"- {d.line()}" for d in o.differences[:SHOWN_DIFFERENCES])]
    lines += ["", "PASSED" if o.passed else "FAILED"]
    return "\n".join(lines)


def _seconds(stats: GateStats) -> str:
    return f"{stats.longest_stale_s:.2f} s" if stats.stale else "none"
