"""Issuing grants from paid invoices and paid one-time checkouts, each exactly once by key."""

from __future__ import annotations

import pytest

from catalog_rules.model import Cadence, Source
from entitlement_service.domain.account import PlacedBinding, rebuild
from entitlement_service.domain.funding import checkout_issues, invoice_issues
from entitlement_service.domain.model import Mode
from entitlement_service.domain.provider import InvoiceSnapshot, SubscriptionSnapshot
from entitlement_service.domain.windows import Window
from tests.unit.builders import (
    CONFIG,
    PRICES,
    PROGRAMS,
    T0,
    binding,
    catalog,
    checkout_session,
    days,
    grants,
    invoice,
    invoice_line,
    item,
    line_item,
    price,
    product,
    resolved,
    snapshot,
)


def bindings(*histories: list[SubscriptionSnapshot]) -> tuple[PlacedBinding, ...]:
    return rebuild({h[0].subscription_id: h for h in histories}, PRICES, CONFIG).bindings


def issued(paid: InvoiceSnapshot, placed: tuple[PlacedBinding, ...]) -> list[tuple[str, int]]:
    return [(i.issue_key, i.amount) for i in invoice_issues(paid, placed, PROGRAMS)]


PRO_MONTHLY = bindings([snapshot()])


# --- invoices -----------------------------------------------------------------------------------


def test_a_paid_invoice_issues_the_per_period_grant_of_its_line() -> None:
    [issue] = invoice_issues(invoice(at=days(0.01)), PRO_MONTHLY, PROGRAMS)

    assert issue.issue_key == "in_1:price_pro:ai_credits"
    assert (issue.grant_program_code, issue.cadence, issue.unit) == ("ai_credits", Cadence.PER_PERIOD, "credit")
    assert (issue.amount, issue.source, issue.price_id) == (1000, Source.PRODUCT, "price_pro")
    assert (issue.subscription_id, issue.invoice_id, issue.checkout_session_id) == ("sub_1", "in_1", None)
    assert issue.period == Window(T0, days(31))
    assert issue.issued_at == days(0.01)


@pytest.mark.parametrize(
    ("invoices", "keys"),
    [
        ([invoice()], {"in_1:price_pro:ai_credits"}),
        ([invoice(), invoice(invoice_line(start=days(31)), invoice_id="in_2", billing_reason="subscription_cycle")],
         {"in_1:price_pro:ai_credits", "in_2:price_pro:ai_credits"}),
        ([invoice(), invoice()], {"in_1:price_pro:ai_credits"}),
    ],
    ids=["one invoice", "two invoices, two periods", "the same invoice replayed"],
)
def test_per_period_grants_are_keyed_once_per_invoice(invoices: list[InvoiceSnapshot], keys: set[str]) -> None:
    found = [key for paid in invoices for key, _ in issued(paid, PRO_MONTHLY)]

    assert set(found) == keys
    assert len(found) == len(invoices)


def test_a_quantity_change_mid_period_still_issues_once_for_the_invoice() -> None:
    placed = bindings([snapshot(), snapshot(item("price_pro", 3), at=days(10))])

    assert issued(invoice(invoice_line(quantity=3)), placed) == [("in_1:price_pro:ai_credits", 3000)]


@pytest.mark.parametrize(
    ("line_quantity", "scale_by_quantity", "amount"),
    [(1, True, 1000), (3, True, 3000), (3, False, 1000), (0, True, 0)],
    ids=["one", "scaled by the line quantity", "not scaled", "zero quantity"],
)
def test_a_per_period_grant_is_scaled_by_the_line_quantity_when_asked(
    line_quantity: int, scale_by_quantity: bool, amount: int
) -> None:
    placed = (binding(scale_by_quantity=scale_by_quantity, quantity=1),)

    assert issued(invoice(invoice_line(quantity=line_quantity)), placed) == [("in_1:price_pro:ai_credits", amount)]


@pytest.mark.parametrize(
    "paid",
    [
        invoice(paid=False),
        invoice(sub=None),
        invoice(sub="sub_other"),
        invoice(invoice_line("price_starter")),
        invoice(invoice_line(start=days(-31), end=T0)),
    ],
    ids=["unpaid", "without a subscription", "of another subscription", "for another price",
         "for a period before the binding"],
)
def test_an_invoice_without_a_paid_line_for_a_held_binding_issues_nothing(paid: InvoiceSnapshot) -> None:
    assert invoice_issues(paid, PRO_MONTHLY, PROGRAMS) == []


def test_a_binding_lost_to_another_subscription_grants_nothing() -> None:
    placed = bindings([snapshot(sub="sub_1")],
                      [snapshot(item("price_starter"), sub="sub_2", at=days(3), start_date=days(3))])
    loser = invoice(invoice_line("price_starter", start=days(3)), invoice_id="in_2", sub="sub_2")
    winner = invoice(sub="sub_1")

    assert all(p.conflict for p in placed if p.row.subscription_id == "sub_2")
    assert invoice_issues(loser, placed, PROGRAMS) == []
    assert issued(winner, placed) == [("in_1:price_pro:ai_credits", 1000)]


