"""Checkout use cases: sessions from catalog selections, portal sessions, purchase status."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlencode, urlsplit

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from checkout_service.errors import (
    Aborted,
    AlreadyExists,
    CheckoutError,
    CheckoutInProgress,
    FailedPrecondition,
    GroupConflict,
    InvalidRequest,
    InvalidSelection,
    NotFound,
    RateLimited,
    Unavailable,
)
from checkout_service.stripe import normalize as norm
from checkout_service.stripe.gateway import Obj, Provider, ProviderError
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc

T = TypeVar("T")
log = structlog.get_logger("checkout")
# The deadline of one entitlement service call, the channel's own retries included
# (checkout_service/entitlement_client.py).
ENTITLEMENT_TIMEOUT_S = 5.0
# How the entitlement service's status codes reach our callers (docs/contract.md#error-contract).
# Down, slow, at its capacity or lost a race to a concurrent write: the caller may make the same
# call again later (every call is idempotent), so it is told to retry. A code not listed (INTERNAL,
# UNKNOWN, UNIMPLEMENTED, DATA_LOSS, CANCELLED) is raised as it is: an internal error.
FROM_ENTITLEMENT: dict[grpc.StatusCode, Callable[[str], CheckoutError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: lambda _: RateLimited("the entitlement service is at its capacity; "
                                                              "retry shortly"),
    grpc.StatusCode.ABORTED: lambda _: Aborted("the entitlement service lost a race to a concurrent change; "
                                               "retry shortly"),
    grpc.StatusCode.UNAVAILABLE: lambda _: Unavailable("the entitlement service is unavailable; retry shortly"),
    grpc.StatusCode.DEADLINE_EXCEEDED: lambda _: Unavailable("the entitlement service is unavailable; "
                                                             "retry shortly"),
}
# The entitlement service refusing our own token: SERVICE_TOKENS differs between the services.
# An operator must fix it; the caller did nothing wrong and can only retry later.
REFUSED_US = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
FINAL = frozenset({pb.PURCHASE_STATE_FINALIZED, pb.PURCHASE_STATE_EXPIRED, pb.PURCHASE_STATE_FAILED,
                   pb.PURCHASE_STATE_CONFLICT})


@dataclass
class Deps:
    entitlement: entitlement_pb2_grpc.EntitlementServiceStub
    provider: Provider
    public_url: str
    poll_interval_ms: int


@dataclass(frozen=True)
class CreatedCheckout:
    purchase: pb.Purchase
    url: str
    reused: bool = False  # the account's open purchase of the same selection, answered again


def require(value: str, field: str) -> str:
    if not value or not value.strip():
        raise InvalidRequest(f"{field} is required")
    return value.strip()


def require_url(value: str, field: str) -> str:
    parts = urlsplit(require(value, field))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest(f"{field} must be an http(s) URL")
    return value.strip()


def selection(items: Sequence[tuple[str, int]]) -> list[pb.PurchaseItem]:
    if not items:
        raise InvalidRequest("items must list at least one price")
    for i, (price, quantity) in enumerate(items):
        require(price, f"items[{i}].price")
        if quantity < 1:
            raise InvalidRequest(f"items[{i}].quantity must be at least 1")
    return [pb.PurchaseItem(price=price.strip(), quantity=quantity) for price, quantity in items]


def purchase_id_for(account_id: str, idempotency_key: str | None) -> str:
    """A retried request with the same key gets the same purchase; without a key, a new one."""
    if not idempotency_key:
        return f"pur_{uuid.uuid4().hex[:24]}"
    return "pur_" + hashlib.sha256(f"{account_id}\0{idempotency_key}".encode()).hexdigest()[:24]


def entitlement_call(method: Callable[..., Awaitable[T]], request: object) -> Awaitable[T]:
    """Starts the call now: its request leaves before the event loop turns again. Awaiting what
    this returns gives the answer, the entitlement service's refusals raised as this service's."""
    return _answer(method(request, timeout=ENTITLEMENT_TIMEOUT_S), method)


async def _answer(call: Awaitable[T], method: object) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code in REFUSED_US:
            rpc = _rpc_name(method)
            log.error("entitlement_call_refused", rpc=rpc, code=code.name, error=exc.details())
            raise Unavailable(f"the checkout service is not allowed to call {rpc}; retry later") from exc
        if code == grpc.StatusCode.FAILED_PRECONDITION and (opened := _open_purchase_id(exc)):
            raise CheckoutInProgress(exc.details() or "a checkout is in progress", opened) from exc
        if (translate := FROM_ENTITLEMENT.get(code)) is not None:
            raise translate(exc.details() or code.name.lower().replace("_", " ")) from exc
        raise


def _open_purchase_id(exc: grpc.aio.AioRpcError) -> str:
    """The open purchase a `checkout_in_progress` refusal names; empty for any other refusal."""
    trailing = dict((str(k), v) for k, v in (exc.trailing_metadata() or ()))
    if trailing.get("error-code") != CheckoutInProgress.code:
        return ""
    return str(trailing.get("open-purchase-id", ""))


def _rpc_name(method: object) -> str:
    """`package.Service/Method` of a stub's method."""
    name = getattr(method, "_method", b"")
    name = name.decode() if isinstance(name, bytes) else str(name)
    return name.lstrip("/") or "the entitlement service"


