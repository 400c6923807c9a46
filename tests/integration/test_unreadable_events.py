"""Signed webhooks the checkout service cannot read are recorded as rejected (`unreadable: …`)
with their raw payload, acknowledged with 2xx, and applied once normalized again
(ReplayUnreadableEvents)."""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkout_service.stripe.signature import sign
from selfserve.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import SECRET, Stack, open_stack
from tests.integration.test_checkout_service import subscription_payload
from tests.support.tokens import bearer

REJECTED = pb.EVENT_OUTCOME_REJECTED


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    async with open_stack(database_url) as stack:
        yield stack


async def post_signed(stack: Stack, raw: bytes) -> tuple[int, Any]:
    at = int(time.time())
    async with stack.http.post(stack.url("/webhooks/stripe"), data=raw,
                               headers={"Stripe-Signature": f"t={at},v1={sign(raw, SECRET, at)}"}) as r:
        return r.status, await r.json()


async def stored(database_url: str, event_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch("SELECT provider_event_id, outcome, reason, payload, deliveries FROM provider_events"
                                " WHERE provider_event_id = $1", event_id)
    finally:
        await conn.close()


async def listed(stack: Stack, *ids: str) -> list[pb.ReplayedEvent]:
    reply = await stack.entitlement.as_role(Role.OPERATOR).ReplayEvents(
        pb.ReplayEventsRequest(provider_event_ids=list(ids), dry_run=True))  # type: ignore[attr-defined]
    return list(reply.events)


def updated(event_id: str, **changes: Any) -> dict[str, Any]:
    event = subscription_payload(event_id)
    event["type"] = "customer.subscription.updated"
    sub = event["data"]["object"]
    for key, value in changes.items():
        if key == "quantity":
            sub["items"]["data"][0]["quantity"] = value
        else:
            sub[key] = value
    return event


async def test_an_unknown_status_is_acknowledged_and_kept_rejected_with_its_reason_and_payload(
    stack: Stack, database_url: str
) -> None:
    raw = json.dumps(updated("evt_frozen", status="frozen")).encode()
    status, reply = await post_signed(stack, raw)
    assert status == 200 and reply["outcome"] == "rejected"
    [row] = await stored(database_url, "evt_frozen")
    assert row["outcome"] == "rejected" and row["reason"].startswith("unreadable: ") and "frozen" in row["reason"]
    assert bytes(row["payload"]) == raw
    [event] = await listed(stack, "evt_frozen")
    assert event.previous_reason == row["reason"] and event.raw_payload == raw


async def test_a_quantity_that_is_not_a_number_is_acknowledged_and_recorded(stack: Stack, database_url: str) -> None:
    status, reply = await post_signed(stack, json.dumps(updated("evt_abc", quantity="abc")).encode())
    assert status == 200 and reply["outcome"] == "rejected"
    [row] = await stored(database_url, "evt_abc")
    assert row["outcome"] == "rejected" and row["reason"].startswith("unreadable: ")


async def test_a_huge_integer_is_acknowledged_and_recorded_with_the_exact_bytes(
    stack: Stack, database_url: str
) -> None:
    raw = json.dumps(updated("evt_huge", quantity=10 ** 40)).encode()
    status, reply = await post_signed(stack, raw)
    assert status == 200 and reply["outcome"] == "rejected"
    [row] = await stored(database_url, "evt_huge")
    assert row["reason"].startswith("unreadable: ") and bytes(row["payload"]) == raw


async def test_an_id_with_a_nul_character_is_acknowledged_and_recorded_under_a_storable_id(
    stack: Stack, database_url: str
) -> None:
    raw = json.dumps(updated("evt_\u0000nul")).encode()
    status, reply = await post_signed(stack, raw)
    assert status == 200 and reply["outcome"] == "rejected" and "\x00" not in reply["id"]
    [row] = await stored(database_url, reply["id"])
    assert row["reason"].startswith("unreadable: ") and bytes(row["payload"]) == raw


async def test_a_rejected_event_delivered_again_stays_one_row(stack: Stack, database_url: str) -> None:
    raw = json.dumps(updated("evt_twice", status="frozen")).encode()
    assert (await post_signed(stack, raw))[0] == 200
    status, reply = await post_signed(stack, raw)
    assert status == 200 and reply["outcome"] == "duplicate"
    [row] = await stored(database_url, "evt_twice")
    assert row["deliveries"] == 2


async def replay_unreadable(stack: Stack, **request: Any) -> checkout_pb2.ReplayUnreadableEventsResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.checkout.port}") as channel:
        return await checkout_pb2_grpc.CheckoutServiceStub(channel).ReplayUnreadableEvents(
            checkout_pb2.ReplayUnreadableEventsRequest(**request), metadata=bearer(Role.OPERATOR))


