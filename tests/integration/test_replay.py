"""ReplayEvents: a rejected event is applied again once what rejected it is fixed, through the same
path as a new one, audited, and never twice."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Client
from tests.support.provider import MONTH, T0, subscription_event, ts

APPLIED, REJECTED = pb.EVENT_OUTCOME_APPLIED, pb.EVENT_OUTCOME_REJECTED


def gold_catalog(valid: bool = True) -> pb.UpsertCatalogRequest:
    """A Gold price, its product in group core; with `valid` false its plan is not configured."""
    return pb.UpsertCatalogRequest(
        config=pb.CatalogConfig(plans=[pb.Plan(code="gold", priority=30)] if valid else []),
        products=[pb.ProductSnapshot(product_id="gold", name="Gold", active=True, provider_updated_at=ts(T0),
                                     metadata={"subscription_group": "core",
                                               "billing_plan_code": "gold" if valid else "platinum"})],
        prices=[pb.PriceSnapshot(price_id="price_gold_monthly", product_id="gold", lookup_key="gold_monthly",
                                 active=True, unit_amount=5000, currency="usd", interval="month", interval_count=1,
                                 provider_updated_at=ts(T0))])


async def replay(service: Client, **selection: object) -> pb.ReplayEventsResponse:
    return await service.as_role(Role.OPERATOR).ReplayEvents(pb.ReplayEventsRequest(**selection))  # type: ignore[arg-type]


async def test_an_event_rejected_for_an_unknown_price_applies_once_the_price_is_in_the_catalog(
    service: Client,
) -> None:
    [rejected] = await service.apply(subscription_event("evt_gold", "sub_1", T0, items=[("gold_monthly", 1)]))
    assert rejected.outcome == REJECTED and rejected.reason.startswith("unknown_price: price_gold_monthly")
    await service.operator.UpsertCatalog(gold_catalog())

    listed = await replay(service, reason="unknown_price", dry_run=True)
    assert [(e.provider_event_id, e.outcome, e.previous_reason) for e in listed.events] == [
        ("evt_gold", REJECTED, rejected.reason)]
    assert not (await service.entitlements()).plans  # a dry run changes nothing

    done = await replay(service, reason="unknown_price")
    assert [(e.provider_event_id, e.outcome, e.account_id) for e in done.events] == [("evt_gold", APPLIED, "acct_1")]
    assert [p.billing_plan_code for p in (await service.entitlements()).plans] == ["gold"]
    assert not (await replay(service, provider_event_ids=["evt_gold"])).events  # no longer rejected
    trace = await service.as_role(Role.SUPPORT).TracePurchase(pb.TracePurchaseRequest(subscription_id="sub_1"))
    assert [(e.provider_event_id, e.outcome) for e in trace.events] == [("evt_gold", APPLIED)]
    assert ("provider_event", "evt_gold", "replayed") in {(a.entity, a.entity_id, a.action) for a in trace.audit}


async def test_an_event_that_still_cannot_be_applied_stays_rejected_with_its_reason_now(service: Client) -> None:
    await service.operator.UpsertCatalog(gold_catalog(valid=False))
    [rejected] = await service.apply(subscription_event("evt_gold", "sub_1", T0, items=[("gold_monthly", 1)]))
    assert rejected.reason.startswith("invalid_catalog_entry")

    [again] = (await replay(service, account_id="acct_1")).events
    assert (again.outcome, again.reason) == (REJECTED, rejected.reason)
    await service.operator.UpsertCatalog(gold_catalog())
    [fixed] = (await replay(service, reason="invalid_catalog_entry")).events
    assert fixed.outcome == APPLIED


async def test_a_replay_takes_only_the_rejected_events_matching_every_filter_oldest_first(service: Client) -> None:
    for n in range(3):
        await service.apply(subscription_event(f"evt_{n}", f"sub_{n}", T0 + n * MONTH, items=[("gold_monthly", 1)],
                                               account_id=f"acct_{n}", customer_id=f"cus_{n}"))
    await service.apply(subscription_event("evt_ok", "sub_ok", T0, account_id="acct_ok", customer_id="cus_ok"))

    async def ids(**selection: object) -> list[str]:
        return [e.provider_event_id for e in (await replay(service, dry_run=True, **selection)).events]

    assert await ids(reason="unknown_price") == ["evt_0", "evt_1", "evt_2"]
    assert await ids(reason="unknown_price", account_id="acct_1") == ["evt_1"]
    assert await ids(created_from=ts(T0 + MONTH)) == ["evt_1", "evt_2"]
    assert await ids(created_from=ts(T0), created_until=ts(T0 + MONTH)) == ["evt_0"]
    assert await ids(provider_event_ids=["evt_2", "evt_ok"]) == ["evt_2"]
    assert await ids(reason="unknown_account") == []
    limited = await replay(service, dry_run=True, reason="unknown", limit=2)
    assert [e.provider_event_id for e in limited.events] == ["evt_0", "evt_1"] and limited.more


async def test_two_replays_of_one_event_at_once_apply_it_once(service: Client) -> None:
    await service.apply(subscription_event("evt_gold", "sub_1", T0, items=[("gold_monthly", 1)]))
    await service.operator.UpsertCatalog(gold_catalog())
    first, second = await asyncio.gather(replay(service, provider_event_ids=["evt_gold"]),
                                         replay(service, provider_event_ids=["evt_gold"]))
    outcomes = sorted(e.outcome for reply in (first, second) for e in reply.events)
    assert outcomes in ([APPLIED], [APPLIED, pb.EVENT_OUTCOME_DUPLICATE])
    assert len((await service.entitlements()).plans) == 1


@pytest.mark.parametrize(("request_", "role", "code"), [
    (pb.ReplayEventsRequest(dry_run=True), Role.OPERATOR, grpc.StatusCode.INVALID_ARGUMENT),
    (pb.ReplayEventsRequest(created_from=ts(T0 + MONTH), created_until=ts(T0)), Role.OPERATOR,
     grpc.StatusCode.INVALID_ARGUMENT),
    (pb.ReplayEventsRequest(reason="unknown_price", limit=-1), Role.OPERATOR, grpc.StatusCode.INVALID_ARGUMENT),
    (pb.ReplayEventsRequest(reason="unknown_price"), Role.SUPPORT, grpc.StatusCode.PERMISSION_DENIED),
    (pb.ReplayEventsRequest(reason="unknown_price"), Role.CHECKOUT, grpc.StatusCode.PERMISSION_DENIED),
], ids=["no filter", "a range ending before it starts", "a negative limit", "support may not replay",
        "the checkout service may not replay"])
async def test_a_replay_request_is_refused_before_anything_changes(
    service: Client, request_: pb.ReplayEventsRequest, role: Role, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.as_role(role).ReplayEvents(request_)
    assert refused.value.code() == code
