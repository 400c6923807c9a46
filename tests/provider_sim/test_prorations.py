"""Changes billed as the provider bills them: `proration_behavior` on a subscription update (and the
portal), proration lines with their sign and amount, a `billing_reason` on every invoice, invoices
that credit more than they charge paid at zero, and prorations kept for the next invoice."""

from __future__ import annotations

from typing import Any

import pytest

from tests.provider_sim.builders import Catalog, events, ok, types
from tests.provider_sim.harness import SimServer
from tests.provider_sim.test_event_sequences import DAY, advance, portal, subscribe

INVOICED = ["invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"]


def lines(invoice: dict[str, Any]) -> list[tuple[str, int, int, bool]]:
    """(price, quantity, amount, proration) per line."""
    return [(line["pricing"]["price_details"]["price"], line["quantity"], line["amount"],
             line["parent"]["subscription_item_details"]["proration"]) for line in invoice["lines"]["data"]]


def invoice_of(emitted: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e["data"]["object"] for e in reversed(emitted) if e["type"] == "invoice.paid")


def started(sim: SimServer, catalog: Catalog) -> tuple[str, dict[str, Any]]:
    done, emitted = subscribe(sim, catalog.monthly)
    first = invoice_of(emitted)
    assert first["billing_reason"] == "subscription_create"
    assert lines(first) == [(catalog.monthly, 1, 2000, False)]
    return done["subscription"], first


def update(sim: SimServer, sub_id: str, quantity: int, behavior: str | None) -> list[dict[str, Any]]:
    item = ok(sim, "GET", f"/v1/subscriptions/{sub_id}")["items"]["data"][0]["id"]
    seen = len(events(sim))
    params: dict[str, Any] = {"items": [{"id": item, "quantity": quantity}]}
    if behavior:
        params["proration_behavior"] = behavior
    ok(sim, "POST", f"/v1/subscriptions/{sub_id}", params)
    return events(sim)[seen:]


def test_always_invoice_bills_a_change_at_once_with_a_credit_and_a_charge(sim: SimServer, catalog: Catalog) -> None:
    sub_id, first = started(sim, catalog)
    period = first["lines"]["data"][0]["period"]
    advance(sim, 10 * DAY)
    emitted = update(sim, sub_id, 2, "always_invoice")
    assert types(emitted) == ["customer.subscription.updated", *INVOICED]
    invoice = invoice_of(emitted)
    assert invoice["billing_reason"] == "subscription_update" and invoice["status"] == "paid"
    left = (period["end"] - (period["start"] + 10 * DAY)) / (period["end"] - period["start"])
    assert lines(invoice) == [(catalog.monthly, 1, -round(2000 * left), True),
                              (catalog.monthly, 2, round(4000 * left), True)]
    assert all(line["period"] == {"start": period["start"] + 10 * DAY, "end": period["end"]}
               for line in invoice["lines"]["data"])
    assert invoice["amount_due"] == invoice["amount_paid"] == invoice["total"] == round(4000 * left) - round(
        2000 * left)


def test_a_change_that_credits_more_than_it_charges_is_an_invoice_paid_at_zero(
    sim: SimServer, catalog: Catalog
) -> None:
    sub_id, _ = started(sim, catalog)
    update(sim, sub_id, 3, "always_invoice")
    advance(sim, DAY)
    invoice = invoice_of(update(sim, sub_id, 1, "always_invoice"))
    assert invoice["total"] < 0
    assert (invoice["amount_due"], invoice["amount_paid"], invoice["status"]) == (0, 0, "paid")
    assert [(q, amount < 0, proration) for _, q, amount, proration in lines(invoice)] == [
        (3, True, True), (1, False, True)]


def test_create_prorations_keeps_the_lines_for_the_next_invoice(sim: SimServer, catalog: Catalog) -> None:
    sub_id, _ = started(sim, catalog)
    advance(sim, 10 * DAY)
    assert types(update(sim, sub_id, 2, None)) == ["customer.subscription.updated"]
    renewal = invoice_of(advance(sim, 25 * DAY))
    assert renewal["billing_reason"] == "subscription_cycle"
    assert [(q, amount < 0, proration) for _, q, amount, proration in lines(renewal)] == [
        (1, True, True), (2, False, True), (2, False, False)]
    assert lines(renewal)[2][2] == 4000  # the new period in full
    later = invoice_of(advance(sim, 31 * DAY))
    assert [proration for *_, proration in lines(later)] == [False]  # billed once


def test_none_bills_nothing_for_the_change(sim: SimServer, catalog: Catalog) -> None:
    sub_id, _ = started(sim, catalog)
    advance(sim, 10 * DAY)
    assert types(update(sim, sub_id, 2, "none")) == ["customer.subscription.updated"]
    renewal = invoice_of(advance(sim, 25 * DAY))
    assert lines(renewal) == [(catalog.monthly, 2, 4000, False)]


def test_a_new_billing_interval_restarts_the_cycle_and_is_invoiced_at_once(sim: SimServer, catalog: Catalog) -> None:
    sub_id, _ = started(sim, catalog)
    advance(sim, 10 * DAY)
    emitted = portal(sim, sub_id, action="change_price", price="pro_yearly")
    updated = emitted[0]["data"]["object"]["items"]["data"][0]
    invoice = invoice_of(emitted)
    assert invoice["billing_reason"] == "subscription_update"
    assert [(price, amount < 0, proration) for price, _, amount, proration in lines(invoice)] == [
        (catalog.monthly, True, True), (catalog.yearly, False, False)]
    assert invoice["lines"]["data"][1]["period"] == {"start": updated["current_period_start"],
                                                     "end": updated["current_period_end"]}
    assert updated["current_period_end"] - updated["current_period_start"] >= 365 * DAY


@pytest.mark.parametrize("behavior", ["create_prorations", "always_invoice", "none"])
def test_the_portal_bills_a_change_as_it_is_configured(sim: SimServer, catalog: Catalog, behavior: str) -> None:
    sub_id, _ = started(sim, catalog)
    emitted = portal(sim, sub_id, action="change_quantity", quantity=3, proration_behavior=behavior)
    assert types(emitted) == ["customer.subscription.updated", *(INVOICED if behavior == "always_invoice" else [])]


def test_an_unknown_proration_behavior_is_refused(sim: SimServer, catalog: Catalog) -> None:
    sub_id, _ = started(sim, catalog)
    answer = sim.request("POST", f"/v1/subscriptions/{sub_id}", {"proration_behavior": "sometimes"})
    assert answer.status == 400 and answer.json()["error"]["param"] == "proration_behavior"
