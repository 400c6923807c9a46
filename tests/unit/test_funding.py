"""Issuing grants from paid invoices and paid one-time checkouts: each paid period funded once,
by the line that pays for it, whatever else arrives; checked by example and against a reference
model over random deliveries."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog_rules.model import Cadence, ChangePolicy, GrantProgram, Source
from entitlement_service.domain.account import rebuild
from entitlement_service.domain.funding import DIFFERENCE, PERIOD, Issue, checkout_issues, invoice_issues
from entitlement_service.domain.model import Mode
from entitlement_service.domain.provider import InvoiceLine, InvoiceSnapshot, SubscriptionSnapshot
from entitlement_service.domain.records import IssuedGrantRecord
from entitlement_service.domain.windows import Window
from tests.unit.builders import (
    CONFIG,
    PRICES,
    PROGRAMS,
    T0,
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

END = days(31)


def funding(*invoices: InvoiceSnapshot, histories: tuple[list[SubscriptionSnapshot], ...] = ([snapshot()],),
            prices: dict[str, object] | None = None, programs: dict[str, GrantProgram] | None = None,
            before: tuple[IssuedGrantRecord, ...] = ()) -> list[Issue]:
    state = rebuild({h[0].subscription_id: h for h in histories}, PRICES, CONFIG)
    known = [d.latest.subscription_id for d in state.subscriptions]
    return invoice_issues(invoices, prices or PRICES, programs or PROGRAMS, known, state.lost, before)  # type: ignore[arg-type]


def issued(*invoices: InvoiceSnapshot, **kwargs: object) -> list[tuple[str, int]]:
    return [(i.issue_key, i.amount) for i in funding(*invoices, **kwargs)]  # type: ignore[arg-type]


def record(issue: Issue) -> IssuedGrantRecord:
    """An issue as the database gives it back."""
    return IssuedGrantRecord(issue.issue_key, issue.grant_program_code, issue.cadence, issue.unit, issue.amount,
                             issue.subscription_id, issue.invoice_id, issue.checkout_session_id, issue.period,
                             issue.issued_at)


def proration(price_id: str, quantity: int, at: datetime, amount: int) -> InvoiceLine:
    return InvoiceLine(price_id, quantity, at, END, proration=True, amount=amount)


PERIOD_KEY = f"sub_1:ai_credits:{END.isoformat()}"


# --- invoices -----------------------------------------------------------------------------------


def test_a_paid_invoice_issues_the_per_period_grant_of_its_line_once_for_its_period() -> None:
    [issue] = funding(invoice(at=days(0.01)))

    assert issue.issue_key == PERIOD_KEY
    assert (issue.grant_program_code, issue.cadence, issue.unit) == ("ai_credits", Cadence.PER_PERIOD, "credit")
    assert (issue.amount, issue.source, issue.price_id) == (1000, Source.PRODUCT, "price_pro")
    assert (issue.subscription_id, issue.invoice_id, issue.checkout_session_id) == ("sub_1", "in_1", None)
    assert (issue.period, issue.basis, issue.funded_to) == (Window(T0, END), PERIOD, None)
    assert issue.issued_at == days(0.01)


@pytest.mark.parametrize(
    ("invoices", "keys"),
    [
        ([invoice()], [PERIOD_KEY]),
        ([invoice(), invoice(invoice_line(start=END), invoice_id="in_2", billing_reason="subscription_cycle")],
         [PERIOD_KEY, f"sub_1:ai_credits:{days(62).isoformat()}"]),
        ([invoice(), invoice()], [PERIOD_KEY]),
        ([invoice(), invoice(invoice_id="in_retry")], [PERIOD_KEY]),
    ],
    ids=["one invoice", "two invoices, two periods", "the same invoice replayed",
         "another invoice for the same period"],
)
def test_per_period_grants_are_issued_once_per_subscription_program_and_period(
    invoices: list[InvoiceSnapshot], keys: list[str]
) -> None:
    assert [key for key, _ in issued(*invoices)] == keys


def test_what_was_issued_before_is_never_issued_again() -> None:
    first = funding(invoice())
    assert funding(invoice(invoice_id="in_again"), before=tuple(record(i) for i in first)) == []


def test_a_period_funded_under_an_earlier_key_is_not_funded_again() -> None:
    legacy = replace(record(funding(invoice())[0]), issue_key="in_1:price_pro:ai_credits")
    assert funding(invoice(), before=(legacy,)) == []


def test_the_period_is_funded_at_the_quantity_its_line_pays_for() -> None:
    changed = ([snapshot(), snapshot(item("price_pro", 3), at=days(10))],)

    assert issued(invoice(invoice_line(quantity=3)), histories=changed) == [(PERIOD_KEY, 3000)]


@pytest.mark.parametrize(
    ("line_quantity", "scale_by_quantity", "amount"),
    [(1, True, 1000), (3, True, 3000), (3, False, 1000), (0, True, 0)],
    ids=["one", "scaled by the line quantity", "not scaled", "zero quantity"],
)
def test_a_per_period_grant_is_scaled_by_the_line_quantity_when_asked(
    line_quantity: int, scale_by_quantity: bool, amount: int
) -> None:
    pro = resolved(price("price_pro", "pro"), product("pro", plan="pro", bundle="pro",
                                                      grant_text=grants(("ai_credits", 1000, scale_by_quantity))))
    prices = {**PRICES, **catalog(pro)}

    assert issued(invoice(invoice_line(quantity=line_quantity)), prices=prices) == [(PERIOD_KEY, amount)]


@pytest.mark.parametrize(
    "paid",
    [
        invoice(paid=False),
        invoice(sub=None),
        invoice(sub="sub_other"),
        invoice(invoice_line("price_unknown")),
    ],
    ids=["unpaid", "without a subscription", "of a subscription not known yet", "for a price not in the catalog"],
)
def test_an_invoice_that_pays_for_nothing_known_issues_nothing(paid: InvoiceSnapshot) -> None:
    assert funding(paid) == []


def test_a_paid_line_funds_what_it_paid_for_whatever_the_subscription_holds_now() -> None:
    # Created with Pro and changed to Starter in the same second: the creation snapshot holds for
    # no time at all, but its invoice paid for a Pro period.
    same_second = ([snapshot(event_id="evt_a"), snapshot(item("price_starter"), event_id="evt_b")],)

    assert issued(invoice(), histories=same_second) == [(PERIOD_KEY, 1000)]
    assert issued(invoice(invoice_line("price_starter"), invoice_id="in_2"), histories=same_second) == [
        (PERIOD_KEY, 100)]


def test_a_subscription_that_lost_its_group_over_the_period_grants_nothing() -> None:
    histories = ([snapshot(sub="sub_1")],
                 [snapshot(item("price_starter"), sub="sub_2", at=days(3), start_date=days(3))])
    loser = invoice(invoice_line("price_starter", start=days(3), end=days(34)), invoice_id="in_2", sub="sub_2")

    assert funding(loser, histories=histories) == []
    assert issued(invoice(sub="sub_1"), histories=histories) == [(PERIOD_KEY, 1000)]


def test_a_subscription_that_held_its_group_for_part_of_the_period_is_funded() -> None:
    # sub_2 (Starter) held core from day 3 until Pro arrived on day 10.
    histories = ([snapshot(item("price_starter"), sub="sub_2", at=days(3), start_date=days(3))],
                 [snapshot(sub="sub_1", at=days(10), start_date=days(10))])
    paid = invoice(invoice_line("price_starter", start=days(3), end=days(34)), invoice_id="in_2", sub="sub_2")

    assert issued(paid, histories=histories) == [(f"sub_2:ai_credits:{days(34).isoformat()}", 100)]


def test_while_active_bindings_are_never_issued() -> None:
    assert funding(invoice(invoice_line("price_seats", 4)), histories=([snapshot(item("price_seats", 4))],)) == []


def test_a_one_time_grant_of_a_subscription_price_is_keyed_by_the_subscription() -> None:
    histories = ([snapshot(item("price_pro_bonus", 2, period_end=days(365)))],)
    first = invoice(invoice_line("price_pro_bonus", 2, end=days(365)))
    renewal = invoice(invoice_line("price_pro_bonus", 2, start=days(365), end=days(730)), invoice_id="in_2",
                      billing_reason="subscription_cycle")

    assert sorted(issued(first, histories=histories)) == [
        (f"sub_1:ai_credits:{days(365).isoformat()}", 2000), ("sub_1:price_pro_bonus:bonus", 500),
    ]
    assert ("sub_1:price_pro_bonus:bonus", 500) not in issued(first, renewal, histories=histories)[2:]
    [bonus] = [i for i in funding(first, histories=histories) if i.cadence is Cadence.ONE_TIME]
    assert (bonus.period, bonus.source, bonus.invoice_id) == (None, Source.PRICE, "in_1")


def test_a_one_time_line_on_a_subscription_invoice_funds_once_per_line() -> None:
    paid = invoice(invoice_line(), invoice_line("price_pack", 2, start=T0, end=T0))

    assert sorted(issued(paid, paid)) == [("in_1:price_pack:bonus", 500), (PERIOD_KEY, 1000)]


# --- mid-period changes ---------------------------------------------------------------------------

SEAT_CREDITS = GrantProgram("seat_credits", Cadence.PER_PERIOD, "credit")
SCALED = resolved(price("price_seat_credits", "seat_credits"),
                  product("seat_credits", group="addons", grant_text=grants(("seat_credits", 500))),
                  replace(CONFIG, grant_programs={**PROGRAMS, "seat_credits": SEAT_CREDITS}))
SCALED_PRICES = {**PRICES, **catalog(SCALED)}
SCALED_KEY = f"sub_1:seat_credits:{END.isoformat()}"


def scaled_programs(on_change: ChangePolicy) -> dict[str, GrantProgram]:
    return {**PROGRAMS, "seat_credits": replace(SEAT_CREDITS, on_change=on_change)}


def toggles(*quantities: int) -> list[InvoiceSnapshot]:
    """The period's first invoice at the first quantity, then each change invoiced at once: a
    credit line for the old quantity's unused time and a charge line for the new one's."""
    paid = [invoice(invoice_line("price_seat_credits", quantities[0]))]
    for n, (old, new) in enumerate(pairwise(quantities)):
        at = days(10 + n)
        paid.append(invoice(proration("price_seat_credits", old, at, -old * 700),
                            proration("price_seat_credits", new, at, new * 700),
                            invoice_id=f"in_change_{n}", at=at, billing_reason="subscription_update"))
    return paid


SEAT_HISTORY = ([snapshot(item("price_seat_credits"))],)


def seat_funding(paid: list[InvoiceSnapshot], on_change: ChangePolicy) -> list[Issue]:
    return funding(*paid, histories=SEAT_HISTORY, prices=SCALED_PRICES, programs=scaled_programs(on_change))


@pytest.mark.parametrize(("quantities", "none", "difference"), [
    ((1, 2, 1), [(SCALED_KEY, 500)], [(SCALED_KEY, 500), (f"{SCALED_KEY}:to:1000", 500)]),
    ((1, 2, 1, 2, 1, 2), [(SCALED_KEY, 500)], [(SCALED_KEY, 500), (f"{SCALED_KEY}:to:1000", 500)]),
    ((1, 3, 1, 2), [(SCALED_KEY, 500)], [(SCALED_KEY, 500), (f"{SCALED_KEY}:to:1500", 1000)]),
    ((2, 1), [(SCALED_KEY, 1000)], [(SCALED_KEY, 1000)]),
], ids=["up and down", "toggled three times", "up high, down, up a little", "a downgrade"])
def test_a_change_paid_mid_period_funds_only_as_the_programs_on_change_says(
    quantities: tuple[int, ...], none: list[tuple[str, int]], difference: list[tuple[str, int]]
) -> None:
    assert [(i.issue_key, i.amount) for i in seat_funding(toggles(*quantities), ChangePolicy.NONE)] == none
    topped = seat_funding(toggles(*quantities), ChangePolicy.DIFFERENCE)
    assert [(i.issue_key, i.amount) for i in topped] == difference
    assert all(i.funded_to == int(i.issue_key.rsplit(":", 1)[1]) for i in topped if i.basis == DIFFERENCE)


def reference(paid: list[InvoiceSnapshot], on_change: ChangePolicy) -> int:
    """The period's total from the paid invoices alone: the quantity its first invoice paid for,
    or, under `difference`, the highest quantity any of its paid lines charged for."""
    levels = [line.quantity * 500 for inv in paid for line in inv.lines
              if not line.proration or (on_change is ChangePolicy.DIFFERENCE and (line.amount or 0) > 0)]
    base = [line.quantity * 500 for inv in paid for line in inv.lines if not line.proration]
    return max(levels, default=0) if on_change is ChangePolicy.DIFFERENCE else max(base, default=0)


@settings(max_examples=300, deadline=None)
@given(quantities=st.lists(st.integers(1, 4), min_size=1, max_size=7), data=st.data(),
       on_change=st.sampled_from(list(ChangePolicy)))
def test_any_delivery_of_a_periods_invoices_funds_it_as_the_reference_model_says(
    quantities: list[int], data: st.DataObject, on_change: ChangePolicy
) -> None:
    paid = toggles(*quantities)
    delivered = data.draw(st.lists(st.sampled_from(paid), min_size=len(paid), max_size=2 * len(paid))
                          .filter(lambda d: {i.invoice_id for i in d} == {i.invoice_id for i in paid}))
    # Each delivery derives the account again from everything received so far; what was issued stays.
    before: tuple[IssuedGrantRecord, ...] = ()
    for n in range(1, len(delivered) + 1):
        before += tuple(record(i) for i in funding(*delivered[:n], histories=SEAT_HISTORY, prices=SCALED_PRICES,
                                                    programs=scaled_programs(on_change), before=before))
    assert sum(r.amount for r in before) == reference(paid, on_change)
    assert len({r.issue_key for r in before}) == len(before)


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
