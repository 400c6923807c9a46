"""What an account is entitled to at one instant, and why."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from catalog_rules.model import GateBundle
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.precedence import precedence_key


@dataclass(frozen=True)
class GateDecision:
    gate_bundle: str | None
    gates: frozenset[str]
    winner: PlacedAssignment | None
    reason: str


def effective_at(placed: Iterable[PlacedAssignment], as_of: datetime) -> list[PlacedAssignment]:
    """Assignments whose window contains `as_of`, conflicted ones included, winners first."""
    held = [p for p in placed if p.window.contains(as_of)]
    return sorted(held, key=lambda p: (p.conflict, precedence_key(p.row.priority, p.row.started_at,
                                                                  p.row.subscription_id), p.row.price_id))


def bindings_at(placed: Iterable[PlacedBinding], as_of: datetime) -> list[PlacedBinding]:
    """Bindings that hold at `as_of`; those lost to another subscription grant nothing."""
    return sorted((p for p in placed if p.window.contains(as_of) and not p.conflict),
                  key=lambda p: (p.row.grant_program_code, p.row.subscription_id, p.row.price_id))


def decide_gates(effective: Iterable[PlacedAssignment], bundles: Mapping[str, GateBundle]) -> GateDecision:
    """The account's bundle is the candidate of the highest-precedence effective plan that names
    one (plan priority, then later provider start, then smaller subscription id); its gates are the
    account's gates. Conflicted assignments take no part."""
    candidates = [p for p in effective if not p.conflict and p.row.gate_bundle]
    if not candidates:
        return GateDecision(None, frozenset(), None, "no effective plan names a gate bundle")
    ranked = sorted(candidates, key=lambda p: precedence_key(p.row.priority, p.row.started_at, p.row.subscription_id))
    winner = ranked[0]
    bundle = bundles.get(winner.row.gate_bundle or "")
    gates = frozenset(bundle.gates) if bundle else frozenset()
    reason = f"{winner.row.billing_plan_code} (priority {winner.row.priority}, {winner.row.subscription_id})"
    if len(ranked) > 1:
        others = ", ".join(f"{p.row.billing_plan_code} (priority {p.row.priority})" for p in ranked[1:])
        reason += f" outranks {others}"
    if bundle is None:
        reason += f"; bundle {winner.row.gate_bundle} is not configured, so no gates"
    return GateDecision(winner.row.gate_bundle, gates, winner, reason)


def next_change(placed: Iterable[PlacedAssignment | PlacedBinding], after: datetime) -> datetime | None:
    """The first window boundary after `after`: until then, answers computed at `after` hold."""
    instants = [i for p in placed for i in (p.window.start, p.window.end) if i is not None and i > after]
    return min(instants, default=None)
