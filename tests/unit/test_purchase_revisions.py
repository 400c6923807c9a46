"""A purchase's final state never changes silently: against a reference model, over random
sequences of provider outcomes for one purchase, every change is a transition along an allowed
edge with a reason, a move out of a final state says what it revises, and a subscription that
changes group is recorded by a transition that keeps the state and names both groups."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entitlement_service.domain.model import PurchaseState
from entitlement_service.domain.purchases import FINAL, PurchaseMove, settle, transition_reason

P, R, F, E, X, C = (PurchaseState.PENDING, PurchaseState.RETURNED, PurchaseState.FINALIZED,
                    PurchaseState.EXPIRED, PurchaseState.FAILED, PurchaseState.CONFLICT)

# The reference: the edges docs/rules.md lists, written out once more. Anything else is no move.
EDGES = frozenset({
    (P, R), (P, F), (P, E), (P, X), (P, C),
    (R, F), (R, E), (R, X), (R, C),
    (F, C), (C, F),
    (E, F), (E, C), (X, F), (X, C),
})
REFERENCE_FINAL = frozenset({F, E, X, C})
GROUPS = ("core", "addons", "extras")


@dataclass(frozen=True)
class Outcome:
    """One provider fact about the purchase: the state it wants (None: none), with the reason the
    provider fact gives, and the group the purchase's subscription is in now (None: unknown)."""

    wanted: PurchaseState | None
    reason: str
    group: str | None


@dataclass(frozen=True)
class Transition:
    from_state: PurchaseState
    to_state: PurchaseState
    reason: str


outcomes = st.builds(
    Outcome,
    wanted=st.one_of(st.none(), st.sampled_from(list(PurchaseState))),
    reason=st.sampled_from(["", "sub_1 took effect", "lost its group to sub_2", "checkout session expired"]),
    group=st.one_of(st.none(), st.sampled_from(GROUPS)),
)


def model(state: PurchaseState, group: str, outcome: Outcome) -> tuple[PurchaseState, str]:
    """The reference: where the purchase is after the outcome, and the group it records."""
    moved = outcome.wanted if (state, outcome.wanted) in EDGES else state
    return moved, outcome.group or group


def run(start_group: str, steps: list[Outcome]) -> tuple[list[Transition], list[tuple[PurchaseState, str]]]:
    """The transitions the rules record for the steps, and (state, group) after each step."""
    state, group = P, start_group
    recorded: list[Transition] = []
    after: list[tuple[PurchaseState, str]] = []
    for outcome in steps:
        move = settle(state, outcome.wanted, outcome.reason, group, outcome.group, "sub_1")
        if move is not None:
            recorded.append(Transition(state, move.to_state, move.reason))
            state, group = move.to_state, move.group or group
        after.append((state, group))
    return recorded, after


@settings(max_examples=400, deadline=None)
@given(start=st.sampled_from(GROUPS), steps=st.lists(outcomes, max_size=25))
def test_every_change_of_a_purchase_is_a_transition_with_a_reason_along_an_allowed_edge(
    start: str, steps: list[Outcome]
) -> None:
    recorded, after = run(start, steps)
    expected_state, expected_group = P, start
    for outcome, (state, group) in zip(steps, after, strict=True):
        expected_state, expected_group = model(expected_state, expected_group, outcome)
        assert (state, group) == (expected_state, expected_group)
    previous = P
    for t in recorded:
        assert t.from_state == previous  # transitions chain: nothing moved between them
        assert t.reason  # never an empty reason
        assert (t.from_state, t.to_state) in EDGES or t.from_state == t.to_state
        if t.from_state == t.to_state:  # a transition keeping its state records a group move
            assert "moved from group" in t.reason
        if t.from_state in REFERENCE_FINAL and t.to_state != t.from_state:
            assert t.reason.startswith(f"{t.from_state.value} revised to {t.to_state.value}: ")
        previous = t.to_state


@settings(max_examples=200, deadline=None)
@given(start=st.sampled_from(GROUPS), steps=st.lists(outcomes, max_size=25))
def test_an_outcome_seen_again_records_nothing_more(start: str, steps: list[Outcome]) -> None:
    """Replaying each provider fact right after it (a redelivered event) adds no transition."""
    once, _ = run(start, steps)
    twice, _ = run(start, [o for outcome in steps for o in (outcome, outcome)])
    assert twice == once


@settings(max_examples=200, deadline=None)
@given(start=st.sampled_from(GROUPS), steps=st.lists(outcomes, max_size=25))
def test_each_group_move_names_the_group_left_and_the_group_entered(start: str, steps: list[Outcome]) -> None:
    recorded, after = run(start, steps)
    groups = [start] + [group for _, group in after]
    moves = [(a, b) for a, b in pairwise(groups) if a != b]
    named = [t.reason for t in recorded if "moved from group" in t.reason]
    assert len(named) == len(moves)
    for (left, entered), reason in zip(moves, named, strict=True):
        assert f"sub_1 moved from group {left} to group {entered}" in reason


def test_the_reference_and_the_rules_agree_on_what_is_final() -> None:
    assert FINAL == REFERENCE_FINAL


@pytest.mark.parametrize(("current", "wanted", "reason"), [
    (F, C, "finalized revised to conflict: lost its group to sub_2"),
    (C, F, "conflict revised to finalized: sub_1 took effect"),
    (E, F, "expired revised to finalized: sub_1 took effect"),
    (X, C, "failed revised to conflict: lost its group to sub_2"),
])
def test_a_move_out_of_a_final_state_says_which_state_it_revises(
    current: PurchaseState, wanted: PurchaseState, reason: str
) -> None:
    given_reason = reason.split(": ", 1)[1]
    assert settle(current, wanted, given_reason) == PurchaseMove(wanted, reason)


@pytest.mark.parametrize(("current", "wanted"), [(F, X), (F, E), (C, X), (E, X), (X, E), (F, R), (C, P)])
def test_a_final_state_is_left_alone_by_an_outcome_it_may_not_take(current: PurchaseState,
                                                                   wanted: PurchaseState) -> None:
    assert settle(current, wanted, "late event") is None


def test_a_move_between_unfinished_states_keeps_its_reason_as_given() -> None:
    assert transition_reason(P, F, "checkout.session.completed: paid") == "checkout.session.completed: paid"


def test_a_group_move_alone_keeps_the_state_and_names_both_groups() -> None:
    assert settle(F, F, "sub_1 took effect", "core", "addons", "sub_1") == PurchaseMove(
        F, "sub_1 moved from group core to group addons", "addons")


def test_a_group_move_with_a_state_move_is_one_transition_saying_both() -> None:
    assert settle(F, C, "lost its group to sub_2", "core", "addons", "sub_1") == PurchaseMove(
        C, "finalized revised to conflict: lost its group to sub_2; sub_1 moved from group core to group addons",
        "addons")


@pytest.mark.parametrize(("recorded", "now"), [(None, "core"), ("core", None), ("core", "core")])
def test_no_group_move_without_two_known_and_different_groups(recorded: str | None, now: str | None) -> None:
    assert settle(F, None, "", recorded, now, "sub_1") is None
