"""A subscription's history in provider time: ordering, ties, effective windows, items, bindings."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import pytest

from catalog_rules.model import GrantSpec, ResolvedPrice, Source
from entitlement_service.domain.model import Status
from entitlement_service.domain.provider import SubscriptionSnapshot
from entitlement_service.domain.timeline import Derived, derive, segments
from entitlement_service.domain.windows import Window
from tests.unit.builders import (
    CONFIG,
    PRICES,
    T0,
    binding,
    catalog,
    days,
    grants,
    hours,
    item,
    price,
    product,
    resolved,
    seconds,
    snapshot,
)


def derived(*snapshots: SubscriptionSnapshot, prices: Mapping[str, ResolvedPrice] = PRICES) -> Derived:
    return derive(list(snapshots), prices, CONFIG.plans)


def plans(result: Derived) -> list[tuple[str, Window]]:
    return [(a.billing_plan_code, a.window) for a in result.assignments]


def plan_at(result: Derived, instant: datetime) -> str | None:
    held = [a.billing_plan_code for a in result.assignments if a.window.contains(instant)]
    assert len(held) <= 1, f"two plans of one subscription at {instant}: {held}"
    return held[0] if held else None


def grant_windows(result: Derived) -> list[tuple[str, int, Window]]:
    return [(b.grant_program_code, b.total_amount, b.window) for b in result.bindings]


# --- windows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "instant", "holds"),
    [
        (Window(T0, days(1)), days(1), False),
        (Window(days(1), days(2)), days(1), True),
        (Window(T0, days(1)), days(1) - timedelta(microseconds=1), True),
        (Window(days(1)), days(1), True),
        (Window(days(1)), days(1) - timedelta(microseconds=1), False),
        (Window(T0), days(10_000), True),
    ],
    ids=["ending at the instant", "starting at the instant", "just before its end", "open from the instant",
         "open, just before its start", "open-ended, far later"],
)
def test_a_window_holds_from_its_start_up_to_but_not_including_its_end(
    window: Window, instant: datetime, holds: bool
) -> None:
    assert window.contains(instant) is holds


def test_at_a_change_instant_the_new_plan_holds_and_the_old_one_no_longer_does() -> None:
    result = derived(snapshot(item("price_starter")), snapshot(item("price_pro"), at=days(10)))

    assert plan_at(result, days(10) - timedelta(microseconds=1)) == "starter"
    assert plan_at(result, days(10)) == "pro"


# --- ordering and ties --------------------------------------------------------------------------


@pytest.mark.parametrize(("update_id", "cancel_id"), [("evt_a", "evt_z"), ("evt_z", "evt_a")],
                         ids=["cancel has the larger id", "cancel has the smaller id"])
@pytest.mark.parametrize("reverse", [False, True], ids=["update listed first", "cancel listed first"])
def test_a_cancellation_and_an_update_in_the_same_second_end_the_subscription_whatever_the_order(
    update_id: str, cancel_id: str, reverse: bool
) -> None:
    update = snapshot(item("price_pro", 2), at=days(10), event_id=update_id)
    cancel = snapshot(at=days(10), event_id=cancel_id, status=Status.CANCELED, canceled_at=days(10),
                      ended_at=days(10))
    same_second = [cancel, update] if reverse else [update, cancel]

    result = derived(snapshot(), *same_second)

    assert plans(result) == [("pro", Window(T0, days(10)))]
    assert result.latest == cancel


@pytest.mark.parametrize(
    ("starter_id", "pro_id", "expected"),
    [("evt_a", "evt_b", "pro"), ("evt_b", "evt_a", "starter")],
    ids=["pro has the larger id", "starter has the larger id"],
)
@pytest.mark.parametrize("reverse", [False, True], ids=["listed in id order", "listed in reverse"])
def test_snapshots_tied_on_time_and_status_are_settled_by_the_larger_event_id(
    starter_id: str, pro_id: str, expected: str, reverse: bool
) -> None:
    tied = [snapshot(item("price_starter"), at=days(5), event_id=starter_id),
            snapshot(item("price_pro"), at=days(5), event_id=pro_id)]

    result = derived(snapshot(item("price_starter")), *(reversed(tied) if reverse else tied))

    assert plan_at(result, days(5)) == expected
    assert plan_at(result, days(100)) == expected


@pytest.mark.parametrize(
    ("earlier_in_lifecycle", "later_in_lifecycle"),
    [
        (Status.INCOMPLETE, Status.ACTIVE),
        (Status.TRIALING, Status.ACTIVE),
        (Status.ACTIVE, Status.PAST_DUE),
        (Status.PAST_DUE, Status.UNPAID),
        (Status.ACTIVE, Status.PAUSED),
        (Status.ACTIVE, Status.CANCELED),
        (Status.UNPAID, Status.CANCELED),
        (Status.INCOMPLETE, Status.INCOMPLETE_EXPIRED),
    ],
)
def test_of_two_snapshots_in_the_same_second_the_one_further_along_the_lifecycle_holds(
    earlier_in_lifecycle: Status, later_in_lifecycle: Status
) -> None:
    # The event ids are chosen so that the id tie break alone would pick the other snapshot.
    first = snapshot(at=days(3), status=earlier_in_lifecycle, event_id="evt_z")
    second = snapshot(at=days(3), status=later_in_lifecycle, event_id="evt_a")

    for same_second in ([first, second], [second, first]):
        history = [snapshot(), *same_second]
        assert derived(*history).latest == second
        assert first not in [s.snapshot for s in segments(history)], "superseded within the same instant"


def test_each_snapshot_holds_until_the_next_one_and_the_first_reaches_back_to_the_start() -> None:
    history = [snapshot(at=days(2), start_date=T0), snapshot(item("price_pro", 2), at=days(9)),
               snapshot(item("price_pro", 3), at=days(4))]

    assert [s.window for s in segments(history)] == [
        Window(T0, days(4)), Window(days(4), days(9)), Window(days(9), None)
    ]


# --- plan changes -------------------------------------------------------------------------------


def test_an_upgrade_mid_period_splits_the_assignment_at_the_change_time() -> None:
    result = derived(snapshot(item("price_starter")), snapshot(item("price_pro"), at=hours(250)))

    assert plans(result) == [("starter", Window(T0, hours(250))),
                             ("pro", Window(hours(250), None))]
    assert grant_windows(result) == [("ai_credits", 100, Window(T0, hours(250))),
                                     ("ai_credits", 1000, Window(hours(250), None))]
    assert [(c.priority, c.window) for c in result.claims] == [
        (10, Window(T0, hours(250))), (20, Window(hours(250), None))
    ]


def test_a_downgrade_at_period_end_switches_exactly_at_the_period_end_instant() -> None:
    period_end = days(31)
    result = derived(
        snapshot(item("price_pro", period_end=period_end)),
        snapshot(item("price_starter", period_start=period_end), at=period_end),
    )

    assert plans(result) == [("pro", Window(T0, period_end)), ("starter", Window(period_end, None))]
    assert plan_at(result, period_end - timedelta(seconds=1)) == "pro"
    assert plan_at(result, period_end) == "starter"


def test_trialing_then_active_is_one_unbroken_assignment() -> None:
    result = derived(snapshot(status=Status.TRIALING, trial_end=days(14)), snapshot(at=days(14)))

    assert plans(result) == [("pro", Window(T0, None))]


# --- cancellation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "ends_at"),
    [
        ([snapshot(cancel_at_period_end=True)], days(31)),
        ([snapshot(), snapshot(at=days(5), cancel_at_period_end=True)], days(31)),
        ([snapshot(), snapshot(at=days(5), cancel_at=days(20))], days(20)),
        ([snapshot(cancel_at=days(20), cancel_at_period_end=True)], days(20)),
        ([snapshot(), snapshot(at=days(10), status=Status.CANCELED, canceled_at=days(10), ended_at=days(10))],
         days(10)),
        ([snapshot(), snapshot(at=days(10), status=Status.CANCELED)], days(10)),
        ([snapshot(ended_at=days(3))], days(3)),
    ],
    ids=["at period end, no later snapshot", "at period end, asked mid-period", "at a future cancel_at",
         "cancel_at before the period end", "ended_at", "canceled without ended_at", "ended_at on an active snapshot"],
)
def test_a_cancellation_cuts_the_effective_window_at_the_provider_time_it_takes_effect(
    history: list[SubscriptionSnapshot], ends_at: datetime
) -> None:
    result = derived(*history)

    assert plans(result) == [("pro", Window(T0, ends_at))]
    assert [b.window for b in result.bindings] == [Window(T0, ends_at)]
    assert [c.window for c in result.claims] == [Window(T0, ends_at)]


def test_resuming_before_the_period_end_undoes_a_cancellation_at_period_end() -> None:
    result = derived(snapshot(), snapshot(at=days(5), cancel_at_period_end=True), snapshot(at=days(9)))

    assert plans(result) == [("pro", Window(T0, None))]


def test_a_cancellation_reported_after_it_happened_still_ends_at_ended_at() -> None:
    result = derived(snapshot(), snapshot(at=days(12), status=Status.CANCELED, canceled_at=days(10),
                                          ended_at=days(10)))

    assert plans(result) == [("pro", Window(T0, days(10)))]


# --- statuses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "effective"),
    [
        (Status.TRIALING, True),
        (Status.ACTIVE, True),
        (Status.PAST_DUE, True),
        (Status.UNPAID, False),
        (Status.INCOMPLETE, False),
        (Status.PAUSED, False),
        (Status.CANCELED, False),
        (Status.INCOMPLETE_EXPIRED, False),
    ],
)
def test_trialing_active_and_past_due_are_effective_and_no_other_status_is(status: Status, effective: bool) -> None:
    alone = derived(snapshot(status=status))
    after_a_paid_month = derived(snapshot(), snapshot(at=days(31), status=status))

    assert plans(alone) == ([("pro", Window(T0, None))] if effective else [])
    assert plans(after_a_paid_month) == [("pro", Window(T0, None if effective else days(31)))]
    assert bool(alone.claims) is effective


def test_past_due_keeps_access_until_the_subscription_becomes_unpaid() -> None:
    result = derived(snapshot(), snapshot(at=days(31), status=Status.PAST_DUE),
                     snapshot(at=days(45), status=Status.UNPAID))

    assert plans(result) == [("pro", Window(T0, days(45)))]


def test_a_missing_created_event_still_starts_the_subscription_at_its_start_date() -> None:
    result = derived(snapshot(item("price_pro", 2), at=days(3), start_date=T0))

    assert plans(result) == [("pro", Window(T0, None))]
    assert result.assignments[0].started_at == T0


def test_a_subscription_takes_effect_when_it_becomes_active_not_when_it_was_created() -> None:
    result = derived(snapshot(status=Status.INCOMPLETE), snapshot(at=seconds(40)))

    assert plans(result) == [("pro", Window(seconds(40), None))]


# --- items and bindings -------------------------------------------------------------------------


def test_an_item_removed_from_the_subscription_ends_at_that_change() -> None:
    result = derived(snapshot(item("price_pro"), item("price_storage")), snapshot(item("price_pro"), at=days(7)))

    assert [(i.price_id, i.window) for i in result.items] == [
        ("price_pro", Window(T0, None)), ("price_storage", Window(T0, days(7)))
    ]
    assert grant_windows(result) == [("ai_credits", 1000, Window(T0, None)), ("storage", 10, Window(T0, days(7)))]
    assert plans(result) == [("pro", Window(T0, None))]


def test_an_item_keeps_its_latest_unbroken_presence_when_it_comes_back() -> None:
    result = derived(snapshot(item("price_pro"), item("price_storage")), snapshot(item("price_pro"), at=days(7)),
                     snapshot(item("price_pro"), item("price_storage"), at=days(9)))

    assert [(i.price_id, i.window) for i in result.items if i.price_id == "price_storage"] == [
        ("price_storage", Window(days(9), None))
    ]


def test_a_quantity_change_splits_the_bindings_but_not_the_assignment() -> None:
    result = derived(snapshot(item("price_pro", 1)), snapshot(item("price_pro", 3), at=days(7)))

    assert plans(result) == [("pro", Window(T0, None))]
    assert [(b.quantity, b.total_amount, b.window) for b in result.bindings] == [
        (1, 1000, Window(T0, days(7))), (3, 3000, Window(days(7), None))
    ]
    assert [(i.quantity, i.window) for i in result.items] == [(3, Window(T0, None))]


BROKEN = resolved(price("price_broken", "pro", metadata={"grants": "[{"}), product("pro", plan="pro", bundle="pro"))


@pytest.mark.parametrize("price_id", ["price_unknown", "price_broken"], ids=["unknown", "invalid"])
def test_an_item_whose_price_cannot_be_resolved_contributes_nothing(price_id: str) -> None:
    prices = {**PRICES, **catalog(BROKEN)}
    assert not prices["price_broken"].valid

    beside_a_plan = derived(snapshot(item("price_starter"), item(price_id, prices=prices)), prices=prices)
    alone = derived(snapshot(item(price_id, prices=prices), sub="sub_2"), prices=prices)

    assert plans(beside_a_plan) == [("starter", Window(T0, None))]
    assert grant_windows(beside_a_plan) == [("ai_credits", 100, Window(T0, None))]
    assert beside_a_plan.subscription_group == "core"
    assert beside_a_plan.group_mismatch is None
    assert (alone.assignments, alone.bindings, alone.claims) == ((), (), ())
    assert alone.subscription_group is None
    assert alone.group_mismatch is None


def test_items_spanning_two_groups_give_a_group_mismatch_and_no_assignment() -> None:
    result = derived(snapshot(item("price_pro"), item("price_seats")))

    assert (result.assignments, result.bindings, result.claims) == ((), (), ())
    assert result.subscription_group is None
    assert result.group_mismatch is not None
    assert "addons" in result.group_mismatch and "core" in result.group_mismatch


def test_a_group_mismatch_later_in_the_history_keeps_what_held_before_it() -> None:
    result = derived(snapshot(), snapshot(item("price_pro"), item("price_seats"), at=days(5)))

    assert plans(result) == [("pro", Window(T0, days(5)))]
    assert result.group_mismatch is not None


def test_a_program_granted_by_both_product_and_price_is_bound_once_from_the_price() -> None:
    both = resolved(
        price("price_team", "team", metadata={"grants": grants(("ai_credits", 1200))}),
        product("team", plan="pro", grant_text=grants(("ai_credits", 1000), ("seats", 2))),
    )
    result = derived(snapshot(item("price_team", prices=catalog(both))), prices=catalog(both))

    assert [(b.grant_program_code, b.amount, b.source) for b in result.bindings] == [
        ("ai_credits", 1200, Source.PRICE), ("seats", 2, Source.PRODUCT)
    ]


@pytest.mark.parametrize(
    ("amount", "scale_by_quantity", "quantity", "total"),
    [(5, True, 3, 15), (5, False, 3, 5), (5, True, 1, 5), (0, True, 9, 0)],
    ids=["scaled", "not scaled", "quantity one", "zero amount"],
)
def test_a_binding_total_is_its_amount_scaled_by_quantity_when_asked(
    amount: int, scale_by_quantity: bool, quantity: int, total: int
) -> None:
    row = binding("seats", amount, quantity=quantity, scale_by_quantity=scale_by_quantity).row

    assert row.total_amount == total


def test_a_derived_binding_keeps_the_scale_flag_of_its_grant() -> None:
    unscaled = resolved(price("price_flat", "flat", metadata={"grants": grants(("ai_credits", 700, False))}),
                        product("flat", plan="starter"))
    result = derived(snapshot(item("price_flat", 4, prices=catalog(unscaled))), prices=catalog(unscaled))

    assert [(b.quantity, b.total_amount) for b in result.bindings] == [(4, 700)]
    assert result.bindings[0].source is Source.PRICE


def test_grant_specs_of_the_catalog_resolve_with_provenance() -> None:
    assert PRICES["price_pro_bonus"].grants == (
        GrantSpec("ai_credits", 1000, True, Source.PRODUCT), GrantSpec("bonus", 500, False, Source.PRICE)
    )
