"""What each provider event needs and may share, decided from the event alone: whether it needs
an account and which one, its outcome when it needs none, what it may be applied together with,
and whether it is stale against the state held."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from entitlement_service.domain import event_policy as policy
from entitlement_service.domain.model import Outcome, Status
from entitlement_service.domain.provider import ProviderEvent, ProviderObject, SubscriptionSnapshot
from entitlement_service.domain.records import SubscriptionRecord
from entitlement_service.domain.timeline import order_key
from tests.unit.builders import PRICES, T0, checkout_session, invoice, seconds, snapshot


def event(obj: ProviderObject | None, type_: str = "customer.subscription.updated", *, event_id: str = "evt_1",
          account_id: str | None = None, customer_account_id: str | None = None,
          malformed: str | None = None) -> ProviderEvent:
    return ProviderEvent(provider_event_id=event_id, type=type_, created=T0, received_at=T0, api_version="",
                         raw_payload=b"{}", snapshot=b"", account_id=account_id,
                         customer_account_id=customer_account_id, object=obj, malformed=malformed)


SUBSCRIPTION = event(snapshot())
PAID_INVOICE = event(invoice(), "invoice.paid")
UNPAID_INVOICE = event(invoice(paid=False), "invoice.paid")
ONE_OFF_INVOICE = event(invoice(sub=None), "invoice.paid")
OTHER_INVOICE_TYPE = event(invoice(), "invoice.payment_succeeded")
SESSION = event(checkout_session(), "checkout.session.completed")
PRODUCT = event(PRICES["price_pro"].price, "price.updated")
MALFORMED = event(None, "customer.subscription.updated", malformed="malformed subscription: status is required")
UNUSED = event(None, "customer.created")
RECONCILED = event(snapshot(), "reconciliation.subscription", account_id="acct_1")

NEEDS_ACCOUNT = [
    (SUBSCRIPTION, True), (RECONCILED, True), (PAID_INVOICE, True), (UNPAID_INVOICE, False),
    (ONE_OFF_INVOICE, False), (OTHER_INVOICE_TYPE, False), (SESSION, False), (PRODUCT, False), (MALFORMED, False),
    (UNUSED, False),
]
IDS = ["subscription", "reconciled subscription", "paid subscription invoice", "unpaid invoice",
       "invoice of no subscription", "invoice.payment_succeeded", "checkout session", "price", "malformed",
       "unused type"]


@pytest.mark.parametrize(("given", "expected"), NEEDS_ACCOUNT, ids=IDS)
def test_only_subscription_snapshots_and_paid_subscription_invoices_need_an_account(
    given: ProviderEvent, expected: bool
) -> None:
    assert policy.needs_account(given) is expected


@pytest.mark.parametrize(("given", "outcome", "reason"), [
    (MALFORMED, Outcome.REJECTED, "malformed subscription: status is required"),
    (UNPAID_INVOICE, Outcome.IGNORED, "only paid subscription invoices fund grants; status changes arrive as "
                                      "subscription events"),
    (OTHER_INVOICE_TYPE, Outcome.IGNORED, "only paid subscription invoices fund grants; status changes arrive as "
                                          "subscription events"),
    (UNUSED, Outcome.IGNORED, "customer.created is not used"),
    (SUBSCRIPTION, None, None),
    (PAID_INVOICE, None, None),
], ids=["malformed", "unpaid invoice", "other invoice type", "unused type", "subscription", "paid invoice"])
def test_an_event_that_needs_no_account_is_decided_without_reading_anything(
    given: ProviderEvent, outcome: Outcome | None, reason: str | None
) -> None:
    decided = policy.outcome_without_account(given)
    assert (decided.outcome, decided.reason) == (outcome, reason) if decided else outcome is None


def test_an_event_whose_account_cannot_be_found_is_rejected_as_unknown_account() -> None:
    rejected = policy.unknown_account(SUBSCRIPTION)
    assert (rejected.outcome, rejected.reason, rejected.account_id) == (Outcome.REJECTED, "unknown_account", None)


@pytest.mark.parametrize(("metadata", "hint", "linked", "customer_metadata", "expected"), [
    ("acct_meta", "acct_hint", "acct_linked", "acct_customer", "acct_meta"),
    (None, "acct_hint", "acct_linked", "acct_customer", "acct_hint"),
    (None, None, "acct_linked", "acct_customer", "acct_linked"),
    (None, None, None, "acct_customer", "acct_customer"),
    (None, None, None, None, None),
    ("", "", "", "", None),
], ids=["object metadata first", "then what the caller knows", "then the customer's link",
        "then the customer's metadata", "none: unknown", "empty strings count as absent"])
def test_an_events_account_is_found_in_a_fixed_order(
    metadata: str | None, hint: str | None, linked: str | None, customer_metadata: str | None, expected: str | None
) -> None:
    given = event(snapshot(), account_id=metadata, customer_account_id=customer_metadata)
    assert policy.account_of(given, linked, hint) == expected


@pytest.mark.parametrize(("given", "alone"), [
    (SESSION, True), (PRODUCT, True), (SUBSCRIPTION, False), (PAID_INVOICE, False), (UNUSED, False),
    (event(None, "checkout.session.completed", malformed="malformed checkout_session: x"), False),
], ids=["checkout session", "catalog object", "subscription", "invoice", "unused", "malformed session"])
def test_checkout_sessions_and_catalog_objects_are_applied_one_at_a_time(given: ProviderEvent, alone: bool) -> None:
    assert policy.applied_alone(given) is alone


@pytest.mark.parametrize(("first", "second", "share"), [
    (event(snapshot(sub="sub_1"), account_id="acct_1"), event(snapshot(sub="sub_2"), "x", event_id="evt_2",
                                                               account_id="acct_1"), True),
    (event(snapshot(sub="sub_1")), event(invoice(sub="sub_1"), "invoice.paid", event_id="evt_2"), True),
    (event(snapshot(sub="sub_1")), event(snapshot(sub="sub_2"), event_id="evt_2"), True),  # both of customer cus_1
    (event(snapshot(sub="sub_1"), account_id="acct_1"), event(snapshot(sub="sub_1"), account_id="acct_1"), True),
    (event(replace(snapshot(sub="sub_1"), provider_customer_id="cus_a"), account_id="acct_1"),
     event(replace(snapshot(sub="sub_2"), provider_customer_id="cus_b"), event_id="evt_2", account_id="acct_2"),
     False),
], ids=["same account", "invoice of the subscription", "same customer", "the same event twice",
        "nothing in common"])
def test_events_about_one_account_customer_or_subscription_are_not_applied_together(
    first: ProviderEvent, second: ProviderEvent, share: bool
) -> None:
    assert bool(policy.batch_keys(first) & policy.batch_keys(second)) is share


@pytest.mark.parametrize(("type_", "cause"), [
    ("reconciliation.subscription", "reconciliation"), ("reconciliation.checkout.session.completed", "reconciliation"),
    ("customer.subscription.updated", "provider_event"), ("invoice.paid", "provider_event"),
])
def test_the_audit_trail_names_reconciliations_apart_from_provider_events(type_: str, cause: str) -> None:
    assert policy.cause_of(event(snapshot(), type_)) == cause


def test_an_event_naming_another_accounts_customer_is_refused_naming_both_accounts() -> None:
    assert policy.linked_elsewhere("acct_2", "cus_1", "acct_1") == (
        "customer_linked_elsewhere: customer cus_1 is linked to account acct_1, not acct_2")


@pytest.mark.parametrize(("entry", "problem"), [
    (None, "unknown_price: price_x is not in the catalog and the event does not carry its product"),
    (replace(PRICES["price_pro"], valid=False, invalid_reason="price price_x: plan 'gold' is not a known plan"),
     "invalid_catalog_entry: price price_x: plan 'gold' is not a known plan"),
    (PRICES["price_pro"], None),
], ids=["unknown price", "invalid entry", "usable"])
def test_an_event_naming_an_unknown_or_invalid_price_cannot_be_applied(entry: object, problem: str | None) -> None:
    assert policy.catalog_problem("price_x", entry) == problem  # type: ignore[arg-type]


def like(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern) + r"\Z")


@pytest.mark.parametrize(("given", "needs"), list(zip([e for e, _ in NEEDS_ACCOUNT], [n for _, n in NEEDS_ACCOUNT],
                                                      strict=True)), ids=IDS)
def test_every_event_type_that_needs_an_account_is_one_the_stored_history_keeps(
    given: ProviderEvent, needs: bool
) -> None:
    # The SQL that reads an account's history and adopts waiting events receives these patterns.
    if needs:
        assert any(like(p).match(given.type) for p in policy.ACCOUNT_EVENT_TYPES), given.type


def held(of: SubscriptionSnapshot) -> SubscriptionRecord:
    return SubscriptionRecord.of(of, "acct_1", "core", None)


@pytest.mark.parametrize(("held_snapshot", "incoming", "stale"), [
    (None, snapshot(at=seconds(10)), False),
    (snapshot(at=seconds(20)), snapshot(at=seconds(10)), True),
    (snapshot(at=seconds(10)), snapshot(at=seconds(20)), False),
    (snapshot(at=seconds(10), event_id="evt_a"), snapshot(at=seconds(10), event_id="evt_a"), False),
    (snapshot(at=seconds(10), status=Status.CANCELED, event_id="evt_a"),
     snapshot(at=seconds(10), status=Status.ACTIVE, event_id="evt_z"), True),
    (snapshot(at=seconds(10), event_id="evt_b"), snapshot(at=seconds(10), event_id="evt_a"), True),
    (replace(snapshot(at=seconds(10), event_id="evt_a"), refetched=True), snapshot(at=seconds(10), event_id="evt_z"),
     True),
], ids=["nothing held", "older than held", "newer than held", "the state held itself",
        "same second, held further along the lifecycle", "same second and status, larger event id held",
        "same second, held read from the provider"])
def test_a_snapshot_is_stale_when_the_state_held_is_later_in_provider_order(
    held_snapshot: SubscriptionSnapshot | None, incoming: SubscriptionSnapshot, stale: bool
) -> None:
    reason = policy.stale_reason(incoming, held(held_snapshot) if held_snapshot else None)
    assert (reason is not None) is stale
    if held_snapshot is not None and stale:
        assert reason == f"older than the state held (from {held_snapshot.event_id})"


@pytest.mark.parametrize("status", list(Status))
def test_the_state_held_is_ordered_by_the_same_rule_as_the_snapshot_it_came_from(status: Status) -> None:
    for refetched in (False, True):
        given = replace(snapshot(at=seconds(3), status=status), refetched=refetched)
        assert held(given).order_key == order_key(given)
