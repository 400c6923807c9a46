"""The checkout service's channel to the entitlement service, against a stand-in server on a real
socket that answers UNAVAILABLE as the test says: a call is tried again, a bounded number of times,
and retries stop altogether while calls keep failing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from checkout_service.entitlement_client import open_channel
from checkout_service.errors import Aborted, RateLimited, RetryLater, Unavailable
from checkout_service.service import entitlement_call
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc


class Flaky(entitlement_pb2_grpc.EntitlementServiceServicer):
    """Answers GetAccount with `code` (UNAVAILABLE unless told) while `failures` lasts (None:
    always), and counts every attempt that reaches it."""

    def __init__(self) -> None:
        self.attempts = 0
        self.failures: int | None = None
        self.code = grpc.StatusCode.UNAVAILABLE

    async def GetAccount(self, request: pb.GetAccountRequest, context: grpc.aio.ServicerContext
                         ) -> pb.GetAccountResponse:
        self.attempts += 1
        if self.failures is None or self.failures > 0:
            if self.failures is not None:
                self.failures -= 1
            await context.abort(self.code, "the entitlement service cannot answer now")
        return pb.GetAccountResponse(account_id=request.account_id, provider_customer_id="cus_1")


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, entitlement_pb2_grpc.EntitlementServiceStub]]:
    servicer = Flaky()
    server = grpc.aio.server()
    entitlement_pb2_grpc.add_EntitlementServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", "checkout-token-for-tests")
    yield servicer, entitlement_pb2_grpc.EntitlementServiceStub(channel)
    await channel.close()
    await server.stop(0)


def get_account(stub: entitlement_pb2_grpc.EntitlementServiceStub) -> object:
    return entitlement_call(stub.GetAccount, pb.GetAccountRequest(account_id="acct_1"))


async def test_a_call_answered_unavailable_is_tried_again_and_succeeds(flaky) -> None:  # type: ignore[no-untyped-def]
    servicer, stub = flaky
    servicer.failures = 2
    reply = await get_account(stub)
    assert reply == pb.GetAccountResponse(account_id="acct_1", provider_customer_id="cus_1")
    assert servicer.attempts == 3


async def test_a_call_that_stays_unavailable_is_tried_three_times_then_fails_as_unavailable(flaky) -> None:  # type: ignore[no-untyped-def]
    servicer, stub = flaky
    with pytest.raises(Unavailable):
        await get_account(stub)
    assert servicer.attempts == 3


async def test_while_calls_keep_failing_nothing_is_tried_again(flaky) -> None:  # type: ignore[no-untyped-def]
    servicer, stub = flaky
    attempts = []
    for _ in range(10):
        before = servicer.attempts
        with pytest.raises(Unavailable):
            await get_account(stub)
        attempts.append(servicer.attempts - before)
    # 10 tokens, one spent per failed attempt; at 5 or fewer retries stop: 3 + 2 attempts, then one each.
    assert attempts == [3, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    servicer.failures = 0
    await get_account(stub)  # successes earn tokens back slowly; calls themselves go through at once
    assert servicer.attempts == sum(attempts) + 1


@pytest.mark.parametrize(("code", "passed_on"), [(grpc.StatusCode.RESOURCE_EXHAUSTED, RateLimited),
                                                 (grpc.StatusCode.ABORTED, Aborted)])
async def test_overload_and_lost_races_are_not_tried_again_and_fail_as_retry_later(  # type: ignore[no-untyped-def]
    flaky, code: grpc.StatusCode, passed_on: type[RetryLater],
) -> None:
    servicer, stub = flaky
    servicer.code = code
    # The caller answers 429 (RESOURCE_EXHAUSTED) or 503 (ABORTED) with Retry-After, and retries later.
    with pytest.raises(passed_on):
        await get_account(stub)
    assert servicer.attempts == 1
