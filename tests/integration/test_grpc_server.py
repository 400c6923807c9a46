"""The gRPC pipeline on a real server over a real socket (port 0): auth by role, the error
table, open health and reflection, and the graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from entitlement_service.domain.errors import InvalidRequest
from entitlement_service.grpc.access import ROLES_BY_METHOD, SERVICE
from entitlement_service.grpc.errors import ERRORS
from entitlement_service.grpc.servicer import EntitlementServicer
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from service_runtime.config import Address
from service_runtime.grpc_server import GrpcServer, build_grpc_server
from service_runtime.rpc import RpcPipeline
from tests.support.tokens import bearer, service_tokens

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ScriptedServicer(EntitlementServicer):
    """Answers CheckGate by gate name: `slow` waits for `release`, `bad` and `boom` raise."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def CheckGate(self, request: pb.CheckGateRequest, context: grpc.aio.ServicerContext) -> pb.CheckGateResponse:
        if request.gate == "slow":
            self.entered.set()
            await self.release.wait()
        if request.gate == "bad":
            raise InvalidRequest("gate must not be 'bad'")
        if request.gate == "boom":
            raise RuntimeError("secret internals")
        if request.gate == "unbuilt":
            raise NotImplementedError("CheckGate for this gate is not available")
        return pb.CheckGateResponse(allowed=True, gate_bundle="pro")


@pytest.fixture
async def served() -> AsyncIterator[tuple[GrpcServer, ScriptedServicer, grpc.aio.Channel]]:
    servicer = ScriptedServicer()
    pipeline = RpcPipeline(service_tokens(), ROLES_BY_METHOD, ERRORS)
    wrapped = pipeline.wrap(servicer, pb.DESCRIPTOR.services_by_name["EntitlementService"])
    server = build_grpc_server(
        Address("127.0.0.1", 0),
        [SERVICE],
        lambda s: entitlement_pb2_grpc.add_EntitlementServiceServicer_to_server(wrapped, s),  # type: ignore[arg-type]
    )
    await server.server.start()
    await server.set_serving(True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield server, servicer, channel
    await channel.close()
    await server.server.stop(0)


def stub(channel: grpc.aio.Channel) -> entitlement_pb2_grpc.EntitlementServiceStub:
    return entitlement_pb2_grpc.EntitlementServiceStub(channel)


async def code_of(call: asyncio.Future[object] | object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    return failed.value.code()


async def test_calls_without_a_known_token_are_unauthenticated(served) -> None:  # type: ignore[no-untyped-def]
    _, _, channel = served
    request = pb.CheckGateRequest(account_id="acct_1", gate="export")
    assert await code_of(stub(channel).CheckGate(request)) == grpc.StatusCode.UNAUTHENTICATED
    unknown = (("authorization", "Bearer nope-nope-nope-nope"),)
    assert await code_of(stub(channel).CheckGate(request, metadata=unknown)) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_of_the_wrong_role_is_permission_denied(served) -> None:  # type: ignore[no-untyped-def]
    _, _, channel = served
    request = pb.CheckGateRequest(account_id="acct_1", gate="export")
    denied = stub(channel).CheckGate(request, metadata=bearer(Role.SUPPORT))
    assert await code_of(denied) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_token_of_an_allowed_role_reaches_the_handler(served) -> None:  # type: ignore[no-untyped-def]
    _, _, channel = served
    reply = await stub(channel).CheckGate(pb.CheckGateRequest(account_id="a", gate="x"), metadata=bearer(Role.PRODUCT))
    assert reply.allowed and reply.gate_bundle == "pro"


async def test_a_capability_not_available_answers_unimplemented(served) -> None:  # type: ignore[no-untyped-def]
    _, _, channel = served
    call = stub(channel).CheckGate(pb.CheckGateRequest(account_id="a", gate="unbuilt"), metadata=bearer(Role.PRODUCT))
    assert await code_of(call) == grpc.StatusCode.UNIMPLEMENTED


async def test_domain_errors_map_through_the_table_and_internals_never_leak(served) -> None:  # type: ignore[no-untyped-def]
    _, _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub(channel).CheckGate(pb.CheckGateRequest(account_id="a", gate="bad"), metadata=bearer(Role.PRODUCT))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gate must not be 'bad'" in (bad.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as boom:
        await stub(channel).CheckGate(pb.CheckGateRequest(account_id="a", gate="boom"), metadata=bearer(Role.PRODUCT))
    assert boom.value.code() == grpc.StatusCode.INTERNAL
    assert boom.value.details() == "internal error"


async def test_health_and_reflection_need_no_token(served) -> None:  # type: ignore[no-untyped-def]
    _, _, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == SERVING
    listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    reply = await listing.read()
    assert {s.name for s in reply.list_services_response.service} == {
        SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


async def test_stopping_reports_not_serving_first_and_lets_in_flight_calls_finish(served) -> None:  # type: ignore[no-untyped-def]
    server, servicer, channel = served
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    assert (await watch.read()).status == SERVING
    in_flight = asyncio.ensure_future(
        stub(channel).CheckGate(pb.CheckGateRequest(account_id="a", gate="slow"), metadata=bearer(Role.PRODUCT))
    )
    await asyncio.wait_for(servicer.entered.wait(), 5)

    stopping = asyncio.ensure_future(server.stop(grace_s=10))
    assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
    watch.cancel()  # a watcher that saw NOT_SERVING goes elsewhere; open streams would hold the grace
    assert not in_flight.done()

    servicer.release.set()
    reply = await asyncio.wait_for(in_flight, 5)
    assert reply.allowed
    await asyncio.wait_for(stopping, 5)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub(channel).CheckGate(pb.CheckGateRequest(account_id="a", gate="x"), metadata=bearer(Role.PRODUCT),
                                      timeout=2)
