"""The checkout service's HTTP application: explicit wiring through `create_app`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from checkout_service import service, webhooks
from checkout_service.errors import InvalidRequest, PermissionDenied, Unauthenticated
from checkout_service.http import return_page
from checkout_service.http.errors import json_errors
from checkout_service.http.shedding import shedding
from checkout_service.service import Deps
from checkout_service.webhooks import WebhookDeps
from service_runtime.auth import AuthError, Role, ServiceTokens, authorize
from service_runtime.http_logging import request_log
from service_runtime.http_probes import Readiness, add_probe_routes
from service_runtime.tracing import NO_TRACING, Tracing

# Webhook bodies and session requests are small; anything larger is refused before it is read.
MAX_BODY_BYTES = 1024 * 1024
# No request has a quantity beyond what its proto field (int64) holds.
MAX_QUANTITY = 2**63 - 1
DEPS = web.AppKey("deps", Deps)
WEBHOOKS = web.AppKey("webhooks", WebhookDeps)
TOKENS = web.AppKey("tokens", ServiceTokens)


def as_json(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def purchase_json(purchase: Message) -> dict[str, Any]:
    body = as_json(purchase)
    body["state"] = str(body["state"]).removeprefix("PURCHASE_STATE_").lower()
    body["mode"] = str(body["mode"]).removeprefix("PURCHASE_MODE_").lower()
    body.pop("transitions", None)
    return body


def require_product(request: web.Request) -> None:
    try:
        authorize(request.app[TOKENS], request.headers.get("Authorization"), frozenset({Role.PRODUCT}))
    except AuthError as exc:
        raise (Unauthenticated if exc.unauthenticated else PermissionDenied)(str(exc)) from exc


async def json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object. A body that is not JSON at all is a bad request (400), told apart
    from well-formed JSON with a wrong field (422). orjson, unlike the standard library, refuses
    what no request needs and the rest of the service cannot carry: nesting past 1,024 levels (the
    standard parser recurses into a RecursionError), lone UTF-16 surrogates (text that cannot be
    encoded for gRPC), NaN and infinities."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(reason="Malformed JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def items_of(body: dict[str, Any]) -> list[tuple[str, int]]:
    items = body.get("items")
    if not isinstance(items, list):
        raise InvalidRequest("items must be a list of {price, quantity}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("price"), str):
            raise InvalidRequest(f"items[{i}].price must be a string")
        quantity = item.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise InvalidRequest(f"items[{i}].quantity must be an integer")
        if quantity > MAX_QUANTITY:
            raise InvalidRequest(f"items[{i}].quantity must be at most {MAX_QUANTITY}")
        out.append((item["price"], quantity))
    return out


def text(body: dict[str, Any], field: str) -> str:
    value = body.get(field, "")
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string")
    return value


async def create_checkout_session(request: web.Request) -> web.Response:
    require_product(request)
    body = await json_body(request)
    created = await service.create_checkout(
        request.app[DEPS], text(body, "account_id"), items_of(body), text(body, "success_url"),
        text(body, "cancel_url"), request.headers.get("Idempotency-Key"))
    p = created.purchase
    return web.json_response({
        "purchase_id": p.purchase_id, "checkout_session_id": p.checkout_session_id, "url": created.url,
        "expires_at": p.expires_at.ToJsonString(), "status": purchase_json(p)["state"],
        "open_purchase_reused": created.reused,
    }, status=201)


def _as_of(body: dict[str, Any]) -> Timestamp | None:
    value = body.get("as_of")
    if value is None:
        return None
    stamp = Timestamp()
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        stamp.FromJsonString(value)
    except ValueError:
        raise InvalidRequest("as_of must be an RFC 3339 time") from None
    return stamp


def _change(body: dict[str, Any]) -> service.PreviewChange | None:
    change = body.get("change")
    if change is None:
        return None
    if not isinstance(change, dict):
        raise InvalidRequest("change must be an object")
    flags = {}
    for flag in ("cancel_at_period_end", "cancel_now"):
        if not isinstance(change.get(flag, False), bool):
            raise InvalidRequest(f"change.{flag} must be a boolean")
        flags[flag] = bool(change.get(flag, False))
    return service.PreviewChange(text(change, "subscription_id"), items_of(change) if "items" in change else None,
                                 **flags)


async def preview_purchase(request: web.Request) -> web.Response:
    require_product(request)
    body = await json_body(request)
    preview = await service.preview_purchase(
        request.app[DEPS], text(body, "account_id"), items_of(body) if "items" in body else None, _change(body),
        _as_of(body))
    answer = as_json(preview)
    if not preview.HasField("invoice"):
        answer.pop("invoice", None)
    return web.json_response(answer)


async def create_portal_session(request: web.Request) -> web.Response:
    require_product(request)
    body = await json_body(request)
    url = await service.create_portal(request.app[DEPS], text(body, "account_id"), text(body, "return_url"))
    return web.json_response({"url": url}, status=201)


async def get_purchase(request: web.Request) -> web.Response:
    """Product backends call it with their token and get the whole purchase; the return page
    instead proves it went through the checkout with the provider's session id, and gets only
    what it shows."""
    session_id = request.query.get("checkout_session_id")
    if session_id is not None:
        public = await service.public_purchase_status(request.app[DEPS], request.match_info["purchase_id"], session_id)
        purchase = purchase_json(public.purchase)
        return web.json_response({
            "state": purchase["state"], "reason": purchase.get("reason", ""), "success_url": purchase["success_url"],
            "plans": public.plans, "poll_after_ms": public.poll_after_ms,
            "timeout_at": public.purchase.timeout_at.ToJsonString()})
    require_product(request)
    status = await service.purchase_status(request.app[DEPS], request.match_info["purchase_id"])
    return web.json_response({
        "purchase": purchase_json(status.purchase), "state": purchase_json(status.purchase)["state"],
        "poll_after_ms": status.poll_after_ms, "timeout_at": status.purchase.timeout_at.ToJsonString(),
        "plans": status.plans,
    })


async def list_catalog(request: web.Request) -> web.Response:
    require_product(request)
    catalog = await service.list_catalog(request.app[DEPS], request.query.get("account_id"))
    return web.json_response(as_json(catalog))


async def checkout_return(request: web.Request) -> web.Response:
    purchase_id, session_id = request.query.get("purchase_id", ""), request.query.get("session_id", "")
    await service.mark_returned(request.app[DEPS], purchase_id, session_id)
    status_url = f"/v1/purchases/{purchase_id}?" + urlencode({"checkout_session_id": session_id})
    return web.Response(text=return_page.render(status_url), content_type="text/html")


async def stripe_webhook(request: web.Request) -> web.Response:
    accepted = await webhooks.handle(request.app[WEBHOOKS], await request.read(),
                                     request.headers.get("Stripe-Signature"))
    # Sent once per provider event: rendered by orjson, several times faster than the standard
    # library's encoder.
    return web.json_response({"received": True, "id": accepted.event_id, "outcome": accepted.outcome},
                             dumps=_orjson_text)


def _orjson_text(value: object) -> str:
    return orjson.dumps(value).decode()


def create_app(readiness: Readiness, deps: Deps, hooks: WebhookDeps, tokens: ServiceTokens,
               max_in_flight: int, tracing: Tracing = NO_TRACING) -> web.Application:
    # A shed request is still logged (and traced), and refused before anything else is done for it.
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[request_log(tracing), shedding(max_in_flight), json_errors])
    add_probe_routes(app, readiness)
    app[DEPS], app[WEBHOOKS], app[TOKENS] = deps, hooks, tokens
    app.router.add_post("/v1/checkout/sessions", create_checkout_session)
    app.router.add_post("/v1/checkout/preview", preview_purchase)
    app.router.add_post("/v1/portal/sessions", create_portal_session)
    app.router.add_get("/v1/purchases/{purchase_id}", get_purchase)
    app.router.add_get("/v1/catalog", list_catalog)
    app.router.add_get("/checkout/return", checkout_return)
    app.router.add_post("/webhooks/stripe", stripe_webhook)
    return app
