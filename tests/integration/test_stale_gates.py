"""A replica never answers a gate from a cache it cannot prove fresh: when its notification
connection goes silent (the network path stops relaying it, and nothing closes it), a missed
heartbeat makes it read from the database and report itself not ready until notifications are
proven again; its own writes reach its cache at once; and any cached answer has a maximum age."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta

import aiohttp

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client, start_service, stop_service
from tests.support.provider import T0, example_catalog_request, subscription_event
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

CHECK = pb.CheckGateRequest(account_id="acct_1", gate="api_access")
ENDED = T0 + timedelta(hours=1)
CANCELED = subscription_event("evt_2", "sub_1", ENDED, start=T0, status="canceled", ended_at=ENDED)
LISTENING = b"LISTEN \"entitlements_changed\""  # sent by the notification connection alone


@asynccontextmanager
async def replicas(database_url: str, env: Mapping[str, str]) -> AsyncIterator[tuple[Client, Client, TcpProxy]]:
    """A replica reaching the database through a proxy (configured by `env`), and one reaching it
    directly, over the example catalog, with acct_1 holding a plan that opens `api_access`."""
    proxy = await TcpProxy(database_url).start()
    behind = await start_service(proxy.url, env=env)
    direct = await start_service(database_url)
    try:
        await direct.operator.UpsertCatalog(example_catalog_request())
        await direct.apply(subscription_event("evt_1", "sub_1", T0))
        await eventually(lambda: allowed(behind), what="the proxied replica to see the plan")
        yield behind, direct, proxy
    finally:
        await stop_service(behind)
        await stop_service(direct)
        await proxy.close()


async def allowed(replica: Client) -> bool:
    return bool((await replica.product.CheckGate(CHECK)).allowed)


async def denied(replica: Client) -> bool:
    return not await allowed(replica)


async def ready(replica: Client) -> dict[str, object]:
    url = f"http://127.0.0.1:{replica.running.metrics_port}/readyz"
    async with aiohttp.ClientSession() as http, http.get(url) as reply:
        return {"status": reply.status, **await reply.json()}


async def test_a_silent_notification_connection_is_noticed_and_the_gate_is_read_from_the_database(
    database_url: str,
) -> None:
    heartbeat = {"CHANGE_HEARTBEAT_INTERVAL_S": "0.1", "CHANGE_HEARTBEAT_DEADLINE_S": "0.3",
                 "GATE_CACHE_MAX_AGE_S": "3600"}
    async with replicas(database_url, heartbeat) as (behind, direct, proxy):
        assert await allowed(behind)  # cached
        assert proxy.black_hole(LISTENING) == 1
        await direct.apply(CANCELED)  # announced, but the proxied replica never hears it

        async def unready() -> dict[str, object] | None:
            answer = await ready(behind)
            return answer if answer["status"] == 503 else None

        report = await eventually(unready, what="the replica to notice its notifications are unproven")
        assert report["checks"] == {"database": True, "change_notifications": False}
        assert await denied(behind)  # from the database, while notifications stay unproven

        async def reconnection_swallowed() -> bool:
            return proxy.silenced >= 2

        await eventually(reconnection_swallowed, what="a new notification connection to go silent as well")
        assert not await _is_ready(behind)
        proxy.restore()
        await eventually(lambda: _is_ready(behind), what="the replica to prove notifications again")
        assert await denied(behind)


async def _is_ready(replica: Client) -> bool:
    return (await ready(replica))["status"] == 200


async def test_a_replica_sees_its_own_write_at_once_without_its_notification(database_url: str) -> None:
    quiet = {"CHANGE_HEARTBEAT_INTERVAL_S": "3600", "GATE_CACHE_MAX_AGE_S": "3600"}
    async with replicas(database_url, quiet) as (behind, _, proxy):
        assert await allowed(behind)  # cached
        assert proxy.black_hole(LISTENING) == 1
        [result] = await behind.apply(CANCELED)
        assert result.outcome == pb.EVENT_OUTCOME_APPLIED
        assert await denied(behind)


async def test_a_cached_gate_answer_expires_after_its_maximum_age(database_url: str) -> None:
    short_lived = {"CHANGE_HEARTBEAT_INTERVAL_S": "3600", "GATE_CACHE_MAX_AGE_S": "0.5"}
    async with replicas(database_url, short_lived) as (behind, direct, proxy):
        assert await allowed(behind)  # cached
        assert proxy.black_hole(LISTENING) == 1
        await direct.apply(CANCELED)
        await eventually(lambda: denied(behind), timeout_s=5, what="the cached answer to expire")
