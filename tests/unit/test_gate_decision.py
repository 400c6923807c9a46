"""What an account holds at one instant: effective plans, bindings, its gate bundle and gates."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from entitlement_service.domain.account import PlacedAssignment, PlacedBinding, rebuild
from entitlement_service.domain.entitlements import bindings_at, decide_gates, effective_at, next_change
from entitlement_service.domain.windows import Window
from tests.unit.builders import BUNDLES, CONFIG, PRICES, T0, assignment, binding, days, item, snapshot

JUST_BEFORE = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("effective", "bundle"),
    [
        ([assignment("starter"), assignment("pro", sub="sub_2")], "pro"),
        ([assignment("pro", bundle="starter", started_at=T0), assignment("pro", sub="sub_2", started_at=days(1))],
         "pro"),
        ([assignment("pro", sub="sub_2"), assignment("pro", bundle="starter", sub="sub_1")], "starter"),
        ([assignment("seats", bundle="pro", group="addons"), assignment("starter")], "starter"),
    ],
    ids=["higher priority", "equal priority: later start", "equal start: smaller subscription id",
         "an add-on of lower priority does not decide"],
)
def test_the_bundle_is_that_of_the_highest_precedence_effective_plan(
    effective: list[PlacedAssignment], bundle: str
) -> None:
    for order in (effective, effective[::-1]):
        decision = decide_gates(order, BUNDLES)
        assert decision.gate_bundle == bundle
        assert decision.gates == frozenset(BUNDLES[bundle].gates)


def test_the_reason_names_the_winner_and_what_it_outranks() -> None:
    decision = decide_gates([assignment("starter"), assignment("pro", sub="sub_2")], BUNDLES)

    assert decision.winner is not None and decision.winner.row.subscription_id == "sub_2"
    assert decision.reason == "pro (priority 20, sub_2) outranks starter (priority 10)"


def test_a_plan_that_names_no_bundle_is_skipped() -> None:
    decision = decide_gates([assignment("pro", bundle=""), assignment("starter", sub="sub_2")], BUNDLES)

    assert decision.gate_bundle == "starter"
    assert decision.gates == frozenset({"export"})


def test_a_conflicted_plan_takes_no_part() -> None:
    decision = decide_gates([assignment("pro", conflict_with="sub_2"), assignment("starter", sub="sub_2")], BUNDLES)

    assert decision.gate_bundle == "starter"
    assert decision.winner is not None and decision.winner.row.billing_plan_code == "starter"


def test_an_unconfigured_bundle_gives_no_gates_and_says_why() -> None:
    decision = decide_gates([assignment("pro", bundle="enterprise"), assignment("starter", sub="sub_2")], BUNDLES)

    assert decision.gate_bundle == "enterprise"
    assert decision.gates == frozenset()
    assert "enterprise is not configured" in decision.reason


@pytest.mark.parametrize(
    "effective",
    [[], [assignment("pro", bundle="")], [assignment("pro", conflict_with="sub_2")]],
    ids=["no plan", "no plan names a bundle", "only a conflicted plan"],
)
def test_without_a_candidate_there_is_no_bundle_and_no_gates(effective: list[PlacedAssignment]) -> None:
    decision = decide_gates(effective, BUNDLES)

    assert (decision.gate_bundle, decision.gates, decision.winner) == (None, frozenset(), None)
    assert decision.reason == "no effective plan names a gate bundle"


# --- as of an instant ---------------------------------------------------------------------------

UPGRADED = (
    assignment("starter", window=Window(T0, days(10))),
    assignment("pro", started_at=T0, window=Window(days(10))),
)


@pytest.mark.parametrize(
    ("as_of", "plans"),
    [
        (T0 - JUST_BEFORE, []),
        (T0, ["starter"]),
        (days(10) - JUST_BEFORE, ["starter"]),
        (days(10), ["pro"]),
        (days(400), ["pro"]),
    ],
    ids=["before the start", "at the start", "just before the change", "at the change", "long after"],
)
def test_a_plan_is_effective_from_its_start_up_to_but_not_including_its_end(
    as_of: datetime, plans: list[str]
) -> None:
    assert [p.row.billing_plan_code for p in effective_at(UPGRADED, as_of)] == plans


def test_effective_plans_include_conflicted_ones_after_the_winners() -> None:
    placed = [assignment("pro", conflict_with="sub_2"), assignment("starter", sub="sub_2")]

    held = effective_at(placed, days(1))

    assert [(p.row.billing_plan_code, p.conflict) for p in held] == [("starter", False), ("pro", True)]


def test_bindings_hold_at_an_instant_unless_lost_to_another_subscription() -> None:
    placed = [
        binding("ai_credits", window=Window(T0, days(10))),
        binding("ai_credits", 3000, quantity=3, window=Window(days(10))),
        binding("seats", 1, sub="sub_2", window=Window(T0), conflict_with="sub_1"),
    ]

    assert [p.row.amount for p in bindings_at(placed, days(10) - JUST_BEFORE)] == [1000]
    assert [p.row.amount for p in bindings_at(placed, days(10))] == [3000]


def test_an_account_upgraded_mid_period_has_the_new_gates_from_the_change_instant() -> None:
    account = rebuild({"sub_1": [snapshot(item("price_starter")), snapshot(at=days(10))],
                       "sub_2": [snapshot(item("price_seats", 2), sub="sub_2")]}, PRICES, CONFIG)

    before = decide_gates(effective_at(account.assignments, days(10) - JUST_BEFORE), BUNDLES)
    after = decide_gates(effective_at(account.assignments, days(10)), BUNDLES)

    assert (before.gate_bundle, before.gates) == ("starter", frozenset({"export"}))
    assert (after.gate_bundle, after.gates) == ("pro", frozenset({"export", "api_access"}))


def test_the_losing_subscription_never_decides_the_gates() -> None:
    account = rebuild({"sub_1": [snapshot(item("price_starter"), sub="sub_1", at=days(1), start_date=days(1))],
                       "sub_2": [snapshot(sub="sub_2")]}, PRICES, CONFIG)

    held = effective_at(account.assignments, days(2))

    assert [(p.row.subscription_id, p.conflict_with) for p in held] == [("sub_2", None), ("sub_1", "sub_2")]
    assert decide_gates(held, BUNDLES).gate_bundle == "pro"


# --- next change --------------------------------------------------------------------------------

CHANGES: tuple[PlacedAssignment | PlacedBinding, ...] = (
    *UPGRADED,
    binding("ai_credits", window=Window(T0, days(3))),
)


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (T0 - JUST_BEFORE, T0),
        (T0, days(3)),
        (days(3) - JUST_BEFORE, days(3)),
        (days(3), days(10)),
        (days(10), None),
    ],
    ids=["before everything", "at a start", "just before an end", "exactly at an end", "after the last boundary"],
)
def test_the_next_change_is_the_first_boundary_strictly_after_the_instant(
    after: datetime, expected: datetime | None
) -> None:
    assert next_change(CHANGES, after) == expected
