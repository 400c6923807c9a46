"""The funding rule through the service and PostgreSQL: a `per_period` grant is issued at most once
per (subscription, program, billing period), from the paid line that pays for the period, whatever
else arrives (prorations, credit and zero-amount invoices, replays); mid-period changes fund only
as the program's `on_change` says."""

from __future__ import annotations

from datetime import timedelta

import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client
from tests.support.provider import MONTH, T0, invoice_event, subscription_event, ts

DAY = timedelta(days=1)
END = T0 + MONTH
APPLIED = pb.EVENT_OUTCOME_APPLIED


async def funded(service: Client, account: str = "acct_1") -> list[tuple[str, int, str]]:
    return [(f.grant_program_code, f.amount, f.period_end.ToDatetime().date().isoformat())
            for f in (await service.entitlements(account)).funding]


async def toggle_quantity(service: Client, key: str, quantities: list[tuple[int, int]], unit_amount: int) -> None:
    """Changes the quantity of `key` on day 10, 11, ... as `(from, to)` pairs, each change invoiced
    at once as Stripe does with proration_behavior=always_invoice: a credit line for the old
    quantity's unused time and a charge line for the new one's, paid (a negative total is paid
    at zero)."""
    for n, (old, new) in enumerate(quantities):
        at = T0 + (10 + n) * DAY
        await service.apply(subscription_event(f"evt_q{n}", "sub_1", at, items=[(key, new)], start=T0))
        left = (END - at) / MONTH
        lines = [(key, old, at, END, True, -round(old * unit_amount * left)),
                 (key, new, at, END, True, round(new * unit_amount * left))]
        results = await service.apply(invoice_event(f"evt_qinv{n}", f"in_q{n}", "sub_1", at, lines=lines,
                                                    billing_reason="subscription_update"))
        assert [r.outcome for r in results] == [APPLIED]


async def start_monthly(service: Client, key: str = "pro_monthly", quantity: int = 1) -> None:
    await service.apply(subscription_event("evt_1", "sub_1", T0, items=[(key, quantity)],
                                           event_type="customer.subscription.created"))
    await service.apply(invoice_event("evt_inv1", "in_1", "sub_1", T0, lines=[(key, quantity, T0, END)],
                                      billing_reason="subscription_create"))


async def test_toggling_a_quantity_with_each_change_invoiced_funds_the_period_once(service: Client) -> None:
    await start_monthly(service)
    await toggle_quantity(service, "pro_monthly", [(1, 2), (2, 1)], 2000)
    assert await funded(service) == [("ai_credits", 1200, END.date().isoformat())]


async def test_a_replayed_or_reordered_proration_invoice_funds_nothing_more(service: Client) -> None:
    await start_monthly(service)
    await toggle_quantity(service, "pro_monthly", [(1, 2)], 2000)
    again = invoice_event("evt_qinv0_again", "in_q0", "sub_1", T0 + 10 * DAY, lines=[
        ("pro_monthly", 2, T0 + 10 * DAY, END, True, 1300)], billing_reason="subscription_update")
    await service.apply(again)
    assert await funded(service) == [("ai_credits", 1200, END.date().isoformat())]


async def test_the_next_period_is_funded_once_by_its_own_paid_line(service: Client) -> None:
    await start_monthly(service)
    await toggle_quantity(service, "pro_monthly", [(1, 2)], 2000)
    renewal = invoice_event("evt_inv2", "in_2", "sub_1", END, lines=[("pro_monthly", 2, END, END + MONTH)])
    await service.apply(renewal, renewal)
    assert await funded(service) == [("ai_credits", 1200, END.date().isoformat()),
                                     ("ai_credits", 1200, (END + MONTH).date().isoformat())]


