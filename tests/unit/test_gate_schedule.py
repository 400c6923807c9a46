"""The gate schedule a watch message carries: each span's gates are what GetEntitlements computes
at any instant inside it (checked against that computation, the reference, for random histories)."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from entitlement_service.domain.account import PlacedAssignment
from entitlement_service.domain.entitlements import decide_gates, effective_at
from entitlement_service.domain.windows import Window
from entitlement_service.service.reads import AccountRows, GateSpan, gate_schedule, view_at
from tests.unit.builders import CONFIG, T0, assignment, hours

PLANS = ("starter", "pro", "seats")


@st.composite
def histories(draw: st.DrawFn) -> tuple[PlacedAssignment, ...]:
    placed = []
    for n in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, 48))
        end = draw(st.none() | st.integers(start + 1, 72))
        placed.append(assignment(draw(st.sampled_from(PLANS)), sub=f"sub_{n}", started_at=hours(start),
                                 window=Window(hours(start), hours(end) if end is not None else None)))
    return tuple(placed)


def rows(placed: tuple[PlacedAssignment, ...]) -> AccountRows:
    return AccountRows("acct_1", 1, CONFIG, placed, (), (), ())


def gates_at(placed: tuple[PlacedAssignment, ...], at: datetime) -> tuple[str | None, frozenset[str]]:
    decision = decide_gates(effective_at(placed, at), CONFIG.gate_bundles)
    return decision.gate_bundle, decision.gates


def span_at(schedule: tuple[GateSpan, ...], at: datetime) -> GateSpan | None:
    return next((s for s in schedule if s.start <= at and (s.end is None or at < s.end)), None)


@settings(max_examples=300, deadline=None)
@given(histories(), st.integers(0, 80), st.integers(1, 8))
def test_every_span_holds_the_gates_computed_at_each_instant_inside_it(
        placed: tuple[PlacedAssignment, ...], as_of_hours: int, boundaries: int) -> None:
    stored = rows(placed)
    as_of = hours(as_of_hours) + timedelta(minutes=30)
    schedule = gate_schedule(stored, view_at(stored, as_of), boundaries)
    assert schedule[0].start == as_of
    for before, after in pairwise(schedule):
        assert before.end == after.start  # contiguous
        assert (before.gate_bundle, before.gates) != (after.gate_bundle, after.gates)  # equal neighbours are one
    instants = {as_of, *(i for p in placed for i in (p.window.start, p.window.end) if i is not None and i > as_of)}
    for at in sorted(instants):
        for probe in (at, at + timedelta(minutes=1)):
            span = span_at(schedule, probe)
            if span is None:
                assert schedule[-1].end is not None and probe >= schedule[-1].end  # past what it covers
            else:
                assert (span.gate_bundle, span.gates) == gates_at(placed, probe)


def test_a_plan_ending_at_period_end_gives_two_spans_the_second_open() -> None:
    pro = assignment("pro", window=Window(T0, hours(10)))
    starter = assignment("starter", sub="sub_2", window=Window(hours(10)))
    stored = rows((pro, starter))
    schedule = gate_schedule(stored, view_at(stored, hours(1)))
    assert [(s.start, s.end, s.gate_bundle, s.gates) for s in schedule] == [
        (hours(1), hours(10), "pro", frozenset({"export", "api_access"})),
        (hours(10), None, "starter", frozenset({"export"}))]


def test_the_schedule_stops_after_its_boundaries_with_a_span_that_ends() -> None:
    placed = tuple(assignment("pro" if n % 2 else "starter", sub=f"sub_{n}", window=Window(hours(n), hours(n + 1)))
                   for n in range(20))
    stored = rows(placed)
    schedule = gate_schedule(stored, view_at(stored, hours(0)), boundaries=3)
    assert len(schedule) == 4 and schedule[-1].end == hours(4)
