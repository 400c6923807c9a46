"""The purchase session state machine: which state a wanted change leads to, if any."""

from __future__ import annotations

import pytest

from entitlement_service.domain.model import PurchaseState
from entitlement_service.domain.purchases import FINAL, next_state

P, R, F, E, X, C = (PurchaseState.PENDING, PurchaseState.RETURNED, PurchaseState.FINALIZED,
                    PurchaseState.EXPIRED, PurchaseState.FAILED, PurchaseState.CONFLICT)
WANTED = (P, R, F, E, X, C)

# Row: the current state; columns: the wanted state in WANTED order; cell: the state moved to,
# or None when the wanted state changes nothing or may not follow.
MOVES: dict[PurchaseState, tuple[PurchaseState | None, ...]] = {
    #     pending returned finalized expired failed conflict
    P: (None, R, F, E, X, C),
    R: (None, None, F, E, X, C),
    F: (None, None, None, None, None, C),
    E: (None, None, F, None, None, C),
    X: (None, None, F, None, None, C),
    C: (None, None, F, None, None, None),
}
TABLE = [(current, wanted, moved) for current, row in MOVES.items() for wanted, moved in zip(WANTED, row, strict=True)]


@pytest.mark.parametrize(("current", "wanted", "expected"), TABLE,
                         ids=[f"{c.value}->{w.value}" for c, w, _ in TABLE])
def test_a_purchase_moves_only_along_the_allowed_transitions(
    current: PurchaseState, wanted: PurchaseState, expected: PurchaseState | None
) -> None:
    assert next_state(current, wanted) == expected


def test_the_table_covers_every_pair_of_states() -> None:
    assert {(c, w) for c, w, _ in TABLE} == {(c, w) for c in PurchaseState for w in PurchaseState}


@pytest.mark.parametrize("current", sorted(FINAL))
def test_a_browser_returning_after_the_provider_decided_changes_nothing(current: PurchaseState) -> None:
    assert next_state(current, R) is None


@pytest.mark.parametrize("state", list(PurchaseState))
def test_asking_for_the_current_state_is_no_change(state: PurchaseState) -> None:
    assert next_state(state, state) is None


@pytest.mark.parametrize("current", list(PurchaseState))
def test_nothing_goes_back_to_pending(current: PurchaseState) -> None:
    assert next_state(current, P) is None


def test_the_provider_may_finalize_a_purchase_the_browser_never_came_back_from() -> None:
    assert next_state(P, F) is F


@pytest.mark.parametrize(("current", "wanted"), [(F, C), (C, F)])
def test_a_late_provider_event_may_swap_finalized_and_conflict(current: PurchaseState, wanted: PurchaseState) -> None:
    assert next_state(current, wanted) is wanted


def test_final_states_are_the_provider_decisions() -> None:
    assert {F, E, X, C} == FINAL