def test_a_conflicted_binding_grants_nothing_even_when_built_by_hand() -> None:
    assert invoice_issues(invoice(), (binding(conflict_with="sub_9"),), PROGRAMS) == []


def test_a_binding_that_ended_exactly_at_the_period_start_funds_nothing_in_that_period() -> None:
    placed = bindings([snapshot(), snapshot(item("price_starter", period_start=days(31)), at=days(31))])
    renewal = invoice(invoice_line("price_pro", start=days(31)), invoice_line("price_starter", start=days(31)),
                      invoice_id="in_2", billing_reason="subscription_cycle")

    assert issued(renewal, placed) == [("in_2:price_starter:ai_credits", 100)]


def test_while_active_bindings_are_never_issued() -> None:
    placed = bindings([snapshot(item("price_seats", 4))])

    assert invoice_issues(invoice(invoice_line("price_seats", 4)), placed, PROGRAMS) == []


def test_a_one_time_grant_of_a_subscription_price_is_keyed_by_the_subscription() -> None:
    placed = bindings([snapshot(item("price_pro_bonus", 2, period_end=days(365)))])
    first = invoice(invoice_line("price_pro_bonus", 2, end=days(365)))
    renewal = invoice(invoice_line("price_pro_bonus", 2, start=days(365), end=days(730)), invoice_id="in_2",
                      billing_reason="subscription_cycle")

    assert sorted(issued(first, placed)) == [
        ("in_1:price_pro_bonus:ai_credits", 2000), ("sub_1:price_pro_bonus:bonus", 500),
    ]
    assert ("sub_1:price_pro_bonus:bonus", 500) in issued(renewal, placed)
    [bonus] = [i for i in invoice_issues(first, placed, PROGRAMS) if i.cadence is Cadence.ONE_TIME]
    assert (bonus.period, bonus.source, bonus.invoice_id) == (None, Source.PRICE, "in_1")


# --- one-time checkouts -------------------------------------------------------------------------


def test_a_paid_payment_session_issues_its_one_time_grants_scaled_by_quantity() -> None:
    [issue] = checkout_issues(checkout_session(line_item("price_pack", 2), at=days(2)), PRICES, PROGRAMS)

    assert issue.issue_key == "cs_1:price_pack:bonus"
    assert (issue.grant_program_code, issue.cadence, issue.amount, issue.source) == (
        "bonus", Cadence.ONE_TIME, 500, Source.PRODUCT
    )
    assert (issue.checkout_session_id, issue.subscription_id, issue.invoice_id) == ("cs_1", None, None)
    assert issue.issued_at == days(2)


def test_the_same_checkout_session_replayed_gives_the_same_keys() -> None:
    session = checkout_session(line_item("price_pack", 2))

    first = checkout_issues(session, PRICES, PROGRAMS)

    assert first == checkout_issues(session, PRICES, PROGRAMS)
    assert [i.issue_key for i in checkout_issues(checkout_session(session_id="cs_2"), PRICES, PROGRAMS)] == [
        "cs_2:price_pack:bonus"
    ]


@pytest.mark.parametrize(
    ("status", "payment_status", "issues"),
    [
        ("complete", "paid", 1),
        ("complete", "no_payment_required", 1),
        ("complete", "unpaid", 0),
        ("open", "unpaid", 0),
        ("expired", "unpaid", 0),
    ],
)
def test_only_a_complete_and_paid_session_issues(status: str, payment_status: str, issues: int) -> None:
    session = checkout_session(status=status, payment_status=payment_status)

    assert len(checkout_issues(session, PRICES, PROGRAMS)) == issues


def test_a_subscription_session_issues_nothing_at_checkout() -> None:
    session = checkout_session(line_item("price_pro_bonus"), mode=Mode.SUBSCRIPTION, subscription_id="sub_1")

    assert checkout_issues(session, PRICES, PROGRAMS) == []


def test_a_subscription_session_not_yet_linked_to_its_subscription_issues_nothing_at_checkout() -> None:
    session = checkout_session(line_item("price_pro_bonus"), mode=Mode.SUBSCRIPTION, subscription_id=None)

    assert checkout_issues(session, PRICES, PROGRAMS) == []


def test_a_checkout_issues_only_one_time_grants_and_skips_unresolvable_lines() -> None:
    mixed = resolved(
        price("price_mixed", "mixed", interval=None, metadata={"grants": grants(("bonus", 100, False))}),
        product("mixed", group="addons", grant_text=grants(("ai_credits", 50), ("seats", 1))),
    )
    prices = {**PRICES, **catalog(mixed)}
    session = checkout_session(line_item("price_mixed", 3, prices), line_item("price_unknown", 1, prices))

    assert [(i.issue_key, i.amount, i.source) for i in checkout_issues(session, prices, PROGRAMS)] == [
        ("cs_1:price_mixed:bonus", 100, Source.PRICE)
    ]
