"""Page tokens are ours to issue: anything else is the caller's mistake, answered as one."""

from __future__ import annotations

import grpc
import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Client


@pytest.mark.parametrize("token", ["\u00b2", "1" * 30, "abc", "-1", " 5", "\u0661"])
async def test_a_page_token_this_service_did_not_issue_is_an_invalid_argument(service: Client, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.as_role(Role.SUPPORT).ListMismatches(pb.ListMismatchesRequest(page_token=token))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "page_token is not one this service issued"


@pytest.mark.parametrize("token", ["", "0", "123456789012345678"])
async def test_an_empty_or_issued_looking_page_token_reads_a_page(service: Client, token: str) -> None:
    page = await service.as_role(Role.SUPPORT).ListMismatches(pb.ListMismatchesRequest(page_token=token))
    assert list(page.mismatches) == [] and page.next_page_token == ""
