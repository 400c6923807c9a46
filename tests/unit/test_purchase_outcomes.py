"""What each provider fact wants of a purchase: a checkout session's event, and the derived
state of the subscription a purchase bought."""

from __future__ import annotations

import pytest

from entitlement_service.domain.account import rebuild
from entitlement_service.domain.model import Mode, PurchaseState, Status
from entitlement_service.domain.provider import SubscriptionSnapshot
from entitlement_service.domain.purchases import SessionStep, session_step, subscription_outcome
from tests.unit.builders import CONFIG, PRICES, checkout_session, days, item, snapshot

F, E, X, C = PurchaseState.FINALIZED, PurchaseState.EXPIRED, PurchaseState.FAILED, PurchaseState.CONFLICT
PAID_ONE_TIME = checkout_session()
PAID_SUBSCRIPTION = checkout_session(mode=Mode.SUBSCRIPTION, subscription_id="sub_1")


@pytest.mark.parametrize(("type_", "session", "expected"), [
    ("checkout.session.expired", checkout_session(status="expired", payment_status="unpaid"),
     SessionStep(E, "checkout session expired")),
    ("reconciliation.checkout.session.expired", checkout_session(status="expired", payment_status="unpaid"),
     SessionStep(E, "checkout session expired")),
    ("checkout.session.async_payment_failed", checkout_session(payment_status="unpaid"),
     SessionStep(X, "asynchronous payment failed")),
    ("checkout.session.completed", PAID_ONE_TIME, SessionStep(F, "checkout.session.completed: paid", funds=True)),
    ("checkout.session.async_payment_succeeded", PAID_ONE_TIME,
     SessionStep(F, "checkout.session.async_payment_succeeded: paid", funds=True)),
    ("checkout.session.completed", checkout_session(payment_status="no_payment_required"),
     SessionStep(F, "checkout.session.completed: paid", funds=True)),
    ("checkout.session.completed", PAID_SUBSCRIPTION, SessionStep(None, "", links_subscription=True)),
    ("checkout.session.completed", checkout_session(mode=Mode.SUBSCRIPTION), SessionStep(None, "")),
    ("checkout.session.completed", checkout_session(payment_status="unpaid"),
     SessionStep(None, "payment unpaid; waiting for the provider")),
    ("checkout.session.expired", PAID_ONE_TIME, SessionStep(E, "checkout session expired")),
], ids=["expired", "expired, read by the reconciler", "asynchronous payment failed", "paid one-time",
        "paid later, asynchronously", "nothing to pay", "paid subscription: only names its subscription",
        "paid subscription without its id yet", "not paid yet", "an expiry wins over a paid status"])
def test_a_checkout_session_event_moves_its_purchase_only_as_the_provider_says(
    type_: str, session: object, expected: SessionStep
) -> None:
    assert session_step(type_, session) == expected  # type: ignore[arg-type]


def outcome(*histories: list[SubscriptionSnapshot], of: str = "sub_1") -> tuple[PurchaseState | None, str]:
    state = rebuild({h[0].subscription_id: h for h in histories}, PRICES, CONFIG)
    derived = next(d for d in state.subscriptions if d.latest.subscription_id == of)
    return subscription_outcome(state, derived)


def test_a_subscription_purchase_is_finalized_once_its_subscription_took_effect() -> None:
    assert outcome([snapshot()]) == (F, "sub_1 took effect")


def test_a_subscription_purchase_that_lost_its_group_at_its_start_is_a_conflict() -> None:
    holder = [snapshot(sub="sub_0", at=days(0), start_date=days(0))]
    late = [snapshot(item("price_starter"), sub="sub_1", at=days(1), start_date=days(1))]
    assert outcome(holder, late) == (C, "lost its group to sub_0")


def test_a_subscription_that_expired_before_its_first_payment_fails_its_purchase() -> None:
    assert outcome([snapshot(status=Status.INCOMPLETE), snapshot(status=Status.INCOMPLETE_EXPIRED,
                                                                 at=days(1))]) == (X, "sub_1 expired before its "
                                                                                      "first payment")


def test_a_subscription_not_yet_paid_leaves_its_purchase_as_it_is() -> None:
    assert outcome([snapshot(status=Status.INCOMPLETE)]) == (None, "")


def test_an_effective_subscription_that_claims_no_group_still_finalizes_its_purchase() -> None:
    # Items spanning two groups claim none (a group mismatch); the provider still took the payment.
    assert outcome([snapshot(item("price_pro"), item("price_seats"))]) == (F, "sub_1 is active")
