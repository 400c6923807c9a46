"""Two live subscriptions in one non-stackable group anyway: the group's `conflict_policy` decides
what is done. `flag` opens a `duplicate_subscription_in_group` mismatch naming both, closed when
one ends; `cancel_and_refund` also keeps one action for the loser, however often its events are
delivered or the account derived again, which the checkout service carries out and reports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from prometheus_client import REGISTRY

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Client, start_service, stop_service
from tests.support.provider import T0, example_catalog_request, subscription_event

MINUTE = timedelta(minutes=1)
DUPLICATE = "duplicate_subscription_in_group"


async def started(database_url: str, policy: int) -> Client:
    client = await start_service(database_url)
    request = example_catalog_request()
    for group in request.config.groups:
        if group.code == "core":
            group.conflict_policy = policy  # type: ignore[assignment]
    await client.operator.UpsertCatalog(request)
    return client


@pytest.fixture
async def flagging(database_url: str) -> AsyncIterator[Client]:
    client = await started(database_url, pb.CONFLICT_POLICY_FLAG)
    yield client
    await stop_service(client)


@pytest.fixture
async def refunding(database_url: str) -> AsyncIterator[Client]:
    client = await started(database_url, pb.CONFLICT_POLICY_CANCEL_AND_REFUND)
    yield client
    await stop_service(client)


async def two_live(service: Client) -> None:
    await service.apply(subscription_event("evt_pro", "sub_pro", T0, items=[("pro_monthly", 1)]))
    await service.apply(subscription_event("evt_starter", "sub_starter", T0 + MINUTE, items=[("starter_monthly", 1)]))


def conflicts_counted(policy: str) -> float:
    return REGISTRY.get_sample_value("group_conflicts_total", {"policy": policy}) or 0.0


async def duplicates(service: Client, include_closed: bool = False) -> list[pb.Mismatch]:
    found = await service.as_role(Role.SUPPORT).ListMismatches(pb.ListMismatchesRequest(include_closed=include_closed))
    return [m for m in found.mismatches if m.kind == DUPLICATE]


async def test_flag_opens_a_mismatch_naming_both_and_closes_it_when_one_ends(flagging: Client) -> None:
    counted = conflicts_counted("flag")
    await two_live(flagging)
    await flagging.apply(subscription_event("evt_starter_again", "sub_starter", T0 + MINUTE + MINUTE / 2,
                                            items=[("starter_monthly", 1)]))  # the loser derived again
    assert conflicts_counted("flag") == counted + 1  # counted once, when its mismatch opened
    [opened] = await duplicates(flagging)
    assert opened.subscription_id == "sub_starter"
    diff = json.loads(opened.diff)
    assert (diff["subscriptions"], diff["winner_subscription_id"], diff["conflict_policy"]) == (
        ["sub_pro", "sub_starter"], "sub_pro", "flag")
    state = await flagging.checkout.GetReconcileState(pb.GetReconcileStateRequest())
    assert not state.conflict_actions
    await flagging.apply(subscription_event("evt_end", "sub_starter", T0 + 2 * MINUTE, status="canceled",
                                            items=[("starter_monthly", 1)], ended_at=T0 + 2 * MINUTE,
                                            start=T0 + MINUTE, event_type="customer.subscription.deleted"))
    assert await duplicates(flagging) == []
    [closed] = await duplicates(flagging, include_closed=True)
    assert closed.resolution == "one subscription holds the group again"


async def test_cancel_and_refund_decides_one_action_for_the_loser_whatever_is_delivered_again(
    refunding: Client,
) -> None:
    await two_live(refunding)
    await refunding.apply(subscription_event("evt_starter", "sub_starter", T0 + MINUTE,
                                             items=[("starter_monthly", 1)]))  # a duplicate delivery
    await refunding.apply(subscription_event("evt_starter_2", "sub_starter", T0 + 3 * MINUTE,
                                             items=[("starter_monthly", 1)], start=T0 + MINUTE))
    state = await refunding.checkout.GetReconcileState(pb.GetReconcileStateRequest())
    [action] = state.conflict_actions
    assert (action.subscription_id, action.winner_subscription_id, action.subscription_group, action.state) == (
        "sub_starter", "sub_pro", "core", pb.CONFLICT_ACTION_STATE_DECIDED)
    assert action.cancel_idempotency_key == "conflict-cancel-sub_starter"
    assert action.refund_idempotency_key == "conflict-refund-sub_starter"
    assert [m.subscription_id for m in await duplicates(refunding)] == ["sub_starter"]

    record = refunding.checkout.RecordConflictAction
    canceled = await record(pb.RecordConflictActionRequest(subscription_id="sub_starter",
                                                           state=pb.CONFLICT_ACTION_STATE_CANCELED))
    assert canceled.changed and canceled.action.state == pb.CONFLICT_ACTION_STATE_CANCELED
    refunded = await record(pb.RecordConflictActionRequest(
        subscription_id="sub_starter", state=pb.CONFLICT_ACTION_STATE_REFUNDED, refund_id="re_1"))
    assert refunded.changed and refunded.action.refund_id == "re_1"
    for late in (pb.CONFLICT_ACTION_STATE_CANCELED, pb.CONFLICT_ACTION_STATE_REFUNDED):
        again = await record(pb.RecordConflictActionRequest(subscription_id="sub_starter", state=late,
                                                            refund_id="re_2"))
        assert not again.changed and again.action.refund_id == "re_1"
    assert not (await refunding.checkout.GetReconcileState(pb.GetReconcileStateRequest())).conflict_actions

    trace = await refunding.as_role(Role.SUPPORT).TracePurchase(pb.TracePurchaseRequest(subscription_id="sub_starter"))
    assert [(a.state, a.refund_id) for a in trace.conflict_actions] == [(pb.CONFLICT_ACTION_STATE_REFUNDED, "re_1")]
    assert [a.action for a in trace.audit if a.entity == "conflict_action"] == ["decided", "canceled", "refunded"]


async def test_a_step_for_no_action_or_without_its_refund_is_refused(refunding: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await refunding.checkout.RecordConflictAction(pb.RecordConflictActionRequest(
            subscription_id="sub_none", state=pb.CONFLICT_ACTION_STATE_CANCELED))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    await two_live(refunding)
    with pytest.raises(grpc.aio.AioRpcError) as bare:
        await refunding.checkout.RecordConflictAction(pb.RecordConflictActionRequest(
            subscription_id="sub_starter", state=pb.CONFLICT_ACTION_STATE_REFUNDED))
    assert bare.value.code() == grpc.StatusCode.INVALID_ARGUMENT
