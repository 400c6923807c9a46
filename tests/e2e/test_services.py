"""Both services as real processes: health, reflection through the real grpcurl binary, auth
refusals, readiness while the database is missing, and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from selfserve.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2, entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.support.processes import ServiceProcess
from tests.support.tokens import TOKENS, bearer
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
ENTITLEMENT = "selfserve.entitlement.v1.EntitlementService"
CHECKOUT = "selfserve.checkout.v1.CheckoutService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Launch = Callable[[str, dict[str, str]], ServiceProcess]


async def start_stack(launch: Launch, database_url: str) -> tuple[ServiceProcess, ServiceProcess, int, int, int]:
    entitlement = await launch("entitlement_service", {"DATABASE_URL": database_url}).start()
    ports = await entitlement.wait_for_event("listening")
    checkout = await launch("checkout_service", {"ENTITLEMENT_TARGET": f"127.0.0.1:{ports['grpc_port']}"}).start()
    checkout_ports = await checkout.wait_for_event("listening")
    await entitlement.wait_for_event("ready")
    return entitlement, checkout, ports["grpc_port"], checkout_ports["grpc_port"], checkout_ports["http_port"]


async def health_status(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                timeout=2)
        return int(reply.status)


async def grpcurl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(GRPCURL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


async def test_both_services_serve_health_and_reflection_for_grpcurl(launch: Launch, database_url: str) -> None:
    _, _, e_port, c_port, _ = await start_stack(launch, database_url)
    for port, service in ((e_port, ENTITLEMENT), (c_port, CHECKOUT)):
        assert await health_status(port) == SERVING
        assert await health_status(port, service) == SERVING
        code, listed = await grpcurl("-plaintext", f"127.0.0.1:{port}", "list")
        assert code == 0, listed
        assert set(listed.split()) >= {service, "grpc.health.v1.Health"}
    code, described = await grpcurl("-plaintext", f"127.0.0.1:{e_port}", "describe", ENTITLEMENT)
    assert code == 0 and "rpc CheckGate ( .selfserve.entitlement.v1.CheckGateRequest )" in described


async def test_grpcurl_with_a_token_reaches_an_rpc_and_without_one_is_refused(
    launch: Launch, database_url: str
) -> None:
    _, _, e_port, _, _ = await start_stack(launch, database_url)
    body = json.dumps({"account_id": "acct_1"})
    code, refused = await grpcurl("-plaintext", "-d", body, f"127.0.0.1:{e_port}", f"{ENTITLEMENT}/GetEntitlements")
    assert code != 0 and "Unauthenticated" in refused
    code, answered = await grpcurl("-plaintext", "-H", f"authorization: Bearer {TOKENS[Role.SUPPORT]}", "-d", body,
                                   f"127.0.0.1:{e_port}", f"{ENTITLEMENT}/GetEntitlements")
    assert "Unauthenticated" not in answered and "PermissionDenied" not in answered


async def test_each_service_refuses_missing_unknown_and_wrong_role_tokens(launch: Launch, database_url: str) -> None:
    _, _, e_port, c_port, _ = await start_stack(launch, database_url)
    cases = [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer unknown-token-unknown-token"),), grpc.StatusCode.UNAUTHENTICATED),
        (bearer(Role.SUPPORT), grpc.StatusCode.PERMISSION_DENIED),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{e_port}") as e, grpc.aio.insecure_channel(
        f"127.0.0.1:{c_port}"
    ) as c:
        gate = entitlement_pb2_grpc.EntitlementServiceStub(e).CheckGate
        reconcile = checkout_pb2_grpc.CheckoutServiceStub(c).Reconcile
        for metadata, expected in cases:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await gate(entitlement_pb2.CheckGateRequest(account_id="a", gate="g"), metadata=metadata)
            assert refused.value.code() == expected
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await reconcile(checkout_pb2.ReconcileRequest(), metadata=metadata)
            assert refused.value.code() == expected


async def test_sigterm_reports_not_serving_then_exits_cleanly(launch: Launch, database_url: str) -> None:
    entitlement, checkout, e_port, c_port, _ = await start_stack(launch, database_url)
    for process, port in ((entitlement, e_port), (checkout, c_port)):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == SERVING
            assert process.proc is not None
            process.proc.terminate()
            assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
            watch.cancel()
        assert await process.wait_exit() == 0
        assert process.events("shutting_down") and process.events("stopped")


async def test_readiness_waits_for_a_database_that_appears_later(
    launch: Launch, pg_admin_url: str, fresh_database_url: str
) -> None:
    late_url = fresh_database_url + "_late"
    entitlement = await launch("entitlement_service", {"DATABASE_URL": late_url}).start()
    ports = await entitlement.wait_for_event("listening")
    await entitlement.wait_for_event("database_unreachable")
    assert await health_status(ports["grpc_port"]) == NOT_SERVING
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{ports['metrics_port']}/readyz") as reply:
        assert reply.status == 503

    name = late_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await entitlement.wait_for_event("ready")
        assert await health_status(ports["grpc_port"]) == SERVING
        assert len(entitlement.events("database_unreachable")) == 1
        assert await entitlement.terminate() == 0
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_checkout_readiness_follows_the_entitlement_service(launch: Launch, database_url: str) -> None:
    entitlement, _, _, _, http_port = await start_stack(launch, database_url)

    async def readyz() -> int:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/readyz") as response:
            return response.status

    async def not_ready() -> bool:
        return await readyz() == 503

    assert await readyz() == 200
    await entitlement.terminate()
    await eventually(not_ready, what="checkout /readyz to report 503")
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/healthz") as response:
        assert response.status == 200


@pytest.mark.parametrize(("module", "env", "named"), [
    ("entitlement_service", {"SERVICE_TOKENS": ""}, "SERVICE_TOKENS"),
    ("checkout_service", {"STRIPE_SYNC_MODE": "sometimes"}, "STRIPE_SYNC_MODE"),
    ("entitlement_service", {"ENTITLEMENT_GRPC_ADDR": "nowhere"}, "ENTITLEMENT_GRPC_ADDR"),
])
async def test_a_bad_setting_stops_start_up_naming_the_variable(
    launch: Launch, module: str, env: dict[str, str], named: str
) -> None:
    process = await launch(module, env).start()
    assert await process.wait_exit() != 0
    assert any(named in line and "configuration error" in line for line in process.raw)