async def provider_call(call: Awaitable[T]) -> T:
    try:
        return await call
    except ProviderError as exc:
        if exc.status == 429:
            raise RateLimited(f"the provider is rate-limiting requests: {exc}",
                              exc.retry_after_s or 1) from exc
        if exc.status is not None and 400 <= exc.status < 500:
            raise InvalidRequest(f"the provider refused the request: {exc}") from exc
        raise Unavailable(f"the provider is unavailable: {exc}") from exc


async def customer_for(deps: Deps, account_id: str, known: str) -> str:
    """The account's provider customer, created (once, whatever the concurrency) and linked."""
    if known:
        return known
    customer = await provider_call(deps.provider.create_customer(account_id))
    await entitlement_call(deps.entitlement.LinkProviderCustomer,
                           pb.LinkProviderCustomerRequest(account_id=account_id, provider_customer_id=customer))
    return customer


def _problems(validation: pb.ValidatePurchaseResponse) -> list[dict[str, object]]:
    return [{"code": pb.PurchaseProblemCode.Name(p.code).removeprefix("PURCHASE_PROBLEM_CODE_").lower(),
             "item_index": p.item_index, "price": p.price, "message": p.message} for p in validation.problems]


async def _validated(deps: Deps, account_id: str, wanted: list[pb.PurchaseItem],
                     cancel_url: str) -> pb.ValidatePurchaseResponse:
    """ValidatePurchase; a selection it refuses raises (a held group: with a portal session)."""
    validation: pb.ValidatePurchaseResponse = await entitlement_call(
        deps.entitlement.ValidatePurchase, pb.ValidatePurchaseRequest(account_id=account_id, items=wanted))
    if not validation.ok:
        problems = _problems(validation)
        if any(p["code"] == "group_conflict" for p in problems) and validation.provider_customer_id:
            portal = await provider_call(deps.provider.create_portal_session(validation.provider_customer_id,
                                                                             cancel_url))
            raise GroupConflict("; ".join(str(p["message"]) for p in problems if p["code"] == "group_conflict"),
                                str(portal), list(validation.conflicting_subscription_ids))
        raise InvalidSelection("; ".join(str(p["message"]) for p in problems), problems)
    return validation


async def open_session_status(deps: Deps, opened: pb.Purchase) -> str:
    """The provider's status of the open purchase's checkout session: `open`, `expired` or
    `complete`. One the provider already ended (the event saying so not applied yet: delayed, or
    lost) is applied now, as the reconciler applies an overdue purchase's session, so that what
    the account holds catches up and a checkout is never answered with a url nobody can pay."""
    session = await provider_call(deps.provider.retrieve_checkout_session(opened.checkout_session_id))
    status = str(session.get("status") or "")
    if status != "open":
        request = pb.ApplyReconciliationRequest(checkout_sessions=[norm.checkout_session(session, {})],
                                                reconciliation_id=f"checkout_{opened.purchase_id}")
        request.read_at.GetCurrentTime()
        await entitlement_call(deps.entitlement.ApplyReconciliation, request)
    return status