async def test_an_unreadable_event_whose_payload_reads_now_is_applied_by_a_replay_once(
    stack: Stack, database_url: str
) -> None:
    # What a normalizer that could not read it would have stored: the payload is a valid event.
    raw = json.dumps(subscription_payload("evt_later")).encode()
    unreadable = pb.ProviderEvent(provider_event_id="evt_later", type="customer.subscription.created",
                                  raw_payload=raw, unreadable_reason="as the normalizer of then saw it")
    unreadable.created.FromSeconds(1_767_225_600)
    [result] = await stack.entitlement.apply(unreadable)
    assert result.outcome == REJECTED and result.reason == "unreadable: as the normalizer of then saw it"

    dry = await replay_unreadable(stack, provider_event_ids=["evt_later"], dry_run=True)
    assert [(e.provider_event_id, e.outcome) for e in dry.events] == [("evt_later", REJECTED)]
    assert not (await stack.entitlement.entitlements("acct_w")).plans

    done = await replay_unreadable(stack, provider_event_ids=["evt_later"])
    assert [(e.provider_event_id, e.outcome, e.account_id) for e in done.events] == [
        ("evt_later", pb.EVENT_OUTCOME_APPLIED, "acct_w")]
    assert [p.billing_plan_code for p in (await stack.entitlement.entitlements("acct_w")).plans] == ["pro"]
    [row] = await stored(database_url, "evt_later")
    assert row["outcome"] == "applied"
    assert not (await replay_unreadable(stack, provider_event_ids=["evt_later"])).events  # once
    trace = await stack.entitlement.as_role(Role.SUPPORT).TracePurchase(  # type: ignore[attr-defined]
        pb.TracePurchaseRequest(subscription_id="sub_w"))
    assert [(e.provider_event_id, e.outcome) for e in trace.events] == [("evt_later", pb.EVENT_OUTCOME_APPLIED)]


async def test_an_event_that_still_cannot_be_read_stays_rejected(stack: Stack, database_url: str) -> None:
    assert (await post_signed(stack, json.dumps(updated("evt_still", status="frozen")).encode()))[0] == 200
    done = await replay_unreadable(stack, provider_event_ids=["evt_still"])
    assert [(e.provider_event_id, e.outcome) for e in done.events] == [("evt_still", REJECTED)]
    assert "frozen" in done.events[0].reason
    [row] = await stored(database_url, "evt_still")
    assert row["outcome"] == "rejected"


# Property: whatever a signed subscription event holds, the endpoint never answers 5xx and the
# event is recorded under the id it answers.
_ids = itertools.count()
PATHS = [("status",), ("created",), ("customer",), ("metadata",), ("items",), ("items", "data", 0, "quantity"),
         ("items", "data", 0, "price"), ("items", "data", 0, "price", "unit_amount"),
         ("items", "data", 0, "price", "recurring"), ("items", "data", 0, "current_period_end"), ("cancel_at",),
         ("start_date",), ("id",)]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.sampled_from(["\x00", "\ud800", "frozen", "abc", ""]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _holds(target: Any, step: Any) -> bool:
    return (isinstance(target, dict) and step in target) or (
        isinstance(target, list) and isinstance(step, int) and step < len(target))


def mutate(event: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = event["data"]["object"]
    for step in path[:-1]:
        if not _holds(target, step):
            return
        target = target[step]
    if isinstance(target, dict) or _holds(target, path[-1]):
        target[path[-1]] = value


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3))
async def test_any_signed_subscription_event_is_acknowledged_and_recorded(
    stack: Stack, database_url: str, changes: list[tuple[tuple[Any, ...], Any]]
) -> None:
    event = copy.deepcopy(subscription_payload(f"evt_prop_{next(_ids)}"))
    event["type"] = "customer.subscription.updated"
    for path, value in changes:
        mutate(event, path, value)
    raw = json.dumps(event).encode()  # lone surrogates travel as \ud800 escapes, big integers as digits
    status, reply = await post_signed(stack, raw)
    assert status < 500, reply
    assert status == 200, reply
    [row] = await stored(database_url, reply["id"])
    assert row["outcome"] in {"applied", "stale", "ignored", "rejected"}
    assert bytes(row["payload"]) == raw
