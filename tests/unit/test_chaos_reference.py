"""The fault run's reference: what an account should hold, from the provider's final state alone,
and how the services' answers are set beside it. Small hand-made cases with known answers."""

from __future__ import annotations

from catalog_rules.model import Cadence, ChangePolicy, GrantProgram, GrantSpec, Source
from chaos import compare
from chaos.compare import Issued
from chaos.reference import (
    Catalog,
    Invoice,
    InvoiceLine,
    Item,
    Subscription,
    Terms,
    entitled,
    in_force,
    invoice_funding,
)

DAY = 86_400
CREDITS = GrantProgram("credits", Cadence.PER_PERIOD, "credit", ChangePolicy.DIFFERENCE)
SEATS = GrantProgram("seats_once", Cadence.ONE_TIME, "seat")
CATALOG = Catalog(
    terms={
        "price_starter": Terms("price_starter", "starter_monthly", True, "starter", 1, "basic",
                               (GrantSpec("credits", 100, False, Source.PRICE),)),
        "price_pro": Terms("price_pro", "pro_monthly", True, "pro", 2, "full",
                           (GrantSpec("credits", 500, False, Source.PRICE),)),
        "price_seats": Terms("price_seats", "team_seats_monthly", True, None, 0, None,
                             (GrantSpec("seats_once", 10, True, Source.PRICE),)),
    },
    programs={"credits": CREDITS, "seats_once": SEATS},
    gates={"basic": ("export",), "full": ("export", "api_access")},
)


def sub(subscription_id: str, price: str, status: str = "active", start: int = 0, cancel_at: int | None = None,
        cancel_at_period_end: bool = False, period_end: int = 30 * DAY, ended_at: int | None = None) -> Subscription:
    return Subscription(subscription_id, "acct_1", status, (Item(price, 1),), start, cancel_at, cancel_at_period_end,
                        period_end, ended_at)


def test_a_canceled_subscription_was_in_force_until_it_ended_and_not_after() -> None:
    canceled = sub("sub_1", "price_pro", "canceled", start=DAY, ended_at=10 * DAY)
    assert [in_force(canceled, t) for t in (DAY - 1, DAY, 10 * DAY - 1, 10 * DAY)] == [False, True, True, False]


def test_cancel_at_period_end_ends_at_the_period_end() -> None:
    ending = sub("sub_1", "price_pro", cancel_at_period_end=True, period_end=30 * DAY)
    assert in_force(ending, 30 * DAY - 1) and not in_force(ending, 30 * DAY)
    assert not in_force(sub("sub_2", "price_pro", "incomplete"), DAY)


def test_the_highest_priority_plan_in_force_names_the_gates() -> None:
    both = [sub("sub_1", "price_starter"), sub("sub_2", "price_pro", cancel_at=5 * DAY)]
    assert entitled(both, CATALOG, DAY).gates == {"export", "api_access"}
    assert entitled(both, CATALOG, 6 * DAY).gate_bundle == "basic"  # pro ended at its cancel_at


def line(price: str, end: int, proration: bool = False, amount: int = 1000, quantity: int = 1) -> InvoiceLine:
    return InvoiceLine(price, quantity, end - 30 * DAY, end, proration, amount)


def test_a_period_is_funded_once_and_an_upgrade_tops_it_up_under_difference() -> None:
    invoices = [
        Invoice("in_1", "sub_1", True, 10, (line("price_starter", 30 * DAY),)),
        Invoice("in_2", "sub_1", True, 20, (line("price_starter", 30 * DAY),)),  # paid twice: funds once
        Invoice("in_3", "sub_1", True, 30, (line("price_pro", 30 * DAY, proration=True, amount=800),)),
        Invoice("in_4", "sub_1", False, 40, (line("price_pro", 60 * DAY),)),  # unpaid: funds nothing
        Invoice("in_5", "sub_1", True, 50, (line("price_seats", 30 * DAY, quantity=3),)),
    ]
    assert invoice_funding(invoices, CATALOG) == {
        ("period", "sub_1", "credits", 30 * DAY): 500,  # the upgrade's difference raised it to pro's
        ("subscription", "sub_1", "seats_once", 0): 30,
    }


def issued(amount: int, key: str = "sub_1:credits:1") -> Issued:
    return Issued("credits", "per_period", amount, key, "sub_1", "in_1", "", 30 * DAY)


def test_funding_is_lost_short_doubled_twice_and_unexpected_without_a_payment() -> None:
    slot = ("period", "sub_1", "credits", 30 * DAY)
    kinds = [[d.kind for d in compare.funding_differences("acct_1", want, found)]
             for want, found in [({slot: 500}, []), ({slot: 500}, [issued(100)]), ({slot: 500}, [issued(500)]),
                                 ({slot: 500}, [issued(500), issued(500, "again")]), ({}, [issued(500)])]]
    assert kinds == [[compare.LOST], [compare.LOST], [], [compare.DOUBLED], [compare.UNEXPECTED_FUNDING]]


def test_check_gate_answers_are_compared_with_the_gates_in_force() -> None:
    found = compare.check_gate_differences("acct_1", "entitlement-1", frozenset({"export"}),
                                           {"export": True, "api_access": True})
    assert [(d.kind, d.expected, d.found) for d in found] == [("CheckGate api_access", "False", "True")]
