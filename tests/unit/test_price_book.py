"""A price's resolutions over time: each stretch of history read with the one in force then, so a
catalog change is never retroactive."""

from __future__ import annotations

from dataclasses import replace

import pytest

from entitlement_service.domain.account import rebuild
from entitlement_service.domain.funding import invoice_issues
from entitlement_service.domain.price_book import PriceBook, PriceVersion
from entitlement_service.domain.windows import Window
from tests.unit.builders import CONFIG, PRICES, PROGRAMS, T0, days, invoice, invoice_line, item, snapshot

STARTER = PRICES["price_starter"]
AS_PRO = replace(STARTER, billing_plan_code="pro", gate_bundle="pro")
NO_GRANTS = replace(STARTER, grants=())
BOOK = PriceBook({**PriceBook.constant(PRICES).versions,
                  "price_starter": (PriceVersion(None, NO_GRANTS), PriceVersion(days(40), STARTER),
                                    PriceVersion(days(70), AS_PRO))})


@pytest.mark.parametrize(("at", "expected"), [
    (days(-400), NO_GRANTS), (days(39), NO_GRANTS), (days(40), STARTER), (days(69), STARTER), (days(70), AS_PRO),
], ids=["long before", "just before a change", "at a change", "between", "after the last"])
def test_a_price_resolves_as_the_version_in_force_at_the_instant(at: object, expected: object) -> None:
    assert BOOK.at("price_starter", at) == expected  # type: ignore[arg-type]


def test_a_window_is_cut_where_one_of_its_prices_changes() -> None:
    assert BOOK.pieces(["price_pro", "price_starter"], Window(T0, None)) == [
        Window(T0, days(40)), Window(days(40), days(70)), Window(days(70), None)]
    assert BOOK.pieces(["price_starter"], Window(days(45), days(60))) == [Window(days(45), days(60))]
    assert BOOK.pieces(["price_pro"], Window(T0, None)) == [Window(T0, None)]


def test_a_plan_moved_later_leaves_the_assignments_before_it_as_they_were() -> None:
    state = rebuild({"sub_1": [snapshot(item("price_starter"))]}, BOOK, CONFIG)
    assert [(a.row.billing_plan_code, a.window) for a in state.assignments] == [
        ("starter", Window(T0, days(70))), ("pro", Window(days(70), None))]


def test_a_grant_added_later_binds_only_from_when_it_was_added() -> None:
    state = rebuild({"sub_1": [snapshot(item("price_starter"))]}, BOOK, CONFIG)
    assert sorted({(b.row.grant_program_code, b.window.start) for b in state.bindings}) == [("ai_credits", days(40))]


def test_a_period_is_funded_by_what_its_price_granted_when_it_was_paid() -> None:
    known = ["sub_1"]
    paid = [invoice(invoice_line("price_starter", start=days(31 * n), end=days(31 * (n + 1))), invoice_id=f"in_{n}",
                    at=days(31 * n)) for n in range(3)]
    issued = invoice_issues(paid, BOOK, PROGRAMS, known, {}, ())
    assert [(i.invoice_id, i.amount) for i in issued] == [("in_2", 100)]  # in_0 and in_1 were paid before day 40
