"""Property, end to end: whatever a customer does (price changes up and down, quantity changes,
cancel and resume, renewals over several periods), however each change is billed
(`proration_behavior`), and however the webhooks arrive (any order, duplicates), what the
entitlement service issues per program equals a reference computed from the provider's paid
invoices alone: per billing period, the amount of the line that paid for it, or, under the
`difference` policy, the highest amount any of its paid lines charged for."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.e2e.stack import Stack, start_stack, stop_stack

pytestmark = pytest.mark.e2e
DAY = 86_400
BEHAVIORS = ("create_prorations", "always_invoice", "none")
# What each price grants of `ai_credits` per period and unit of quantity, and whether it scales:
# the example catalog's, with Pro monthly made to scale by quantity (below) so that quantity
# changes move money. The reference reads these, not the service.
CREDITS = {"pro_monthly": (1200, True), "pro_yearly": (15000, False), "starter_monthly": (0, False)}
_accounts = itertools.count()

action = st.one_of(
    st.tuples(st.just("change_quantity"), st.integers(1, 3), st.sampled_from(BEHAVIORS)),
    st.tuples(st.just("change_price"), st.sampled_from(sorted(CREDITS)), st.sampled_from(BEHAVIORS)),
    st.tuples(st.just("advance"), st.sampled_from([2, 9, 16, 33]), st.just("")),
    st.tuples(st.sampled_from(["cancel_at_period_end", "resume"]), st.just(0), st.just("")),
)


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url, {"RECONCILE_INTERVAL_S": "0"})
    yield started
    await stop_stack(started)


async def provider(stack: Stack, path: str, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {stack.env['STRIPE_API_KEY']}"}
    async with stack.http.get(f"{stack.sim}{path}", params=params, headers=headers) as response:
        assert response.status == 200
        return await response.json()


def reference(invoices: list[dict[str, Any]], prices: dict[str, str], difference: bool) -> int:
    """The credits the paid invoices call for: per period end, the line that paid for the period,
    or (difference) the highest amount any paid line charged for in it."""
    levels: dict[int, int] = {}
    for invoice in invoices:
        if invoice["status"] != "paid":
            continue
        for line in invoice["lines"]["data"]:
            details = line["parent"]["subscription_item_details"]
            if details["proration"] and not (difference and line["amount"] > 0):
                continue
            amount, scaled = CREDITS[prices[line["pricing"]["price_details"]["price"]]]
            level = amount * line["quantity"] if scaled else amount
            end = line["period"]["end"]
            levels[end] = max(levels.get(end, 0), level) if difference else levels.get(end, level)
    return sum(levels.values())


async def scale_pro_monthly(stack: Stack, on_change: int) -> None:
    """The catalog as the property runs it: Pro monthly's credits scale by quantity; `ai_credits`
    under the given change policy."""
    catalog = await stack.stub().ListCatalog(pb.ListCatalogRequest())
    [pro] = [p.price for p in catalog.prices if p.price.lookup_key == "pro_monthly"]
    pro.metadata["grants"] = '[{"grant_program_code": "ai_credits", "amount": 1200, "scale_by_quantity": true}]'
    pro.provider_updated_at.FromSeconds(4_000_000_000)  # no provider event overrides it during the run
    await stack.stub(Role.OPERATOR).UpsertCatalog(pb.UpsertCatalogRequest(
        config=pb.CatalogConfig(grant_programs=[pb.GrantProgram(
            code="ai_credits", cadence=pb.GRANT_CADENCE_PER_PERIOD, unit="credit", on_change=on_change)]),
        prices=[pro]))


async def lived(stack: Stack, actions: list[tuple[str, int | str, str]], seed: int) -> tuple[str, str]:
    """One customer's subscription lived through `actions`, its webhooks held, then released in a
    shuffled order with some sent twice; returns its account and subscription."""
    account = f"acct_prop_{next(_accounts)}"
    await stack.sim_control("delivery", mode="hold")
    status, created = await stack.buy(account)
    assert status == 201, created
    session = await stack.sim_control(f"checkout/sessions/{created['checkout_session_id']}/complete")
    sub = session["subscription"]
    for kind, value, behavior in actions:
        if kind == "advance":
            await stack.sim_control("clock/advance", seconds=int(value) * DAY)
            continue
        await stack.sim_control("clock/advance", seconds=60)  # one customer click a minute
        params: dict[str, Any] = {"action": kind}
        if kind == "change_quantity":
            params.update(quantity=value, proration_behavior=behavior)
        elif kind == "change_price":
            params.update(price=value, proration_behavior=behavior)
        # A change the subscription no longer allows (it ended) is refused, as at the provider.
        async with stack.http.post(f"{stack.sim}/_sim/subscriptions/{sub}/portal", json=params) as answer:
            assert answer.status in (200, 400), await answer.text()
    await stack.sim_control("delivery", mode="normal")
    released = await stack.sim_control("delivery/release", order="shuffle", seed=seed)
    for delivery in released["released"][::3]:  # a third of them delivered a second time
        await stack.sim_control("delivery/redeliver", event=delivery["event"])
    await stack.delivered()
    return account, sub


async def issued_and_expected(stack: Stack, actions: list[tuple[str, int | str, str]], seed: int,
                              difference: bool) -> tuple[int, int]:
    """The credits issued to a customer who lived `actions`, and what its paid invoices call for."""
    await scale_pro_monthly(stack, pb.CHANGE_POLICY_DIFFERENCE if difference else pb.CHANGE_POLICY_NONE)
    account, sub = await lived(stack, actions, seed)
    catalog = await stack.stub().ListCatalog(pb.ListCatalogRequest())
    prices = {p.price.price_id: p.price.lookup_key for p in catalog.prices}
    invoices = (await provider(stack, "/v1/invoices", subscription=sub, limit=100))["data"]
    funding = (await stack.entitlements(account, at_provider_now=True)).funding  # the simulated clock runs ahead
    issued = sum(f.amount for f in funding if f.grant_program_code == "ai_credits")
    # Ended, so the clock moved by later examples does not renew it for ever (and it still counts).
    async with stack.http.post(f"{stack.sim}/_sim/subscriptions/{sub}/portal", json={"action": "cancel_now"}):
        await stack.delivered()
    return issued, reference(invoices, prices, difference)


SEQUENCES = dict(actions=st.lists(action, min_size=1, max_size=6), seed=st.integers(0, 2**16))
EXAMPLES = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@EXAMPLES
@given(**SEQUENCES)
async def test_what_is_issued_equals_what_the_paid_invoices_call_for(
    stack: Stack, actions: list[tuple[str, int | str, str]], seed: int
) -> None:
    issued, expected = await issued_and_expected(stack, actions, seed, difference=False)
    assert issued == expected, (actions, seed)


@EXAMPLES
@given(**SEQUENCES)
async def test_what_is_issued_under_the_difference_policy_equals_what_the_paid_invoices_call_for(
    stack: Stack, actions: list[tuple[str, int | str, str]], seed: int
) -> None:
    issued, expected = await issued_and_expected(stack, actions, seed, difference=True)
    assert issued == expected, (actions, seed)
