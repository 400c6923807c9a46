"""Property: any delivery order of a subscription's events, with duplicates, ends in the same
state as in-order delivery (docs/rules.md, "Ordering, ties and stale events")."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client
from tests.support.provider import MONTH, T0, invoice_event, subscription_event, ts

HOUR = timedelta(hours=1)
_accounts = itertools.count()


def history(n: int) -> list[pb.ProviderEvent]:
    """A subscription's life: bought as starter, upgraded to pro and given seats in the same second
    as a quantity change, a paid invoice, past_due and recovered, cancelled at period end, ended."""
    acct, sub, cus = f"acct_p{n}", f"sub_p{n}", f"cus_p{n}"
    end = T0 + MONTH

    def snap(event: str, at: object, **kw: object) -> pb.ProviderEvent:
        return subscription_event(f"evt_p{n}_{event}", sub, at, account_id=acct, customer_id=cus,  # type: ignore[arg-type]
                                  start=T0, period_end=end, **kw)  # type: ignore[arg-type]

    return [
        snap("created", T0, items=[("starter_monthly", 1)], event_type="customer.subscription.created"),
        invoice_event(f"evt_p{n}_inv", f"in_p{n}", sub, T0, customer_id=cus, lines=[("starter_monthly", 1, T0, end)]),
        snap("upgrade", T0 + 2 * HOUR, items=[("pro_monthly", 1)]),
        snap("same_second", T0 + 2 * HOUR, items=[("pro_monthly", 3)]),
        snap("past_due", T0 + 3 * HOUR, status="past_due", items=[("pro_monthly", 3)]),
        snap("recovered", T0 + 4 * HOUR, items=[("pro_monthly", 3)]),
        snap("cancel_at_end", T0 + 5 * HOUR, items=[("pro_monthly", 3)], cancel_at_period_end=True),
        snap("deleted", end, status="canceled", ended_at=end, items=[("pro_monthly", 3)],
             event_type="customer.subscription.deleted"),
    ]


def normalized(ent: pb.Entitlements, n: int) -> str:
    text = str(pb.Entitlements(plans=ent.plans, grant_bindings=ent.grant_bindings, funding=ent.funding,
                               gate_bundle=ent.gate_bundle, gates=ent.gates, subscriptions=ent.subscriptions))
    return text.replace(f"_p{n}", "_p")


async def state(service: Client, n: int) -> list[str]:
    instants = [T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR + HOUR / 2, T0 + 6 * HOUR, T0 + MONTH - HOUR, T0 + MONTH]
    return [normalized(await service.entitlements(f"acct_p{n}", ts(at)), n) for at in instants]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(8)), repeats=st.lists(st.integers(0, 7), max_size=4), data=st.data())
async def test_any_delivery_order_with_duplicates_ends_in_the_in_order_state(
    service: Client, order: list[int], repeats: list[int], data: st.DataObject
) -> None:
    baseline = next(_accounts)
    await service.apply(*history(baseline))
    expected = await state(service, baseline)

    n = next(_accounts)
    events = history(n)
    delivery = [events[i] for i in order]
    for i in repeats:
        delivery.insert(data.draw(st.integers(0, len(delivery))), events[i])
    for event in delivery:
        await service.apply(event)
    assert await state(service, n) == expected