async def create_checkout(deps: Deps, account_id: str, items: Sequence[tuple[str, int]], success_url: str,
                          cancel_url: str, idempotency_key: str | None) -> CreatedCheckout:
    account_id = require(account_id, "account_id")
    wanted = selection(items)
    success_url, cancel_url = require_url(success_url, "success_url"), require_url(cancel_url, "cancel_url")
    purchase_id = purchase_id_for(account_id, idempotency_key)
    validation = await _validated(deps, account_id, wanted, cancel_url)
    if validation.HasField("open_purchase") and validation.open_purchase.purchase_id != purchase_id:
        opened = validation.open_purchase
        status = await open_session_status(deps, opened)
        if status == "complete":  # paid: its subscription is on its way, so it holds the group
            raise CheckoutInProgress(
                f"account {account_id} has purchase {opened.purchase_id} paid in group {opened.subscription_group}, "
                "its subscription not applied yet; try again once it is", opened.purchase_id)
        if status == "open":
            return open_purchase_answer(account_id, opened, validation.open_purchase_same_selection)
        validation = await _validated(deps, account_id, wanted, cancel_url)  # without the purchase that expired
        if validation.HasField("open_purchase") and validation.open_purchase.purchase_id != purchase_id:
            return open_purchase_answer(account_id, validation.open_purchase,
                                        validation.open_purchase_same_selection)
    customer = await customer_for(deps, account_id, validation.provider_customer_id)
    session = await provider_call(deps.provider.create_checkout_session(
        session_params(deps, validation, account_id, customer, purchase_id, cancel_url),
        f"checkout-{purchase_id}"))
    try:
        registered: pb.RegisterPurchaseResponse = await entitlement_call(
            deps.entitlement.RegisterPurchase, pb.RegisterPurchaseRequest(
                purchase_id=purchase_id, account_id=account_id, checkout_session_id=session["id"], items=wanted,
                subscription_group=validation.subscription_group, mode=validation.mode, success_url=success_url,
                cancel_url=cancel_url, expires_at=_timestamp(session.get("expires_at")),
                provider_customer_id=customer, checkout_url=str(session["url"])))
    except CheckoutInProgress:
        await expire_unused(deps, str(session["id"]))
        raise
    if registered.open_purchase_reused:
        await expire_unused(deps, str(session["id"]))
        return open_purchase_answer(account_id, registered.purchase, True)
    return CreatedCheckout(registered.purchase, str(session["url"]))


def open_purchase_answer(account_id: str, opened: pb.Purchase, same_selection: bool) -> CreatedCheckout:
    """The account's open purchase in the group answers a checkout of the same selection (its
    purchase id and url); another selection, or one whose url was not kept, is refused naming it."""
    if same_selection and opened.checkout_url:
        return CreatedCheckout(opened, opened.checkout_url, reused=True)
    raise CheckoutInProgress(
        f"account {account_id} has purchase {opened.purchase_id} open in group {opened.subscription_group} for "
        "another selection; pay or cancel it, or wait for its checkout session to expire", opened.purchase_id)


async def expire_unused(deps: Deps, session_id: str) -> None:
    """Expires a checkout session made for a purchase that was not registered (a concurrent
    checkout of the group won), so nobody can pay it. Its url was never handed out; if the
    provider cannot be reached now, the session expires by itself."""
    try:
        await deps.provider.expire_checkout_session(session_id)
    except ProviderError as exc:
        log.warning("unused_checkout_session_not_expired", checkout_session_id=session_id, error=str(exc))


def session_params(deps: Deps, validation: pb.ValidatePurchaseResponse, account_id: str, customer: str,
                   purchase_id: str, cancel_url: str) -> dict[str, object]:
    """The provider checkout session: the account and purchase travel in `client_reference_id` and
    metadata (and on the subscription), and the browser comes back to our return page."""
    metadata = {"account_id": account_id, "purchase_id": purchase_id}
    return_query = urlencode({"purchase_id": purchase_id})
    params: dict[str, object] = {
        "mode": "subscription" if validation.mode == pb.PURCHASE_MODE_SUBSCRIPTION else "payment",
        "customer": customer,
        "client_reference_id": purchase_id,
        "metadata": metadata,
        "line_items": [{"price": item.price_id, "quantity": item.quantity} for item in validation.items],
        "success_url": f"{deps.public_url}/checkout/return?{return_query}&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": cancel_url,
    }
    if validation.mode == pb.PURCHASE_MODE_SUBSCRIPTION:
        params["subscription_data"] = {"metadata": metadata}
    return params


def _timestamp(seconds: object) -> Timestamp:
    stamp = Timestamp()
    if isinstance(seconds, int):
        stamp.FromDatetime(datetime.fromtimestamp(seconds, UTC))
    return stamp


