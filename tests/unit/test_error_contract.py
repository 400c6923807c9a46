"""One error contract (docs/contract.md#error-contract): every checkout error has one HTTP status and
one gRPC code, the code tables of both transports follow the documented table, and what the
entitlement service and the provider answer reaches callers as that table says."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import stripe
import structlog
import structlog.testing
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from google.rpc import error_details_pb2, status_pb2

from checkout_service import errors
from checkout_service.errors import CheckoutError, InvalidSelection
from checkout_service.grpc.errors import ERRORS, selection_status
from checkout_service.http.errors import STATUS, json_errors
from checkout_service.service import entitlement_call, provider_call
from checkout_service.stripe.gateway import ProviderError, StripeGateway

CONTRACT = Path(__file__).parents[2] / "docs" / "contract.md"


def table_after(heading: str, first_column: str) -> Iterator[list[str]]:
    """The rows of the first table under `heading` whose header starts with `first_column`."""
    section = CONTRACT.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            return
        yield [cell.strip() for cell in line.strip("|").split("|")]


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


DOCUMENTED = {names(row[0])[0]: (int(row[1]), names(row[2]), grpc.StatusCode[names(row[3])[0]])
              for row in table_after("Error contract", "error") if names(row[0])}
FROM_ENTITLEMENT = [(grpc.StatusCode[code], names(row[1])[0])
                    for row in table_after("Error contract", "entitlement service answers") for code in names(row[0])]


def error_classes() -> set[type[CheckoutError]]:
    found, todo = set(), [CheckoutError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    # RetryLater is only a base: each error a caller sees is one of its subclasses.
    return {kind for kind in found if kind.__module__ == errors.__name__ and kind is not errors.RetryLater}


def http_status(exc: CheckoutError) -> int | None:
    return next((status for kind, status in STATUS if isinstance(exc, kind)), None)


def sample(kind: type[CheckoutError]) -> CheckoutError:
    if kind is InvalidSelection:
        return InvalidSelection("no", [])
    if kind is errors.GroupConflict:
        return errors.GroupConflict("no", "https://portal.test/", [])
    if kind is errors.BadWebhook:
        return errors.BadWebhook("bad_signature", "no")
    if kind is errors.CheckoutInProgress:
        return errors.CheckoutInProgress("no", "pur_open")
    return kind("no")


def test_every_checkout_error_is_in_the_documented_table() -> None:
    assert {kind.__name__ for kind in error_classes()} == set(DOCUMENTED)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_both_transports_answer_each_error_as_the_documented_table_says(name: str) -> None:
    exc = sample(getattr(errors, name))
    status, codes, grpc_code = DOCUMENTED[name]
    assert (http_status(exc), ERRORS.status_for(exc)) == (status, grpc_code)
    assert exc.code in codes


def test_the_documented_table_uses_one_retry_status_per_transport() -> None:
    # 429 and 503 answers carry Retry-After: exactly the errors that say when to retry.
    retried = {name for name, (status, _, _) in DOCUMENTED.items() if status in (429, 503)}
    assert retried == {kind.__name__ for kind in error_classes() if issubclass(kind, errors.RetryLater)}


class Refusing:
    """A stub method that answers with a status code."""

    _method = b"/selfserve.entitlement.v1.EntitlementService/LinkProviderCustomer"

    def __init__(self, code: grpc.StatusCode, details: str = "what the entitlement service said") -> None:
        self.code, self.details = code, details

    async def __call__(self, request: object, **options: object) -> object:
        raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), grpc.aio.Metadata(), self.details)


async def passed_on(code: grpc.StatusCode) -> BaseException:
    with pytest.raises(BaseException) as raised:
        await entitlement_call(Refusing(code), object())
    return raised.value


@pytest.mark.parametrize(("code", "name"), FROM_ENTITLEMENT, ids=[c.name for c, _ in FROM_ENTITLEMENT])
async def test_every_entitlement_status_code_reaches_callers_as_documented(code: grpc.StatusCode, name: str) -> None:
    exc = await passed_on(code)
    assert type(exc).__name__ == name
    status, _, grpc_code = DOCUMENTED[name]
    assert isinstance(exc, CheckoutError) and (http_status(exc), ERRORS.status_for(exc)) == (status, grpc_code)


async def test_a_checkout_in_progress_refusal_reaches_callers_naming_the_open_purchase() -> None:
    class InProgress(Refusing):
        async def __call__(self, request: object, **options: object) -> object:
            trailing = grpc.aio.Metadata(("error-code", "checkout_in_progress"), ("open-purchase-id", "pur_open"))
            raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), trailing, self.details)

    with pytest.raises(errors.CheckoutInProgress) as raised:
        await entitlement_call(InProgress(grpc.StatusCode.FAILED_PRECONDITION), object())
    assert raised.value.open_purchase_id == "pur_open"
    assert raised.value.grpc_trailing_metadata() == (("error-code", "checkout_in_progress"),
                                                     ("open-purchase-id", "pur_open"))


def test_every_entitlement_status_code_is_documented_or_an_internal_error() -> None:
    internal = {grpc.StatusCode.OK, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED,
                grpc.StatusCode.DATA_LOSS, grpc.StatusCode.CANCELLED}
    assert {code for code, _ in FROM_ENTITLEMENT} == set(grpc.StatusCode) - internal


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED])
async def test_an_entitlement_failure_of_its_own_stays_internal(code: grpc.StatusCode) -> None:
    exc = await passed_on(code)
    assert isinstance(exc, grpc.aio.AioRpcError) and ERRORS.status_for(exc) is None


async def test_a_customer_linked_to_another_account_is_a_conflict_not_an_internal_error() -> None:
    exc = await passed_on(grpc.StatusCode.FAILED_PRECONDITION)
    assert isinstance(exc, errors.FailedPrecondition) and exc.message == "what the entitlement service said"


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED])
async def test_the_entitlement_service_refusing_our_token_is_logged_and_answered_unavailable(
    code: grpc.StatusCode
) -> None:
    with structlog.testing.capture_logs() as logged:
        exc = await passed_on(code)
    assert isinstance(exc, errors.Unavailable)
    assert exc.message == ("the checkout service is not allowed to call "
                           "selfserve.entitlement.v1.EntitlementService/LinkProviderCustomer; retry later")
    assert [(line["event"], line["log_level"]) for line in logged] == [("entitlement_call_refused", "error")]


async def provider_answering(error: ProviderError) -> BaseException:
    async def failing() -> object:
        raise error

    with pytest.raises(BaseException) as raised:
        await provider_call(failing())
    return raised.value


async def test_a_provider_rate_limit_is_resource_exhausted_with_its_retry_after() -> None:
    exc = await provider_answering(ProviderError("Too many requests", 429, "rate_limit", retry_after_s=7))
    assert isinstance(exc, errors.RateLimited) and exc.retry_after_s == 7
    assert (http_status(exc), ERRORS.status_for(exc)) == (429, grpc.StatusCode.RESOURCE_EXHAUSTED)
    without = await provider_answering(ProviderError("Too many requests", 429))
    assert isinstance(without, errors.RateLimited) and without.retry_after_s == 1


async def test_a_provider_refusal_other_than_a_rate_limit_is_still_the_callers_mistake() -> None:
    assert isinstance(await provider_answering(ProviderError("No such price", 400)), errors.InvalidRequest)
    assert isinstance(await provider_answering(ProviderError("boom", 502)), errors.Unavailable)


async def test_the_gateway_keeps_the_providers_status_and_retry_after() -> None:
    gateway = StripeGateway("sk_test_x", None, timeout_s=1, max_retries=0, deadline_s=1)

    async def limited(*args: Any, **kwargs: Any) -> object:
        raise stripe.RateLimitError("Too many requests", http_status=429, headers={"Retry-After": "3"})

    try:
        with pytest.raises(ProviderError) as raised:
            await gateway._call(limited)
    finally:
        await gateway.close()
    assert (raised.value.status, raised.value.retry_after_s) == (429, 3)


async def answered(exc: Exception) -> web.Response:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    response = await json_errors(make_mocked_request("POST", "/v1/checkout/sessions"), handler)
    assert isinstance(response, web.Response)
    return response


@pytest.mark.parametrize(("exc", "status", "retry_after"), [
    (errors.RateLimited("slow down", retry_after_s=7), 429, "7"),
    (errors.Unavailable("down"), 503, "1"),
    (errors.Aborted("lost a race"), 503, "1"),
    (errors.FailedPrecondition("linked elsewhere"), 409, None),
    (errors.InvalidRequest("bad"), 422, None),
])
async def test_http_answers_carry_retry_after_exactly_when_retrying_helps(
    exc: CheckoutError, status: int, retry_after: str | None
) -> None:
    response = await answered(exc)
    assert (response.status, response.headers.get("Retry-After")) == (status, retry_after)


def test_a_selection_refusal_carries_its_problems_as_standard_grpc_error_details() -> None:
    refused = InvalidSelection("gold_monthly is not a price; pro_monthly and credit_pack_500 mix modes", [
        {"code": "unknown_price", "item_index": 0, "price": "gold_monthly", "message": "gold_monthly is not a price"},
        {"code": "mixed_modes", "item_index": -1, "price": "", "message": "recurring and one-time"}])
    status = selection_status(refused)
    assert (status.code, status.message) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], refused.message)
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert (info.reason, info.domain) == ("INVALID_SELECTION", "selfserve.checkout.v1")
    assert [(v.field, v.reason, v.description) for v in bad.field_violations] == [
        ("items[0].price", "UNKNOWN_PRICE", "gold_monthly is not a price"),
        ("items", "MIXED_MODES", "recurring and one-time")]
    assert status_pb2.Status.FromString(status.SerializeToString()) == status
