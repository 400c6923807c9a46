"""The checkout service's reconciler over the real entitlement service and PostgreSQL, with a fake
provider that can hold what the simulator cannot (a subscription status no API version has, an
event that cannot be read): it skips and records what it cannot read, never dies, and runs on one
replica at a time."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from prometheus_client import REGISTRY

from checkout_service.entitlement_client import open_channel
from checkout_service.errors import AlreadyRunning
from checkout_service.reconcile import reconcile, reconcile_every
from checkout_service.service import Deps
from checkout_service.webhooks import BoundedCache, WebhookDeps
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.integration.conftest import Client
from tests.support.fake_provider import FakeProvider
from tests.support.tokens import TOKENS
from tests.support.waiting import eventually

RECENTLY = int(time.time()) - 600  # within the replay's reach (three days back without a checkpoint)
SUBSCRIPTION = json.loads((Path(__file__).resolve().parents[1] / "support" / "stripe_fixtures.json").read_text(
))["resources"]["subscription"]


@pytest.fixture
async def hooks(service: Client) -> AsyncIterator[tuple[WebhookDeps, FakeProvider]]:
    provider = FakeProvider()
    channel = open_channel(f"127.0.0.1:{service.running.port}", TOKENS[Role.CHECKOUT])
    deps = Deps(entitlement_pb2_grpc.EntitlementServiceStub(channel), provider, "", 500)
    yield WebhookDeps(deps, ("whsec_reconciler",), 300, False, BoundedCache(provider.retrieve_product),
                      BoundedCache(provider.retrieve_customer)), provider
    await channel.close()


async def link(service: Client, *accounts: str) -> None:
    for account in accounts:
        await service.checkout.LinkProviderCustomer(pb.LinkProviderCustomerRequest(
            account_id=account, provider_customer_id=account.replace("acct", "cus")))


def subscription(customer: str, status: str) -> dict[str, Any]:
    found = copy.deepcopy(SUBSCRIPTION)
    found.update(id=f"sub_{customer}", customer=customer, status=status)
    return found


def runs(result: str) -> float:
    return REGISTRY.get_sample_value("reconcile_runs_total", {"result": result}) or 0.0


async def test_an_account_whose_subscriptions_cannot_be_read_is_skipped_and_recorded(
    service: Client, hooks: tuple[WebhookDeps, FakeProvider]
) -> None:
    w, provider = hooks
    await link(service, "acct_1", "acct_2", "acct_3")
    provider.subscriptions["cus_2"] = [subscription("cus_2", "frozen")]  # a status no API version has
    report = await reconcile(w, None)
    assert report.sweep_complete
    assert (report.accounts_checked, report.accounts_unreadable) == (3, 1)
    [recorded] = report.open_mismatches
    assert (recorded.kind, recorded.account_id) == ("unreadable", "acct_2") and "frozen" in recorded.diff
    provider.subscriptions["cus_2"] = []
    again = await reconcile(w, None)
    assert again.accounts_unreadable == 0 and not again.open_mismatches


async def test_an_event_that_cannot_be_read_is_skipped_and_the_replay_goes_on(
    service: Client, hooks: tuple[WebhookDeps, FakeProvider]
) -> None:
    w, provider = hooks
    state = await service.checkout.GetReconcileState(pb.GetReconcileStateRequest())
    provider.events = [{"id": "evt_unreadable", "object": "event", "type": "customer.subscription.updated",
                        "created": RECENTLY, "data": {"object": subscription("cus_9", "frozen")}}]
    assert not state.HasField("events_checkpoint")
    report = await reconcile(w, None)
    assert (report.events_unreadable, report.events_replayed) == (1, 0)
    moved = await service.checkout.GetReconcileState(pb.GetReconcileStateRequest())
    assert moved.events_checkpoint.seconds >= RECENTLY  # past it: the next run does not stop there again


async def test_a_run_for_one_account_replays_that_accounts_events_only(
    service: Client, hooks: tuple[WebhookDeps, FakeProvider]
) -> None:
    w, provider = hooks
    await link(service, "acct_1", "acct_2")
    provider.events = [{"id": f"evt_{customer}", "object": "event", "type": "customer.subscription.updated",
                        "created": RECENTLY, "data": {"object": subscription(customer, "frozen")}}
                       for customer in ("cus_1", "cus_2")]
    report = await reconcile(w, "acct_1")
    assert report.events_unreadable == 1  # acct_1's; acct_2's was not read


async def test_only_one_replica_reconciles_at_a_time(service: Client, hooks: tuple[WebhookDeps, FakeProvider]
                                                     ) -> None:
    w, _ = hooks
    other = pb.LeaseReconcilerRequest(holder="another-replica", ttl=Duration(seconds=60))
    assert (await service.checkout.LeaseReconciler(other)).granted
    skipped = runs("skipped")
    with pytest.raises(AlreadyRunning, match="another-replica"):
        await reconcile(w, None)
    assert runs("skipped") == skipped + 1
    await reconcile(w, "acct_1")  # one account needs no lease
    other.ttl.seconds = 0
    await service.checkout.LeaseReconciler(other)
    assert (await reconcile(w, None)).sweep_complete


async def test_the_periodic_reconciler_outlives_failing_runs(service: Client, hooks: tuple[WebhookDeps, FakeProvider]
                                                             ) -> None:
    w, provider = hooks
    await link(service, "acct_1")
    provider.down = True
    failed, completed = runs("failed"), runs("completed")
    periodic = asyncio.create_task(reconcile_every(w, 0.01))
    try:
        async def failing() -> bool:
            return runs("failed") >= failed + 2

        await eventually(failing, what="runs to fail while the provider is down")
        provider.down = False

        async def completing() -> bool:
            return runs("completed") > completed

        await eventually(completing, what="a run to complete once the provider is back")
        assert not periodic.done()
    finally:
        periodic.cancel()