async def create_portal(deps: Deps, account_id: str, return_url: str) -> str:
    account_id, return_url = require(account_id, "account_id"), require_url(return_url, "return_url")
    account: pb.GetAccountResponse = await entitlement_call(
        deps.entitlement.GetAccount, pb.GetAccountRequest(account_id=account_id))
    if not account.provider_customer_id:
        raise NotFound(f"account {account_id} has no provider customer yet: it has bought nothing")
    return str(await provider_call(deps.provider.create_portal_session(account.provider_customer_id, return_url)))


@dataclass(frozen=True)
class PurchaseStatus:
    purchase: pb.Purchase
    poll_after_ms: int
    plans: list[str]


async def purchase_status(deps: Deps, purchase_id: str, checkout_session_id: str | None = None) -> PurchaseStatus:
    """The purchase with polling guidance. With `checkout_session_id` (the browser's proof that it
    went through this checkout) it must match the purchase."""
    reply: pb.GetPurchaseResponse = await entitlement_call(
        deps.entitlement.GetPurchase, pb.GetPurchaseRequest(purchase_id=require(purchase_id, "purchase_id")))
    purchase = reply.purchase
    if checkout_session_id is not None and checkout_session_id != purchase.checkout_session_id:
        raise NotFound(f"no purchase {purchase_id} for that checkout session")
    plans: list[str] = []
    if purchase.state == pb.PURCHASE_STATE_FINALIZED:
        ent: pb.GetEntitlementsResponse = await entitlement_call(
            deps.entitlement.GetEntitlements, pb.GetEntitlementsRequest(account_id=purchase.account_id))
        plans = [p.billing_plan_code for p in ent.entitlements.plans if not p.conflict]
    final = purchase.state in FINAL
    return PurchaseStatus(purchase, 0 if final else deps.poll_interval_ms, plans)


NO_SUCH_PURCHASE = "no such purchase for that checkout session"


async def public_purchase_status(deps: Deps, purchase_id: str, checkout_session_id: str) -> PurchaseStatus:
    """For the return page, whose only proof is the provider's session id: an unknown purchase, a
    wrong session and an id that is not one answer alike, so the answer tells nothing about which
    purchases exist."""
    try:
        return await purchase_status(deps, purchase_id, checkout_session_id)
    except (NotFound, InvalidRequest):
        raise NotFound(NO_SUCH_PURCHASE) from None


async def mark_returned(deps: Deps, purchase_id: str, checkout_session_id: str) -> pb.Purchase:
    reply: pb.MarkPurchaseReturnedResponse = await entitlement_call(
        deps.entitlement.MarkPurchaseReturned,
        pb.MarkPurchaseReturnedRequest(purchase_id=require(purchase_id, "purchase_id"),
                                       checkout_session_id=require(checkout_session_id, "session_id")))
    return reply.purchase


async def list_catalog(deps: Deps, account_id: str | None) -> pb.ListCatalogResponse:
    reply: pb.ListCatalogResponse = await entitlement_call(
        deps.entitlement.ListCatalog, pb.ListCatalogRequest(account_id=account_id or ""))
    return reply


# Previews of a change assume the provider's default billing of a change: prorations kept for the
# next invoice (the entitlement service's preview assumes the same).
PREVIEW_PRORATION = "create_prorations"


@dataclass(frozen=True)
class PreviewChange:
    """A change to one subscription: exactly one of new `items`, `cancel_at_period_end`, `cancel_now`."""

    subscription_id: str
    items: Sequence[tuple[str, int]] | None = None
    cancel_at_period_end: bool = False
    cancel_now: bool = False


def _preview_request(account_id: str, items: Sequence[tuple[str, int]] | None, change: PreviewChange | None,
                     as_of: Timestamp | None) -> pb.PreviewPurchaseRequest:
    request = pb.PreviewPurchaseRequest(account_id=require(account_id, "account_id"), as_of=as_of)
    if (items is None) == (change is None):
        raise InvalidRequest("exactly one of items and change is required")
    if items is not None:
        request.items.items.extend(selection(items))
        return request
    assert change is not None
    request.change.subscription_id = require(change.subscription_id, "change.subscription_id")
    if change.items is not None:
        request.change.items.items.extend(selection(change.items))
    elif change.cancel_at_period_end:
        request.change.cancel_at_period_end = True
    elif change.cancel_now:
        request.change.cancel_now = True
    else:
        raise InvalidRequest("change needs one of items, cancel_at_period_end: true and cancel_now: true")
    return request


def _open_items(entitlements: pb.Entitlements, subscription_id: str) -> list[pb.SubscriptionItem]:
    sub = next((s for s in entitlements.subscriptions if s.subscription_id == subscription_id), None)
    return [i for i in sub.items if not i.HasField("effective_until")] if sub else []


