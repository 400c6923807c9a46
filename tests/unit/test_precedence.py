"""Deterministic precedence between subscriptions that claim one non-stackable group at once."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlement_service.domain.account import AccountState, rebuild
from entitlement_service.domain.model import Status
from entitlement_service.domain.precedence import Claim, Loss, losses, split_by_losses
from entitlement_service.domain.provider import SubscriptionSnapshot
from entitlement_service.domain.windows import Window
from tests.unit.builders import CONFIG, PRICES, T0, days, item, snapshot


def claim(sub: str, priority: int, started_at: datetime, window: Window | None = None) -> Claim:
    return Claim(sub, "core", priority, started_at, window or Window(started_at))


def state(*histories: list[SubscriptionSnapshot]) -> AccountState:
    return rebuild({h[0].subscription_id: h for h in histories}, PRICES, CONFIG)


# --- losses between claims ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "winner", "loser"),
    [
        ([claim("sub_1", 20, T0), claim("sub_2", 10, days(1))], "sub_1", "sub_2"),
        ([claim("sub_2", 20, days(1)), claim("sub_1", 20, T0)], "sub_2", "sub_1"),
        ([claim("sub_2", 20, days(1)), claim("sub_1", 20, days(1))], "sub_1", "sub_2"),
    ],
    ids=["higher priority wins over a later start and a smaller id", "equal priority: the later start wins",
         "equal priority and start: the smaller id wins"],
)
def test_the_winner_has_higher_priority_then_the_later_start_then_the_smaller_id(
    claims: list[Claim], winner: str, loser: str
) -> None:
    expected = {loser: [Loss(Window(days(1)), winner)]}

    assert losses(claims) == expected
    assert losses(list(reversed(claims))) == expected


def test_a_partial_overlap_only_loses_the_overlapping_part() -> None:
    starter = claim("sub_1", 10, T0, Window(T0, days(10)))
    pro = claim("sub_2", 20, days(4))

    lost = losses([starter, pro])

    assert split_by_losses(starter.window, lost["sub_1"]) == [
        (Window(T0, days(4)), None), (Window(days(4), days(10)), "sub_2")
    ]
    assert "sub_2" not in lost


def test_a_loss_ends_where_the_overlap_ends() -> None:
    starter = claim("sub_1", 10, T0, Window(T0, days(10)))
    pro = claim("sub_2", 20, days(4))

    assert losses([starter, pro]) == {"sub_1": [Loss(Window(days(4), days(10)), "sub_2")]}


def test_a_claim_outranked_in_its_middle_holds_again_once_the_winner_ends() -> None:
    starter = claim("sub_1", 10, T0)
    pro = claim("sub_2", 20, days(4), Window(days(4), days(6)))

    lost = losses([starter, pro])

    assert split_by_losses(starter.window, lost["sub_1"]) == [
        (Window(T0, days(4)), None), (Window(days(4), days(6)), "sub_2"), (Window(days(6)), None)
    ]


def test_claims_that_only_touch_do_not_conflict() -> None:
    assert losses([claim("sub_1", 10, T0, Window(T0, days(4))), claim("sub_2", 20, days(4))]) == {}


def test_three_claims_starting_one_after_another_go_to_the_best_present() -> None:
    low = claim("sub_1", 10, T0)
    high = claim("sub_2", 20, days(2))
    late_high = claim("sub_3", 20, days(4))

    lost = losses([late_high, low, high])

    assert lost == {
        "sub_1": [Loss(Window(days(2), days(4)), "sub_2"), Loss(Window(days(4)), "sub_3")],
        "sub_2": [Loss(Window(days(4)), "sub_3")],
    }


def test_three_claims_give_the_group_to_exactly_one_at_every_instant() -> None:
    low = claim("sub_1", 10, T0)
    early_high = claim("sub_2", 20, days(2), Window(days(2), days(8)))
    late_high = claim("sub_3", 20, days(4), Window(days(4), days(6)))

    lost = losses([late_high, low, early_high])

    for instant in (T0, days(2), days(4), days(5), days(6), days(7), days(8), days(30)):
        present = {c.subscription_id for c in (low, early_high, late_high) if c.window.contains(instant)}
        losing = {sub for sub, runs in lost.items() for loss in runs if loss.window.contains(instant)}
        assert len(present - losing) == 1, instant
    assert lost == {
        "sub_1": [Loss(Window(days(2), days(4)), "sub_2"), Loss(Window(days(4), days(6)), "sub_3"),
                  Loss(Window(days(6), days(8)), "sub_2")],
        "sub_2": [Loss(Window(days(4), days(6)), "sub_3")],
    }


def test_split_by_losses_without_losses_keeps_the_whole_window() -> None:
    assert split_by_losses(Window(T0, days(3)), []) == [(Window(T0, days(3)), None)]


# --- account rebuild ----------------------------------------------------------------------------


def test_the_loser_keeps_its_rows_marked_with_the_winner_over_the_lost_window() -> None:
    account = state([snapshot(item("price_starter"), sub="sub_1")],
                    [snapshot(sub="sub_2", at=days(3), start_date=days(3))])

    starter = [(p.window, p.conflict_with) for p in account.assignments if p.row.subscription_id == "sub_1"]
    credits = [(p.window, p.conflict_with) for p in account.bindings if p.row.subscription_id == "sub_1"]
    pro = [(p.window, p.conflict_with) for p in account.assignments if p.row.subscription_id == "sub_2"]
    assert starter == [(Window(T0, days(3)), None), (Window(days(3)), "sub_2")]
    assert credits == starter
    assert pro == [(Window(days(3)), None)]
    assert account.lost == {("sub_1", "core"): [Loss(Window(days(3)), "sub_2")]}
    assert account.lost_at_start("sub_1") is None
    assert account.lost_at_start("sub_2") is None


def test_the_loser_is_effective_again_once_the_winner_is_canceled() -> None:
    account = state([snapshot(item("price_starter"), sub="sub_1")],
                    [snapshot(sub="sub_2", at=days(3), start_date=days(3), cancel_at=days(6))])

    starter = [(p.window, p.conflict_with) for p in account.assignments if p.row.subscription_id == "sub_1"]
    assert starter == [(Window(T0, days(3)), None), (Window(days(3), days(6)), "sub_2"), (Window(days(6)), None)]
    assert account.lost == {("sub_1", "core"): [Loss(Window(days(3), days(6)), "sub_2")]}


def test_a_subscription_outranked_from_its_first_instant_lost_at_start() -> None:
    account = state([snapshot(sub="sub_1")],
                    [snapshot(item("price_starter"), sub="sub_2", at=days(3), start_date=days(3))])

    assert account.lost_at_start("sub_2") == "sub_1"
    assert account.lost_at_start("sub_1") is None
    assert account.lost_at_start("sub_unknown") is None


def test_an_upgrade_of_the_loser_wins_the_group_back_from_the_upgrade_on() -> None:
    account = state([snapshot(item("price_starter"), sub="sub_1"), snapshot(sub="sub_1", at=days(10))],
                    [snapshot(item("price_starter"), sub="sub_2", at=days(3), start_date=days(3))])

    assert account.lost == {
        ("sub_1", "core"): [Loss(Window(days(3), days(10)), "sub_2")],
        ("sub_2", "core"): [Loss(Window(days(10)), "sub_1")],
    }


def test_subscriptions_in_a_stackable_group_never_conflict() -> None:
    account = state([snapshot(item("price_seats", 2), sub="sub_1")],
                    [snapshot(item("price_seats", 5), sub="sub_2", at=days(1), start_date=days(1))])

    assert account.lost == {}
    assert all(not p.conflict for p in (*account.assignments, *account.bindings))
    assert sorted(p.row.total_amount for p in account.bindings) == [2, 5]


def test_a_subscription_in_another_group_does_not_conflict() -> None:
    account = state([snapshot(sub="sub_1")], [snapshot(item("price_seats"), sub="sub_2")])

    assert account.lost == {}


# --- order tolerance ----------------------------------------------------------------------------

SUBSCRIPTIONS = ("sub_1", "sub_2", "sub_3")
ITEM_PRICES = ("price_starter", "price_pro", "price_storage", "price_seats", "price_unknown")
maybe_day = st.none() | st.integers(min_value=0, max_value=12).map(days)


@st.composite
def history(draw: st.DrawFn, sub: str) -> list[SubscriptionSnapshot]:
    """A subscription's snapshots, on a coarse clock so that equal provider times are common."""
    start = draw(st.none() | st.integers(min_value=0, max_value=3).map(days))
    snaps = []
    for n in range(draw(st.integers(min_value=1, max_value=5))):
        prices = draw(st.lists(st.sampled_from(ITEM_PRICES), min_size=1, max_size=2, unique=True))
        quantity = draw(st.integers(min_value=1, max_value=3))
        snaps.append(snapshot(
            *(item(p, quantity) for p in prices), sub=sub, status=draw(st.sampled_from(list(Status))),
            at=days(draw(st.integers(min_value=0, max_value=8))), event_id=draw(st.sampled_from(["a", "b"])) + str(n),
            start_date=start, cancel_at=draw(maybe_day), cancel_at_period_end=draw(st.booleans()),
            ended_at=draw(maybe_day),
        ))
    return snaps