async def test_a_subscription_created_and_changed_in_one_second_is_funded_by_what_was_paid(service: Client) -> None:
    created = subscription_event("evt_a_created", "sub_1", T0, items=[("pro_monthly", 1)],
                                 event_type="customer.subscription.created")
    changed = subscription_event("evt_b_changed", "sub_1", T0, items=[("pro_yearly", 1)],
                                 period_end=T0 + timedelta(days=365))
    await service.apply(created, changed)
    await service.apply(invoice_event("evt_inv1", "in_1", "sub_1", T0, lines=[("pro_monthly", 1, T0, END)],
                                      billing_reason="subscription_create"))
    assert await funded(service) == [("ai_credits", 1200, END.date().isoformat())]


SCALED = "seat_credits_monthly"


def scaled_catalog(on_change: int) -> pb.UpsertCatalogRequest:
    """A per-seat plan whose 500 credits a period scale with the quantity."""
    return pb.UpsertCatalogRequest(
        config=pb.CatalogConfig(grant_programs=[pb.GrantProgram(
            code="seat_credits", cadence=pb.GRANT_CADENCE_PER_PERIOD, unit="credit", on_change=on_change)]),
        products=[pb.ProductSnapshot(product_id="seat_plan", name="Seat plan", active=True, provider_updated_at=ts(T0),
                                     metadata={"subscription_group": "addons"})],
        prices=[pb.PriceSnapshot(
            price_id=f"price_{SCALED}", product_id="seat_plan", lookup_key=SCALED, active=True, unit_amount=1000,
            currency="usd", interval="month", interval_count=1, provider_updated_at=ts(T0),
            metadata={"grants": '[{"grant_program_code": "seat_credits", "amount": 500}]'})])


@pytest.mark.parametrize(("on_change", "toggles", "expected"), [
    (pb.CHANGE_POLICY_NONE, [(1, 2), (2, 1)], 500),
    (pb.CHANGE_POLICY_UNSPECIFIED, [(1, 2), (2, 1), (1, 2)], 500),
    (pb.CHANGE_POLICY_DIFFERENCE, [(1, 2)], 1000),
    (pb.CHANGE_POLICY_DIFFERENCE, [(1, 2), (2, 1), (1, 2), (2, 1), (1, 2)], 1000),
    (pb.CHANGE_POLICY_DIFFERENCE, [(1, 2), (2, 3)], 1500),
    (pb.CHANGE_POLICY_DIFFERENCE, [(1, 3), (3, 1), (1, 2)], 1500),
    (pb.CHANGE_POLICY_DIFFERENCE, [(1, 0)], 500),
], ids=["none: the new quantity waits for the next period", "unset is none",
        "difference: an upgrade tops the period up once", "difference: toggling never mints more",
        "difference: step by step up to the highest", "difference: the highest level paid, never a sum",
        "difference: a downgrade takes nothing back"])
async def test_a_mid_period_change_funds_as_the_programs_on_change_says(
    service: Client, on_change: int, toggles: list[tuple[int, int]], expected: int
) -> None:
    await service.operator.UpsertCatalog(scaled_catalog(on_change))
    await start_monthly(service, SCALED)
    await toggle_quantity(service, SCALED, toggles, 1000)
    entitlements = await service.entitlements()
    assert sum(f.amount for f in entitlements.funding if f.grant_program_code == "seat_credits") == expected


async def test_an_upgrade_whose_proration_arrives_before_the_periods_first_invoice_funds_the_highest_once(
    service: Client,
) -> None:
    await service.operator.UpsertCatalog(scaled_catalog(pb.CHANGE_POLICY_DIFFERENCE))
    await service.apply(subscription_event("evt_1", "sub_1", T0, items=[(SCALED, 1)]))
    at = T0 + 10 * DAY
    await service.apply(subscription_event("evt_2", "sub_1", at, items=[(SCALED, 2)], start=T0))
    await service.apply(invoice_event("evt_qinv", "in_q", "sub_1", at, lines=[
        (SCALED, 1, at, END, True, -700), (SCALED, 2, at, END, True, 1400)], billing_reason="subscription_update"))
    await service.apply(invoice_event("evt_inv1", "in_1", "sub_1", T0, lines=[(SCALED, 1, T0, END)],
                                      billing_reason="subscription_create"))
    assert sum(f.amount for f in (await service.entitlements()).funding) == 1000