async def _invoice_params(deps: Deps, request: pb.PreviewPurchaseRequest, reply: pb.PreviewPurchaseResponse
                          ) -> Obj | None:
    """What to ask the provider's invoice preview, or None when it cannot preview this: a change
    names its subscription and the items the entitlement service's preview gave it (a provider item
    kept by its id, one no longer listed deleted); a new purchase of recurring items needs the
    account's provider customer."""
    details: dict[str, object] = {"proration_behavior": PREVIEW_PRORATION}
    if request.HasField("as_of"):
        details["proration_date"] = request.as_of.seconds
    if request.HasField("change"):
        change = request.change
        params: Obj = {"subscription": change.subscription_id, "subscription_details": details}
        if change.cancel_now:
            details["cancel_now"] = True
        elif change.cancel_at_period_end:
            details["cancel_at_period_end"] = True
        else:
            held = await provider_call(deps.provider.retrieve_subscription(change.subscription_id))
            held_ids = [str(i["id"]) for i in held.get("items", {}).get("data", [])]
            wanted = _open_items(reply.entitlements, change.subscription_id)
            lines: list[dict[str, object]] = [
                {**({"id": i.item_id} if i.item_id in held_ids else {}), "price": i.price_id, "quantity": i.quantity}
                for i in wanted]
            kept = {i.item_id for i in wanted}
            lines += [{"id": item_id, "deleted": True} for item_id in held_ids if item_id not in kept]
            details["items"] = lines
        return params
    wanted = _open_items(reply.entitlements, "sub_preview")
    if not wanted:
        return None
    account: pb.GetAccountResponse = await entitlement_call(
        deps.entitlement.GetAccount, pb.GetAccountRequest(account_id=request.account_id))
    if not account.provider_customer_id:
        return None
    details.pop("proration_date", None)
    details["items"] = [{"price": i.price_id, "quantity": i.quantity} for i in wanted]
    return {"customer": account.provider_customer_id, "subscription_details": details}


def invoice_preview(invoice: Obj) -> pb.InvoicePreview:
    """The provider's invoice as the preview's InvoicePreview (current API shape, or the older one
    with the price and proration on the line)."""
    lines = []
    for line in invoice.get("lines", {}).get("data", []):
        parent = (line.get("parent") or {}).get("subscription_item_details") or {}
        price = ((line.get("pricing") or {}).get("price_details") or {}).get("price") or line.get("price") or ""
        period = line.get("period") or {}
        lines.append(pb.InvoicePreviewLine(
            description=str(line.get("description") or ""), amount=int(line.get("amount") or 0),
            proration=bool(parent.get("proration", line.get("proration", False))),
            period_start=_unix(period.get("start")), period_end=_unix(period.get("end")),
            price_id=str(price["id"] if isinstance(price, dict) else price), quantity=int(line.get("quantity") or 0)))
    return pb.InvoicePreview(currency=str(invoice.get("currency") or ""),
                             amount_due=int(invoice.get("amount_due") or 0), subtotal=int(invoice.get("subtotal") or 0),
                             total=int(invoice.get("total") or 0), lines=lines)


def _unix(value: object) -> Timestamp | None:
    if not isinstance(value, int):
        return None
    stamp = Timestamp()
    stamp.FromSeconds(value)
    return stamp


async def preview_purchase(deps: Deps, account_id: str, items: Sequence[tuple[str, int]] | None,
                           change: PreviewChange | None, as_of: Timestamp | None) -> pb.PreviewPurchaseResponse:
    """The entitlement service's preview, with the provider's invoice preview when it can make one
    (a change, or a new subscription for an account with a provider customer). The provider having
    no invoice to show (`invoice_upcoming_none`) leaves `invoice` unset."""
    request = _preview_request(account_id, items, change, as_of)
    reply: pb.PreviewPurchaseResponse = await entitlement_call(deps.entitlement.PreviewPurchase, request)
    params = await _invoice_params(deps, request, reply) if not reply.problems else None
    invoice = await provider_call(_provider_invoice(deps, params)) if params is not None else None
    if invoice is not None:
        reply.invoice.CopyFrom(invoice_preview(invoice))
    return reply


async def _provider_invoice(deps: Deps, params: Obj) -> Obj | None:
    try:
        return await deps.provider.preview_invoice(params)
    except ProviderError as exc:
        if exc.code == "invoice_upcoming_none":
            return None
        raise
