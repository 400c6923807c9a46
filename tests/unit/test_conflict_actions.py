"""The conflict action's steps (domain/conflict_actions.py) against a reference model of the
provider: whatever order, repetition or loss the reports and attempts meet, the losing
subscription is canceled once and refunded at most once, and the loser is the one precedence
ranks second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from entitlement_service.domain.conflict_actions import (
    FINAL,
    ActionState,
    cancel_key,
    next_action_state,
    refund_key,
)
from entitlement_service.domain.precedence import precedence_key

A = ActionState


def test_an_action_moves_forward_only() -> None:
    assert next_action_state(A.DECIDED, A.CANCELED) is A.CANCELED
    assert next_action_state(A.CANCELED, A.REFUNDED) is A.REFUNDED
    assert next_action_state(A.DECIDED, A.SKIPPED) is A.SKIPPED
    assert next_action_state(A.CANCELED, A.CANCELED) is None
    assert next_action_state(A.REFUNDED, A.REFUNDED) is None
    assert next_action_state(A.REFUNDED, A.CANCELED) is None
    assert next_action_state(A.SKIPPED, A.REFUNDED) is None


def test_the_provider_keys_are_derived_from_the_subscription_alone() -> None:
    assert cancel_key("sub_1") == cancel_key("sub_1") != cancel_key("sub_2")
    assert refund_key("sub_1") != cancel_key("sub_1")


# An executor's attempt: it may crash after the provider call and before the report, run twice
# (two replicas), or its report may be delivered again later.
ATTEMPTS = st.lists(st.tuples(st.sampled_from(["run", "crash_after_call", "late_report"]), st.integers(0, 3)),
                    min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(ATTEMPTS)
def test_the_loser_is_refunded_at_most_once_whatever_the_attempts(attempts: list[tuple[str, int]]) -> None:
    provider_cancels: dict[str, str] = {}  # idempotency key -> result, as the provider keeps them
    provider_refunds: dict[str, str] = {}
    state, refund_id = A.DECIDED, None
    reports: list[tuple[ActionState, str | None]] = []
    sub = "sub_loser"

    def report(reported: ActionState, refund: str | None) -> None:
        nonlocal state, refund_id
        moved = next_action_state(state, reported)
        if moved is not None:
            state, refund_id = moved, refund_id or refund

    for kind, replay in attempts:
        if kind == "late_report" and reports:
            report(*reports[replay % len(reports)])
            continue
        seen = state  # what the executor read before acting
        if seen in FINAL:
            continue
        if seen is A.DECIDED:
            provider_cancels.setdefault(cancel_key(sub), "canceled")
            if kind == "crash_after_call":
                continue
            reports.append((A.CANCELED, None))
            report(A.CANCELED, None)
        made = provider_refunds.setdefault(refund_key(sub), f"re_{len(provider_refunds) + 1}")
        if kind == "crash_after_call":
            continue
        reports.append((A.REFUNDED, made))
        report(A.REFUNDED, made)
    assert len(provider_cancels) <= 1 and len(provider_refunds) <= 1
    if refund_id is not None:
        assert state is A.REFUNDED and refund_id == provider_refunds[refund_key(sub)]


PRIORITY = st.integers(0, 30)
START = st.integers(0, 10_000)


@given(PRIORITY, START, PRIORITY, START)
def test_the_loser_ranks_second_by_priority_then_later_start_then_smaller_id(p1: int, s1: int, p2: int,
                                                                                s2: int) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    one = (p1, t0 + timedelta(seconds=s1), "sub_a")
    two = (p2, t0 + timedelta(seconds=s2), "sub_b")
    winner = min((one, two), key=lambda s: precedence_key(*s))
    if p1 != p2:
        expected = one if p1 > p2 else two
    elif s1 != s2:
        expected = one if s1 > s2 else two
    else:
        expected = one  # the smaller subscription id
    assert winner == expected
