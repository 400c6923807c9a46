"""The request pipeline, outermost first: one log line per request, Stripe-shaped errors (never a
traceback, and 500 only for a simulator bug), the latency tests ask for, API-key authentication,
`Idempotency-Key` replay, and time keeping (what is due happens before the request; its events go
to delivery after)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from provider_sim.dispatch import dispatch_events, dumps
from provider_sim.errors import StripeError, unrecognized_url
from provider_sim.events import Ctx
from provider_sim.forms import decode_body, decode_form
from provider_sim.sessions import catch_up
from provider_sim.sim import API_KEY, REPLAYED, REQUEST_ID, sim_of
from provider_sim.store import Replay, new_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger("provider_sim")
NO_KEY = ("You did not provide an API key. You need to provide your API key in the Authorization header, using "
          "Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication "
          "for details, or we can help at https://support.stripe.com/.")


def error_response(error: StripeError, request_id: str) -> web.Response:
    headers = {"Request-Id": request_id}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Stripe"'
    return web.json_response(error.body(request_id), status=error.status, headers=headers, dumps=dumps)


@web.middleware
async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = new_id("req_", 14)
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
            status = response.status
            response.headers["Request-Id"] = request_id
            return response
        except web.HTTPException as exc:  # redirects from the hosted pages
            status = exc.status
            raise
        finally:
            log.info("http", method=request.method, path=request.path, status=status,
                     duration_ms=round((time.perf_counter() - started) * 1000, 3),
                     replayed=request.get(REPLAYED, False), **request.match_info)


@web.middleware
async def stripe_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StripeError as exc:
        return error_response(exc, request[REQUEST_ID])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        mapped = (unrecognized_url(request.method, request.path) if exc.status in (404, 405)
                  else StripeError(exc.status, exc.reason))
        return error_response(mapped, request[REQUEST_ID])
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        bug = StripeError(500, "An unexpected error occurred in the provider simulator.", kind="api_error")
        return error_response(bug, request[REQUEST_ID])


def api_key_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode().partition(":")[0] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


@web.middleware
async def latency(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before anything else happens to it, so a request its caller gave up on and sent again meets
    its own idempotent answer if the first one completes after all, as at Stripe."""
    if request.path.startswith("/v1/"):
        delay_s = sim_of(request).latency.next_delay_s()
        if delay_s:
            await asyncio.sleep(delay_s)
    return await handler(request)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    key = api_key_of(request)
    if key is None:
        raise StripeError(401, NO_KEY)
    if not sim_of(request).options.accepts(key):
        raise StripeError(401, f"Invalid API Key provided: {key[:8]}{'*' * 4}{key[-4:]}")
    request[API_KEY] = key
    return await handler(request)


async def _fingerprint(request: web.Request) -> str:
    raw = await request.read()
    try:
        params = decode_body(raw, request.content_type)
        return dumps({"path": request.path, "query": decode_form(request.query_string), "body": params})
    except StripeError:
        return f"{request.path}?{request.query_string}\n{raw.decode('utf-8', 'replace')}"


@web.middleware
async def idempotent(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The first 2xx answer to a POST with an `Idempotency-Key` is replayed, byte for byte, for every
    later request with that key and the same parameters; other parameters are an idempotency_error."""
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key or API_KEY not in request:
        return await handler(request)
    replays = sim_of(request).state.replays
    slot = (request[API_KEY], key)
    fingerprint = await _fingerprint(request)
    replay = replays.get(slot)
    if replay is not None:
        if replay.fingerprint != fingerprint:
            raise StripeError(400, "Keys for idempotent requests can only be used with the same parameters they were "
                              f"first used with. Try using a key other than '{key}' if you meant to execute a "
                              "different request.", kind="idempotency_error")
        request[REPLAYED] = True
        return web.Response(body=replay.body, status=replay.status, content_type="application/json",
                            headers={"Idempotent-Replayed": "true", "Original-Request": replay.request_id})
    response = await handler(request)
    if 200 <= response.status < 300 and isinstance(response, web.Response) and isinstance(response.body, bytes):
        replays[slot] = Replay(fingerprint, response.status, response.body, request[REQUEST_ID])
    return response


@web.middleware
async def timekeeping(request: web.Request, handler: Handler) -> web.StreamResponse:
    sim = sim_of(request)
    try:
        catch_up(Ctx(sim.state, sim.clock.now()))
        return await handler(request)
    finally:
        dispatch_events(sim)


MIDDLEWARES = [request_log, stripe_errors, latency, authenticate, idempotent, timekeeping]
