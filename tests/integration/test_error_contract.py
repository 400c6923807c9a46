"""The error contract over real sockets (docs/contract.md#error-contract): refusals of the
entitlement service reach the checkout service's callers faithfully, gRPC callers get the
selection problems as standard error details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from selfserve.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Stack, open_stack
from tests.support.tokens import bearer


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    async with open_stack(database_url) as stack:
        yield stack


def checkout_body(*items: dict[str, Any], account_id: str = "acct_1") -> dict[str, Any]:
    return {"account_id": account_id, "items": list(items) or [{"price": "pro_monthly"}],
            "success_url": "https://app.example/done", "cancel_url": "https://app.example/pricing"}


async def test_a_customer_linked_to_another_account_is_answered_409_failed_precondition(stack: Stack) -> None:
    await stack.entitlement.checkout.LinkProviderCustomer(
        pb.LinkProviderCustomerRequest(account_id="acct_other", provider_customer_id="cus_taken"))
    # The provider hands acct_1 a customer the entitlement service holds for another account.
    stack.provider.by_key["customer-acct_1"] = {"id": "cus_taken", "metadata": {"account_id": "acct_other"}}
    status, reply = await stack.post("/v1/checkout/sessions", checkout_body())
    assert (status, reply["error"]["code"]) == (409, "failed_precondition")
    assert "cus_taken" in reply["error"]["message"]


async def test_grpc_callers_get_the_selection_problems_as_rich_error_details(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.checkout.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await checkout_pb2_grpc.CheckoutServiceStub(channel).CreateCheckoutSession(
                checkout_pb2.CreateCheckoutSessionRequest(
                    account_id="acct_1", items=[pb.PurchaseItem(price="pro_monthly", quantity=1),
                                                pb.PurchaseItem(price="gold_monthly", quantity=1)],
                    success_url="https://app.example/done", cancel_url="https://app.example/pricing"),
                metadata=bearer(Role.PRODUCT))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)
    assert status is not None and status.message == refused.value.details()
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and info.reason == "INVALID_SELECTION"
    assert status.details[1].Unpack(bad)
    assert [(v.field, v.reason) for v in bad.field_violations] == [("items[1].price", "UNKNOWN_PRICE")]
    assert "gold_monthly" in bad.field_violations[0].description
    # The same problems as the HTTP answer's.
    _, reply = await stack.post("/v1/checkout/sessions", checkout_body({"price": "pro_monthly"},
                                                                       {"price": "gold_monthly"}))
    assert [(f"items[{p['item_index']}].price", p["code"].upper(), p["message"]) for p in reply["error"]["problems"]
            ] == [(v.field, v.reason, v.description) for v in bad.field_violations]
