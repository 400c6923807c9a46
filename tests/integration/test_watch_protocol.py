"""WatchEntitlements as a protocol, over the wire: many accounts on one stream, self-describing
messages, the heartbeat once every account is current, resuming from known revisions, the gate
schedule, a fresh message when a boundary passes, a change to everything reaching the stream at
its turn, and the requests it refuses."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client
from tests.support.provider import example_catalog_request, subscription_event

HEARTBEAT = Duration(nanos=200_000_000)


def now() -> datetime:
    return datetime.now(UTC)


async def subscribe(service: Client, account_id: str, event_id: str, cancel_at: datetime | None = None) -> None:
    start = now() - timedelta(hours=1)
    results = await service.apply(subscription_event(event_id, f"sub_{account_id}", start, account_id=account_id,
                                                     customer_id=f"cus_{account_id}", cancel_at=cancel_at))
    assert results[0].outcome == pb.EVENT_OUTCOME_APPLIED


async def read_until_heartbeat(stream: object) -> list[pb.WatchEntitlementsResponse]:
    found = []
    while True:
        message = await asyncio.wait_for(stream.read(), 5)  # type: ignore[attr-defined]
        if message.HasField("heartbeat_at"):
            return found
        found.append(message)


async def test_one_stream_sends_each_account_once_then_a_heartbeat_then_changes(service: Client) -> None:
    await subscribe(service, "acct_1", "evt_1")
    stream = service.product.WatchEntitlements(pb.WatchEntitlementsRequest(
        account_ids=["acct_1", "acct_2"], heartbeat_interval=HEARTBEAT))
    initial = await read_until_heartbeat(stream)
    by_account = {m.entitlements.account_id: m for m in initial}
    assert sorted(by_account) == ["acct_1", "acct_2"] and len(initial) == 2
    assert all(m.initial for m in initial)
    assert by_account["acct_1"].entitlements.revision > 0 and by_account["acct_2"].entitlements.revision == 0
    assert [(s.gate_bundle, list(s.gates), s.HasField("end")) for s in by_account["acct_1"].gate_schedule] == [
        ("pro", ["api_access", "export", "priority_support"], False)]
    assert [(s.gate_bundle, s.HasField("end")) for s in by_account["acct_2"].gate_schedule] == [("", False)]
    assert await read_until_heartbeat(stream) == []  # heartbeats keep coming while nothing changes
    await subscribe(service, "acct_2", "evt_2")
    changed = await read_until_heartbeat(stream)
    assert [(m.entitlements.account_id, m.initial, m.entitlements.gate_bundle) for m in changed] == [
        ("acct_2", False, "pro")]
    stream.cancel()


async def test_a_resumed_stream_sends_only_the_accounts_whose_revision_moved(service: Client) -> None:
    await subscribe(service, "acct_1", "evt_1")
    await subscribe(service, "acct_2", "evt_2")
    first = service.product.WatchEntitlements(pb.WatchEntitlementsRequest(
        account_ids=["acct_1", "acct_2"], heartbeat_interval=HEARTBEAT))
    known = {m.entitlements.account_id: m.entitlements.revision for m in await read_until_heartbeat(first)}
    first.cancel()
    await subscribe(service, "acct_3", "evt_3")
    ended = now() - timedelta(minutes=1)
    await service.apply(subscription_event("evt_4", "sub_acct_2", ended, account_id="acct_2", customer_id="cus_acct_2",
                                           start=now() - timedelta(hours=1), status="canceled", ended_at=ended))
    resumed = service.product.WatchEntitlements(pb.WatchEntitlementsRequest(
        account_ids=["acct_1", "acct_2", "acct_3"], known_revisions={**known, "acct_9": 4},
        heartbeat_interval=HEARTBEAT))
    sent = await read_until_heartbeat(resumed)
    assert sorted((m.entitlements.account_id, m.initial) for m in sent) == [("acct_2", True), ("acct_3", True)]
    assert next(m for m in sent if m.entitlements.account_id == "acct_2").entitlements.revision > known["acct_2"]
    resumed.cancel()


async def test_the_schedule_carries_a_plan_ending_and_a_fresh_message_follows_the_boundary(
        service: Client) -> None:
    boundary = now() + timedelta(seconds=1)
    await subscribe(service, "acct_1", "evt_1", cancel_at=boundary)
    stream = service.product.WatchEntitlements(pb.WatchEntitlementsRequest(account_id="acct_1"))
    first = await asyncio.wait_for(stream.read(), 5)
    spans = [(s.gate_bundle, s.end.ToDatetime(UTC) if s.HasField("end") else None) for s in first.gate_schedule]
    assert spans == [("pro", boundary), ("", None)]
    after = await asyncio.wait_for(stream.read(), 5)  # the single-account stream, as it always was: no heartbeats
    assert not after.initial and after.entitlements.gate_bundle == "" and after.entitlements.as_of.ToDatetime(
        UTC) >= boundary
    assert [(s.gate_bundle, s.HasField("end")) for s in after.gate_schedule] == [("", False)]
    stream.cancel()


async def test_a_catalog_change_reaches_the_stream_at_its_turn_with_no_heartbeat_while_it_waits(
        service: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every stream's turn comes at the end of the spread: a second for one stream, five heartbeats long.
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    await subscribe(service, "acct_1", "evt_1")
    stream = service.product.WatchEntitlements(pb.WatchEntitlementsRequest(
        account_ids=["acct_1"], heartbeat_interval=HEARTBEAT))
    await read_until_heartbeat(stream)
    pro = next(b for b in example_catalog_request().config.gate_bundles if b.code == "pro")
    changed_at = time.monotonic()
    await service.operator.UpsertCatalog(pb.UpsertCatalogRequest(config=pb.CatalogConfig(
        gate_bundles=[pb.GateBundle(code="pro", gates=[*pro.gates, "early_access"])])))
    heartbeats = 0
    while (message := await asyncio.wait_for(stream.read(), 5)).HasField("heartbeat_at"):
        heartbeats += 1
    assert "early_access" in message.gate_schedule[0].gates
    assert time.monotonic() - changed_at >= 0.9
    # One heartbeat may leave before the replica hears of the change; none once it waits for its turn.
    assert heartbeats <= 1
    stream.cancel()


@pytest.mark.parametrize("request_", [
    pb.WatchEntitlementsRequest(account_id="acct_1", account_ids=["acct_2"]),
    pb.WatchEntitlementsRequest(),
    pb.WatchEntitlementsRequest(account_ids=["acct_1", "acct_1"]),
    pb.WatchEntitlementsRequest(account_ids=[f"acct_{n}" for n in range(1001)]),
    pb.WatchEntitlementsRequest(account_ids=["acct_1", ""]),
    pb.WatchEntitlementsRequest(account_id="acct_1", heartbeat_interval=Duration(nanos=50_000_000)),
    pb.WatchEntitlementsRequest(account_id="acct_1", heartbeat_interval=Duration(seconds=301)),
], ids=["both", "neither", "repeated", "too_many", "empty_id", "heartbeat_too_often", "heartbeat_too_rare"])
async def test_a_request_the_protocol_does_not_allow_is_invalid(service: Client,
                                                                request_: pb.WatchEntitlementsRequest) -> None:
    stream = service.product.WatchEntitlements(request_)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(stream.read(), 5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_thousand_accounts_fit_on_one_stream(service: Client) -> None:
    stream = service.product.WatchEntitlements(pb.WatchEntitlementsRequest(
        account_ids=[f"acct_{n}" for n in range(1000)], heartbeat_interval=HEARTBEAT))
    assert len(await read_until_heartbeat(stream)) == 1000
    stream.cancel()