@st.composite
def account_histories(draw: st.DrawFn) -> dict[str, list[SubscriptionSnapshot]]:
    subs = draw(st.lists(st.sampled_from(SUBSCRIPTIONS), min_size=1, max_size=3, unique=True))
    return {sub: draw(history(sub)) for sub in subs}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories=account_histories(), data=st.data())
def test_the_account_is_the_same_for_any_arrival_order_and_any_duplicates(
    histories: dict[str, list[SubscriptionSnapshot]], data: st.DataObject
) -> None:
    delivered = {}
    for sub, snaps in histories.items():
        replayed = data.draw(st.lists(st.sampled_from(snaps), max_size=3), label=f"duplicates of {sub}")
        delivered[sub] = data.draw(st.permutations([*snaps, *replayed]), label=f"arrival order of {sub}")

    assert rebuild(delivered, PRICES, CONFIG) == rebuild(histories, PRICES, CONFIG)


def test_same_second_snapshots_of_two_subscriptions_resolve_the_same_way_in_any_order() -> None:
    first = [snapshot(sub="sub_1", at=days(2), start_date=days(2)),
             snapshot(item("price_starter"), sub="sub_1", at=days(5), start_date=days(2), event_id="evt_b")]
    second = [snapshot(item("price_starter"), sub="sub_2", at=days(5), start_date=days(5), event_id="evt_a"),
              snapshot(sub="sub_2", at=days(5), start_date=days(5), event_id="evt_c")]

    baseline = rebuild({"sub_1": first, "sub_2": second}, PRICES, CONFIG)
    swapped = rebuild({"sub_2": second[::-1], "sub_1": first[::-1]}, PRICES, CONFIG)

    assert swapped == baseline
    assert baseline.lost == {("sub_1", "core"): [Loss(Window(days(5)), "sub_2")]}
    assert baseline.lost_at_start("sub_2") is None


def test_precedence_compares_provider_starts_to_the_microsecond() -> None:
    earlier, later = T0, T0 + timedelta(microseconds=1)

    assert losses([claim("sub_1", 20, later), claim("sub_2", 20, earlier)]) == {
        "sub_2": [Loss(Window(later), "sub_1")]
    }
