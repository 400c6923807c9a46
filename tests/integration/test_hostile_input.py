"""Hostile input, case by case: webhooks, the HTTP session endpoints, gRPC on both services, the
catalog file and SERVICE_TOKENS.

Every case states its answer. Each is checked for that answer, for never being a 5xx or INTERNAL,
for no traceback or error line logged, and for nothing half-written: a refused request changes no
table's row count, and a signed event that cannot be read is kept as exactly one `rejected` row."""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import structlog
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog_rules.file import CatalogFileError, parse_catalog
from catalog_rules.model import MAX_QUANTITY
from checkout_service.cli import catalog_apply
from checkout_service.service import NO_SUCH_PURCHASE
from checkout_service.stripe.signature import sign
from selfserve.checkout.v1 import checkout_pb2 as cpb
from selfserve.checkout.v1 import checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role, ServiceTokens
from service_runtime.config import ConfigError
from service_runtime.logs import REQUEST_ID_FORM
from tests.integration.conftest import PRODUCT, SECRET, Stack, open_stack
from tests.integration.test_checkout_service import checkout_body, subscription_payload
from tests.integration.test_unreadable_events import stored, updated
from tests.support.tokens import TOKENS, bearer
from tests.unit.test_catalog_file import CONFIG, PRO

NUL_ID = "acct_\x00nul"
LONG_ID = "a" * 256  # one past what an id may hold
MIB = 1024 * 1024
DROP = object()  # in a body helper's changes: leave the key out


# ---------------------------------------------------------------------------------------------
# What every case checks


@dataclass
class Watched:
    """The stack, with what it logs captured, and its database's row counts before the case."""

    stack: Stack
    database_url: str
    logged: list[dict[str, Any]]
    caplog: pytest.LogCaptureFixture
    counts_before: dict[str, int] = field(default_factory=dict)

    def forget_logs(self) -> None:
        """What was logged so far is dropped: one property example is judged by its own lines."""
        self.logged.clear()
        self.caplog.clear()

    async def counted(self) -> None:
        self.counts_before = await row_counts(self.database_url)

    async def assert_unchanged(self) -> None:
        assert await row_counts(self.database_url) == self.counts_before, "a refused request wrote something"

    def assert_quiet(self) -> None:
        """No traceback and no error line, from structlog or the standard library's logging."""
        assert self.logged, "no log line was captured: the capture does not see the services' logs"
        loud = [line for line in self.logged
                if "exc_info" in line or line.get("log_level") in ("error", "critical") or "Traceback" in str(line)]
        assert not loud, loud
        records = [r for r in self.caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert not records, [r.getMessage() for r in records]


@pytest.fixture
async def watched(database_url: str, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Watched]:
    with structlog.testing.capture_logs() as logged:
        async with open_stack(database_url) as stack:
            yield Watched(stack, database_url, logged, caplog)


async def row_counts(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        return {t: await conn.fetchval(f'SELECT count(*) FROM "{t}"') for t in tables}
    finally:
        await conn.close()


async def events_stored(database_url: str, event_id: str) -> list[str]:
    return [row["outcome"] for row in await stored(database_url, event_id)]


def latin1(text: str) -> str:
    """`text` as its UTF-8 bytes on the wire: aiohttp sends header values as latin-1."""
    return text.encode().decode("latin-1")


# ---------------------------------------------------------------------------------------------
# Webhooks: the Stripe-Signature header. A refused delivery records nothing.

Header = Callable[[bytes, int], str | None]


def v1(raw: bytes, at: int, secret: str = SECRET) -> str:
    return f"v1={sign(raw, secret, at)}"


def signed(raw: bytes, now: int) -> str:
    return f"t={now},{v1(raw, now)}"


EVENT = json.dumps(subscription_payload("evt_hostile")).encode()
BOGUS_V1 = ",".join(f"v1={n:064x}" for n in range(100))

SIGNATURE_HEADERS = [
    pytest.param(lambda raw, now: None, 400, id="missing"),
    pytest.param(lambda raw, now: "", 400, id="empty"),
    pytest.param(lambda raw, now: f"t={now}", 400, id="t only"),
    pytest.param(lambda raw, now: v1(raw, now), 400, id="v1 only"),
    pytest.param(lambda raw, now: f"t={'9' * 400},{v1(raw, now)}", 400, id="t of 400 digits"),
    pytest.param(lambda raw, now: latin1(f"t=\u00b2,{v1(raw, now)}"), 400, id="t a superscript digit"),
    pytest.param(lambda raw, now: latin1(f"t=\u0661\u0662,{v1(raw, now)}"), 400, id="t in Arabic-Indic digits"),
    pytest.param(lambda raw, now: f"t=-{now},{v1(raw, now)}", 400, id="t negative"),
    pytest.param(lambda raw, now: f"t={now},{BOGUS_V1}", 400, id="100 v1 entries, none valid"),
    pytest.param(lambda raw, now: f"t={now},{BOGUS_V1},{v1(raw, now)}", 200, id="100 v1 entries, the valid one last"),
    pytest.param(lambda raw, now: f"t={now},t={now},{v1(raw, now)}", 200, id="t twice, same value"),
    pytest.param(lambda raw, now: f"t={now - 1},t={now + 1},{v1(raw, now)}", 400, id="t twice, signed for neither"),
    pytest.param(lambda raw, now: f"t={now}, {v1(raw, now)}", 400, id="a space after the comma"),
    pytest.param(lambda raw, now: f"t = {now}, v1 = {sign(raw, SECRET, now)}", 400, id="spaces around ="),
    pytest.param(lambda raw, now: f"t={now},{v1(raw, now, 'whsec_wrong')}", 400, id="wrong secret"),
    pytest.param(lambda raw, now: f"t={now - 301},{v1(raw, now - 301)}", 400, id="expired, 301 s old"),
    pytest.param(lambda raw, now: f"t={now + 301},{v1(raw, now + 301)}", 400, id="future, 301 s ahead"),
    pytest.param(lambda raw, now: f"t={now},{v1(b'another body', now)}", 400, id="signed for another body"),
    pytest.param(lambda raw, now: f"t={now},v0={sign(raw, SECRET, now)}", 400, id="v0 scheme only"),
]


@pytest.mark.parametrize(("header", "status"), SIGNATURE_HEADERS)
async def test_webhook_signature_header(watched: Watched, header: Header, status: int) -> None:
    stack = watched.stack
    await watched.counted()
    value = header(EVENT, int(time.time()))
    headers = {} if value is None else {"Stripe-Signature": value}
    async with stack.http.post(stack.url("/webhooks/stripe"), data=EVENT, headers=headers) as r:
        answered, reply = r.status, await r.json()
    if status == 200:
        assert (answered, reply.get("outcome")) == (200, "applied"), reply
        assert await events_stored(watched.database_url, "evt_hostile") == ["applied"]
    else:
        assert (answered, reply["error"]["code"]) == (status, "bad_signature"), reply
        await watched.assert_unchanged()
    watched.assert_quiet()


# ---------------------------------------------------------------------------------------------
# Webhooks: signed bodies. One with a readable envelope (id, type, created, data.object) is
# recorded once with its outcome, unreadable ones as `rejected`; one without is 400 and recorded
# nowhere.


def event(event_id: str, **changes: Any) -> bytes:
    """A signed subscription update, its subscription (or, for `quantity`, its item) changed."""
    return json.dumps(updated(event_id, **changes)).encode()


def envelope(**changes: Any) -> bytes:
    """The subscription event with envelope keys replaced, or removed where the value is DROP."""
    body = subscription_payload("evt_envelope")
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not DROP}).encode()



def price_event(**recurring: Any) -> dict[str, Any]:
    price = {"id": "price_new", "object": "price", "product": "pro", "active": True, "currency": "usd",
             "unit_amount": 2000, "recurring": {"interval": "month", "interval_count": 1, **recurring}}
    return {"id": "evt_price", "object": "event", "type": "price.updated", "created": 1_767_225_600,
            "data": {"object": price}}


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def padded_to(size: int) -> bytes:
    body = subscription_payload("evt_padded")
    body["padding"] = ""
    room = size - len(json.dumps(body).encode())
    body["padding"] = "x" * room
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Recorded:
    """A 200 answer whose event is stored once under `event_id` with `outcome`."""

    event_id: str
    outcome: str


@dataclass(frozen=True)
class Refused:
    """An error answer, with nothing stored."""

    status: int
    code: str


WEBHOOK_BODIES = [
    # Not JSON, or JSON without an event's envelope: refused.
    pytest.param(b"hello", Refused(400, "malformed_body"), id="not JSON"),
    pytest.param(b"", Refused(400, "malformed_body"), id="empty"),
    pytest.param(EVENT.replace(b'"sub_w"', b'"sub_\x00w"'), Refused(400, "malformed_body"), id="a raw NUL byte"),
    pytest.param(EVENT.replace(b'"sub_w"', b'"sub_\xff\xfe"'), Refused(400, "malformed_body"), id="non-UTF-8 bytes"),
    pytest.param(deep(100_000).encode(), Refused(400, "malformed_body"), id="JSON nested 100,000 deep"),
    pytest.param(EVENT.replace(b'"metadata": {', b'"note": ' + deep(5_000).encode() + b', "metadata": {'),
                 Refused(400, "malformed_body"), id="an event with a value nested 5,000 deep"),
    pytest.param(b"[]", Refused(400, "malformed_body"), id="a top-level array"),
    pytest.param(b'"evt_1"', Refused(400, "malformed_body"), id="a top-level string"),
    pytest.param(b"42", Refused(400, "malformed_body"), id="a top-level number"),
    pytest.param(b"null", Refused(400, "malformed_body"), id="a top-level null"),
    pytest.param(envelope(id=DROP), Refused(400, "malformed_body"), id="no id"),
    pytest.param(envelope(type=DROP), Refused(400, "malformed_body"), id="no type"),
    pytest.param(envelope(data=DROP), Refused(400, "malformed_body"), id="no data"),
    pytest.param(envelope(created=DROP), Refused(400, "malformed_body"), id="no created"),
    pytest.param(envelope(id=42), Refused(400, "malformed_body"), id="id a number"),
    pytest.param(envelope(id=""), Refused(400, "malformed_body"), id="id empty"),
    pytest.param(envelope(created=1.5), Refused(400, "malformed_body"), id="created a float"),
    pytest.param(envelope(created=True), Refused(400, "malformed_body"), id="created a boolean"),
    pytest.param(envelope().replace(b'"created": 1767225600, "api', b'"created": 1e400, "api'),
                 Refused(400, "malformed_body"), id="created 1e400"),
    pytest.param(envelope(data={"object": []}), Refused(400, "malformed_body"), id="data.object an array"),
    pytest.param(padded_to(MIB + 1), Refused(413, "payload_too_large"), id="one byte over 1 MiB"),
    # Readable envelopes: recorded once, whatever the object holds.
    pytest.param(padded_to(MIB - 64), Recorded("evt_padded", "applied"), id="just under 1 MiB"),
    pytest.param(b"\xef\xbb\xbf" + event("evt_bom"), Recorded("evt_bom", "applied"), id="a UTF-8 byte order mark"),
    pytest.param(event("evt_type").replace(b"customer.subscription.updated", b"customer.subscription.frobbed"),
                 Recorded("evt_type", "ignored"), id="unknown type"),
    pytest.param(event("evt_status", status="frozen"), Recorded("evt_status", "rejected"), id="unknown status"),
    pytest.param(event("evt_null", status=None), Recorded("evt_null", "rejected"), id="status null"),
    pytest.param(event("evt_abc", quantity="abc"), Recorded("evt_abc", "rejected"), id="quantity abc"),
    pytest.param(event("evt_neg", quantity=-1), Recorded("evt_neg", "rejected"), id="quantity -1"),
    pytest.param(event("evt_e30", quantity=10**30), Recorded("evt_e30", "rejected"), id="quantity 10^30"),
    pytest.param(event("evt_inf", quantity=1).replace(b'"quantity": 1,', b'"quantity": 1e400,'),
                 Recorded("evt_inf", "rejected"), id="quantity 1e400"),
    pytest.param(envelope(created=10**30), Recorded("evt_envelope", "rejected"), id="created 10^30"),
    pytest.param(event("evt_nul", metadata={"account_id": "acct_\x00"}), Recorded("evt_nul", "rejected"),
                 id="a NUL escape in a metadata value"),
    pytest.param(event("evt_sur").replace(b'"active"', b'"\\ud800"'), Recorded("evt_sur", "rejected"),
                 id="a lone surrogate as the status"),
    pytest.param(event("evt_long_sub", id="sub_" + "x" * 10_000), Recorded("evt_long_sub", "rejected"),
                 id="a subscription id of 10,000 characters"),
    pytest.param(event("evt_nul_sub", id="sub_\x00"), Recorded("evt_nul_sub", "rejected"),
                 id="a NUL escape in the subscription id"),
    pytest.param(json.dumps(price_event(interval="fortnight")).encode(), Recorded("evt_price", "rejected"),
                 id="a price billed every fortnight"),
]


@pytest.mark.parametrize(("raw", "expected"), WEBHOOK_BODIES)
async def test_webhook_signed_body(watched: Watched, raw: bytes, expected: Recorded | Refused) -> None:
    stack = watched.stack
    await watched.counted()
    async with stack.http.post(stack.url("/webhooks/stripe"), data=raw,
                               headers={"Stripe-Signature": signed(raw, int(time.time()))}) as r:
        answered, reply = r.status, await r.json()
    if isinstance(expected, Recorded):
        assert (answered, reply.get("id"), reply.get("outcome")) == (200, expected.event_id, expected.outcome), reply
        assert await events_stored(watched.database_url, expected.event_id) == [expected.outcome]
    else:
        assert (answered, reply["error"]["code"]) == (expected.status, expected.code), reply
        await watched.assert_unchanged()
    watched.assert_quiet()


# Ids the checkout service cannot store as they are: kept under a stand-in, answered with it.
@pytest.mark.parametrize("event_id", [
    pytest.param("evt_\x00", id="a NUL escape in the id"),
    pytest.param("evt_\ud800", id="a lone surrogate in the id"),
    pytest.param("evt_" + "x" * 10_000, id="an id of 10,004 characters"),
])
async def test_webhook_event_id_that_cannot_be_stored(watched: Watched, event_id: str) -> None:
    stack = watched.stack
    raw = json.dumps(updated(event_id)).encode()
    async with stack.http.post(stack.url("/webhooks/stripe"), data=raw,
                               headers={"Stripe-Signature": signed(raw, int(time.time()))}) as r:
        answered, reply = r.status, await r.json()
    assert (answered, reply["outcome"]) == (200, "rejected"), reply
    assert reply["id"].startswith("sha256:")
    assert await events_stored(watched.database_url, reply["id"]) == ["rejected"]
    watched.assert_quiet()


async def test_webhook_gzip_bomb_is_refused_by_size(watched: Watched) -> None:
    stack = watched.stack
    await watched.counted()
    bomb = gzip.compress(b"0" * (20 * MIB))
    headers = {"Stripe-Signature": signed(bomb, int(time.time())), "Content-Encoding": "gzip"}
    async with stack.http.post(stack.url("/webhooks/stripe"), data=bomb, headers=headers) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (413, "payload_too_large")
    await watched.assert_unchanged()
    watched.assert_quiet()


# ---------------------------------------------------------------------------------------------
# The HTTP session endpoints and the public purchase status.


def session(**fields: Any) -> bytes:
    """A checkout session request with `fields` replaced, or removed where the value is DROP."""
    body = {**checkout_body(), **fields}
    return json.dumps({k: v for k, v in body.items() if v is not DROP}).encode()


PORTAL = json.dumps({"account_id": "acct_none", "return_url": "https://app.example/account"}).encode()
SUPPORT = {"Authorization": f"Bearer {TOKENS[Role.SUPPORT]}"}
SESSIONS, PORTALS = "/v1/checkout/sessions", "/v1/portal/sessions"


@dataclass(frozen=True)
class Http:
    """A request; `{purchase}` and `{session}` in the path stand for a purchase made first."""

    method: str
    path: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: PRODUCT)


def post(path: str, body: bytes, **headers: str) -> Http:
    return Http("POST", path, body, {**PRODUCT, "Content-Type": "application/json", **headers})


def get(path: str, headers: Mapping[str, str] = PRODUCT) -> Http:
    return Http("GET", path, None, headers)


def authorized(value: str | None, path: str = PORTALS) -> Http:
    return Http("POST", path, PORTAL, {} if value is None else {"Authorization": value})


def status_of(purchase: str, session: str) -> Http:
    return get(f"/v1/purchases/{purchase}?checkout_session_id={session}", {})


HTTP = [
    # Bodies that are not JSON: 400 malformed_json.
    pytest.param(post(SESSIONS, b"{"), 400, "malformed_json", id="body: truncated JSON"),
    pytest.param(post(SESSIONS, b""), 400, "malformed_json", id="body: empty"),
    pytest.param(post(SESSIONS, b'{"account_id": "\xff"}'), 400, "malformed_json", id="body: non-UTF-8 bytes"),
    pytest.param(post(SESSIONS, b'{"account_id": "a\x00"}'), 400, "malformed_json", id="body: a raw NUL byte"),
    pytest.param(post(SESSIONS, session().replace(b'"acct_1"', b'"a\\ud800"')), 400, "malformed_json",
                 id="body: a lone surrogate escape"),
    pytest.param(post(SESSIONS, session().replace(b'"quantity": 1', b'"quantity": 1e400')), 400, "malformed_json",
                 id="body: quantity 1e400"),
    pytest.param(post(SESSIONS, session().replace(b'"quantity": 1', b'"quantity": NaN')), 400, "malformed_json",
                 id="body: quantity NaN"),
    pytest.param(post(SESSIONS, deep(2_000).encode()), 400, "malformed_json", id="body: nested 2,000 deep"),
    pytest.param(post(SESSIONS, session() + b" trailing"), 400, "malformed_json", id="body: trailing garbage"),
    pytest.param(post(SESSIONS, b"account_id=acct_1", **{"Content-Type": "application/x-www-form-urlencoded"}),
                 400, "malformed_json", id="body: a form"),
    # Well-formed JSON with a missing or malformed field: 422 invalid_request.
    pytest.param(post(SESSIONS, b"[]"), 422, "invalid_request", id="body: an array"),
    pytest.param(post(SESSIONS, b'"acct_1"'), 422, "invalid_request", id="body: a string"),
    pytest.param(post(SESSIONS, session(account_id=DROP)), 422, "invalid_request", id="account_id missing"),
    pytest.param(post(SESSIONS, session(items=DROP)), 422, "invalid_request", id="items missing"),
    pytest.param(post(SESSIONS, session(success_url=DROP)), 422, "invalid_request", id="success_url missing"),
    pytest.param(post(SESSIONS, session(cancel_url=DROP)), 422, "invalid_request", id="cancel_url missing"),
    pytest.param(post(SESSIONS, session(account_id=42)), 422, "invalid_request", id="account_id a number"),
    pytest.param(post(SESSIONS, session(account_id=None)), 422, "invalid_request", id="account_id null"),
    pytest.param(post(SESSIONS, session(account_id=NUL_ID)), 422, "invalid_request", id="account_id with NUL"),
    pytest.param(post(SESSIONS, session(account_id=LONG_ID)), 422, "invalid_request", id="account_id overlong"),
    pytest.param(post(SESSIONS, session(items={"price": "pro_monthly"})), 422, "invalid_request",
                 id="items an object"),
    pytest.param(post(SESSIONS, session(items=["pro_monthly"])), 422, "invalid_request", id="an item a string"),
    pytest.param(post(SESSIONS, session(items=[{"price": 7}])), 422, "invalid_request", id="price a number"),
    pytest.param(post(SESSIONS, session(items=[{"price": "pro_\x00"}])), 422, "invalid_request",
                 id="price with NUL"),
    pytest.param(post(SESSIONS, session(items=[{"price": "pro_monthly", "quantity": "2"}])), 422,
                 "invalid_request", id="quantity a string"),
    pytest.param(post(SESSIONS, session(items=[{"price": "pro_monthly", "quantity": True}])), 422,
                 "invalid_request", id="quantity a boolean"),
    pytest.param(post(SESSIONS, session(items=[{"price": "pro_monthly", "quantity": 1.5}])), 422,
                 "invalid_request", id="quantity 1.5"),
    pytest.param(post(SESSIONS, session(items=[{"price": "pro_monthly", "quantity": -1}])), 422,
                 "invalid_request", id="quantity -1"),
    pytest.param(post(SESSIONS, session(items=[{"price": "pro_monthly", "quantity": 10**30}])), 422,
                 "invalid_request", id="quantity 10^30"),
    pytest.param(post(SESSIONS, session(items=[{"price": "credit_pack_500", "quantity": 2**62}])), 422,
                 "invalid_selection", id="quantity 2^62"),
    pytest.param(post(SESSIONS, session(success_url=["https://app.example"])), 422, "invalid_request",
                 id="success_url a list"),
    pytest.param(post(SESSIONS, session(cancel_url="javascript:alert(1)")), 422, "invalid_request",
                 id="cancel_url javascript:"),
    pytest.param(post(SESSIONS, session(items=[{"price": "gold_monthly"}])), 422, "invalid_selection",
                 id="an unknown price"),
    # Read as JSON whatever it says it is; extra fields are ignored.
    pytest.param(post(PORTALS, PORTAL, **{"Content-Type": "text/plain"}), 404, "not_found",
                 id="content type text/plain"),
    pytest.param(post(PORTALS, PORTAL[:-1] + b', "extra": {"nested": [1, 2]}}'), 404, "not_found",
                 id="an extra field"),
    pytest.param(post(SESSIONS, session(), **{"Idempotency-Key": latin1("cl\u00e9-\U0001f511")}), 201, None,
                 id="a non-ASCII Idempotency-Key"),
    pytest.param(post(SESSIONS, session(), **{"Idempotency-Key": "k" * 4_000}), 201, None,
                 id="an Idempotency-Key of 4,000 characters"),
    # Request ids outside [A-Za-z0-9._:-]{1,128}: replaced, and the request served as usual.
    pytest.param(post(PORTALS, PORTAL, **{"x-request-id": latin1("r\u00e9q")}), 404, "not_found",
                 id="x-request-id non-ASCII"),
    pytest.param(post(PORTALS, PORTAL, **{"x-request-id": "r" * 1_000}), 404, "not_found",
                 id="x-request-id of 1,000 characters"),
    pytest.param(post(PORTALS, PORTAL, **{"x-request-id": "<script>alert(1)</script>"}), 404, "not_found",
                 id="x-request-id markup"),
    # Bearer tokens.
    pytest.param(authorized(None), 401, "unauthenticated", id="token missing"),
    pytest.param(authorized(""), 401, "unauthenticated", id="authorization empty"),
    pytest.param(authorized("Bearer"), 401, "unauthenticated", id="Bearer without a token"),
    pytest.param(authorized("Bearer short"), 401, "unauthenticated", id="a short token"),
    pytest.param(authorized(f"Basic {TOKENS[Role.PRODUCT]}"), 401, "unauthenticated", id="Basic scheme"),
    pytest.param(authorized(f"Bearer {TOKENS[Role.PRODUCT]}x"), 401, "unauthenticated", id="token one char longer"),
    pytest.param(authorized(latin1(f"Bearer {TOKENS[Role.PRODUCT]}\u00e9")), 401, "unauthenticated",
                 id="token with non-ASCII"),
    pytest.param(authorized(f"bearer {TOKENS[Role.PRODUCT]}"), 404, "not_found", id="scheme in lower case"),
    pytest.param(authorized(f"Bearer {TOKENS[Role.SUPPORT]}"), 403, "permission_denied", id="support's token"),
    pytest.param(authorized(f"Bearer {TOKENS[Role.CHECKOUT]}"), 403, "permission_denied", id="checkout's token"),
    pytest.param(authorized(f"Bearer {TOKENS[Role.OPERATOR]}"), 403, "permission_denied", id="operator's token"),
    pytest.param(get("/v1/catalog", SUPPORT), 403, "permission_denied", id="catalog with support's token"),
    # Ids in paths and queries.
    pytest.param(get("/v1/purchases/pur_%00"), 422, "invalid_request", id="purchase id with NUL"),
    pytest.param(get(f"/v1/purchases/{LONG_ID}"), 422, "invalid_request", id="purchase id overlong"),
    pytest.param(get("/v1/purchases/%20"), 422, "invalid_request", id="purchase id blank"),
    pytest.param(get("/v1/catalog?account_id=acct_%00"), 422, "invalid_request", id="catalog account with NUL"),
    pytest.param(get("/checkout/return?purchase_id=pur_%00&session_id=cs_x", {}), 422, "invalid_request",
                 id="return page purchase id with NUL"),
    pytest.param(get("/checkout/return?purchase_id=pur_x", {}), 422, "invalid_request",
                 id="return page without session id"),
    # The public purchase status: whatever is wrong, one answer.
    pytest.param(status_of("{purchase}", "cs_other"), 404, "not_found", id="status: wrong session"),
    pytest.param(status_of(f"pur_{'0' * 24}", "{session}"), 404, "not_found", id="status: unknown purchase"),
    pytest.param(status_of("%20", "{session}"), 404, "not_found", id="status: blank purchase id"),
    pytest.param(status_of("pur_%00", "{session}"), 404, "not_found", id="status: purchase id with NUL"),
    pytest.param(status_of(LONG_ID, "{session}"), 404, "not_found", id="status: purchase id overlong"),
    pytest.param(status_of("pur_%ED%A0%80", "{session}"), 404, "not_found", id="status: an encoded surrogate"),
    pytest.param(status_of("{purchase}", "cs_%00"), 404, "not_found", id="status: session id with NUL"),
    pytest.param(status_of("{purchase}", ""), 404, "not_found", id="status: session id empty"),
]


@pytest.mark.parametrize(("request_", "status", "code"), HTTP)
async def test_http(watched: Watched, request_: Http, status: int, code: str | None) -> None:
    stack = watched.stack
    path = request_.path
    if "{purchase}" in path or "{session}" in path:
        _, made = await stack.post(SESSIONS, checkout_body())
        path = path.format(purchase=made["purchase_id"], session=made["checkout_session_id"])
    await watched.counted()
    async with stack.http.request(request_.method, stack.url(path), data=request_.body,
                                  headers=dict(request_.headers)) as r:
        answered, reply, request_id = r.status, await r.json(), r.headers["x-request-id"]
    assert answered == status, reply
    if code is not None:
        assert reply["error"]["code"] == code, reply
        await watched.assert_unchanged()
    if path.startswith("/v1/purchases/") and "checkout_session_id=" in path:
        assert reply == {"error": {"code": "not_found", "message": NO_SUCH_PURCHASE}}
    given = request_.headers.get("x-request-id")
    assert REQUEST_ID_FORM.fullmatch(request_id)
    if given is not None and not REQUEST_ID_FORM.fullmatch(given):
        assert request_id != given
    watched.assert_quiet()


# ---------------------------------------------------------------------------------------------
# gRPC on both services: fields and metadata.

INVALID, OK = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK
UNAUTHENTICATED, DENIED = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class Rpc:
    service: str  # "entitlement" or "checkout"
    method: str
    request: Message
    metadata: Metadata


def ent(method: str, request: Message, role: Role | None = Role.PRODUCT, *extra: tuple[str, str | bytes]) -> Rpc:
    return Rpc("entitlement", method, request, (*(bearer(role) if role else ()), *extra))


def co(method: str, request: Message, role: Role | None = Role.PRODUCT, *extra: tuple[str, str | bytes]) -> Rpc:
    return Rpc("checkout", method, request, (*(bearer(role) if role else ()), *extra))


def at(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def entitlements(account_id: str = "acct_1", **fields: Any) -> pb.GetEntitlementsRequest:
    return pb.GetEntitlementsRequest(account_id=account_id, **fields)


def new_session(account_id: str = "acct_1", price: str = "pro_monthly", quantity: int = 1,
                success_url: str = "https://app.example/done") -> cpb.CreateCheckoutSessionRequest:
    return cpb.CreateCheckoutSessionRequest(account_id=account_id, items=[pb.PurchaseItem(price=price,
                                                                                         quantity=quantity)],
                                            success_url=success_url, cancel_url="https://app.example/pricing")


def priced(product_id: str, **metadata: str) -> pb.PriceSnapshot:
    """A price the catalog does not hold, carrying its product (as the example catalog has it)."""
    return pb.PriceSnapshot(price_id=f"price_{product_id}_new", product_id=product_id,
                            product=pb.ProductSnapshot(product_id=product_id, name=product_id, active=True,
                                                       metadata=metadata))


SEATS = priced("team_seats", subscription_group="addons", billing_plan_code="team_seats",
               grants='[{"grant_program_code": "seats", "amount": 1, "scale_by_quantity": true}]')
CREDIT_PACK = priced("credit_pack_500", subscription_group="credits",
                     grants='[{"grant_program_code": "credit_pack", "amount": 500}]')


def subscription_event(event_id: str = "evt_rpc", quantity: int = 1,
                       created: Timestamp | None = None) -> pb.ApplyProviderEventsRequest:
    return pb.ApplyProviderEventsRequest(events=[pb.ProviderEvent(
        provider_event_id=event_id, type="customer.subscription.updated", created=created or at(1_767_225_600),
        account_id="acct_1", subscription=pb.SubscriptionSnapshot(
            subscription_id="sub_rpc", provider_customer_id="cus_1", status=pb.SUBSCRIPTION_STATUS_ACTIVE,
            start_date=at(1_767_225_600),
            items=[pb.SubscriptionItemSnapshot(item_id="si_1", quantity=quantity, price=SEATS)]))])


def session_event(quantity: int) -> pb.ApplyProviderEventsRequest:
    return pb.ApplyProviderEventsRequest(events=[pb.ProviderEvent(
        provider_event_id="evt_rpc", type="checkout.session.completed", created=at(1_767_225_600),
        account_id="acct_1", checkout_session=pb.CheckoutSessionSnapshot(
            checkout_session_id="cs_rpc", provider_customer_id="cus_1", mode=pb.PURCHASE_MODE_PAYMENT,
            status="complete", payment_status="paid", metadata={"account_id": "acct_1"},
            line_items=[pb.CheckoutLineItem(price=CREDIT_PACK, quantity=quantity)]))])


def purchase(quantity: int = 1, expires_at: Timestamp | None = None, purchase_id: str = "pur_rpc"
             ) -> pb.RegisterPurchaseRequest:
    return pb.RegisterPurchaseRequest(
        purchase_id=purchase_id, account_id="acct_1", checkout_session_id="cs_rpc",
        items=[pb.PurchaseItem(price="pro_monthly", quantity=quantity)], mode=pb.PURCHASE_MODE_SUBSCRIPTION,
        success_url="https://app.example/done", cancel_url="https://app.example/pricing",
        expires_at=expires_at or at(1_900_000_000))


def catalog_with(**changes: Any) -> pb.UpsertCatalogRequest:
    return pb.UpsertCatalogRequest(config=pb.CatalogConfig(groups=[pb.SubscriptionGroup(code="core")]), **changes)


C = Role.CHECKOUT
GRPC = [
    # Ids: empty, NUL, overlong, blank.
    pytest.param(ent("GetEntitlements", entitlements("")), INVALID, id="entitlement: account empty"),
    pytest.param(ent("GetEntitlements", entitlements("   ")), INVALID, id="entitlement: account blank"),
    pytest.param(ent("GetEntitlements", entitlements(NUL_ID)), INVALID, id="entitlement: account with NUL"),
    pytest.param(ent("GetEntitlements", entitlements(LONG_ID)), INVALID, id="entitlement: account overlong"),
    pytest.param(ent("GetEntitlements", entitlements(LONG_ID[:-1])), OK, id="entitlement: account of 255 characters"),
    pytest.param(ent("CheckGate", pb.CheckGateRequest(account_id="acct_1", gate="ex\x00port")), INVALID,
                 id="entitlement: gate with NUL"),
    pytest.param(ent("WatchEntitlements", pb.WatchEntitlementsRequest(account_id=NUL_ID)), INVALID,
                 id="entitlement: watch an account with NUL"),
    pytest.param(ent("ListCatalog", pb.ListCatalogRequest(account_id=NUL_ID)), INVALID,
                 id="entitlement: catalog for an account with NUL"),
    pytest.param(ent("GetPurchase", pb.GetPurchaseRequest(purchase_id="pur_\x00"), C), INVALID,
                 id="entitlement: purchase id with NUL"),
    pytest.param(ent("GetPurchase", pb.GetPurchaseRequest(purchase_id="p", checkout_session_id="c"), C), INVALID,
                 id="entitlement: purchase by two ids"),
    pytest.param(ent("GetAccount", pb.GetAccountRequest(provider_customer_id="cus_\x00"), C), INVALID,
                 id="entitlement: customer id with NUL"),
    pytest.param(ent("LinkProviderCustomer", pb.LinkProviderCustomerRequest(account_id=LONG_ID,
                                                                            provider_customer_id="cus_1"), C),
                 INVALID, id="entitlement: link an overlong account"),
    pytest.param(ent("LinkProviderCustomer", pb.LinkProviderCustomerRequest(account_id="acct_1",
                                                                            provider_customer_id="cus_\x00"), C),
                 INVALID, id="entitlement: link a customer with NUL"),
    pytest.param(ent("RegisterPurchase", purchase(purchase_id=LONG_ID), C), INVALID,
                 id="entitlement: register an overlong purchase id"),
    pytest.param(ent("TracePurchase", pb.TracePurchaseRequest(subscription_id="sub_\x00"), Role.SUPPORT), INVALID,
                 id="entitlement: trace a subscription with NUL"),
    pytest.param(ent("LeaseReconciler", pb.LeaseReconcilerRequest(holder="h\x00", ttl=Duration(seconds=60)), C),
                 INVALID, id="entitlement: lease holder with NUL"),
    pytest.param(ent("ApplyProviderEvents", subscription_event(event_id="evt_\x00"), C), INVALID,
                 id="entitlement: event id with NUL"),
    pytest.param(ent("ApplyProviderEvents", subscription_event(event_id="e" * 256), C), INVALID,
                 id="entitlement: event id overlong"),
    # Timestamps and durations out of range.
    pytest.param(ent("GetEntitlements", entitlements(as_of=at(2**40))), INVALID, id="entitlement: as_of 2^40 s"),
    pytest.param(ent("GetEntitlements", entitlements(as_of=at(-(2**40)))), INVALID,
                 id="entitlement: as_of -2^40 s"),
    pytest.param(ent("GetEntitlements", entitlements(as_of=at(0, -1))), INVALID, id="entitlement: as_of nanos -1"),
    pytest.param(ent("GetEntitlements", entitlements(as_of=at(0, 10**9))), INVALID,
                 id="entitlement: as_of nanos 10^9"),
    pytest.param(ent("GetEntitlements", entitlements(as_of=at(253_402_300_799, 999_999_999))), OK,
                 id="entitlement: as_of the last instant of 9999"),
    pytest.param(ent("GetEntitlements", entitlements(as_of=at(-62_135_596_800))), OK,
                 id="entitlement: as_of the first second of year 1"),
    pytest.param(ent("ExplainAccount", pb.ExplainAccountRequest(account_id="acct_1", as_of=at(2**40)),
                     Role.SUPPORT), INVALID, id="entitlement: explain as of 2^40 s"),
    pytest.param(ent("RegisterPurchase", purchase(expires_at=at(2**40)), C), INVALID,
                 id="entitlement: purchase expiring at 2^40 s"),
    pytest.param(ent("ApplyProviderEvents", subscription_event(created=at(2**40)), C), INVALID,
                 id="entitlement: event created at 2^40 s"),
    pytest.param(ent("ReplayEvents", pb.ReplayEventsRequest(created_from=at(0, -1)), Role.OPERATOR), INVALID,
                 id="entitlement: replay from nanos -1"),
    pytest.param(ent("ReplayEvents", pb.ReplayEventsRequest(reason="unknown_\x00"), Role.OPERATOR), INVALID,
                 id="entitlement: replay a reason with NUL"),
    pytest.param(ent("UpsertCatalog", catalog_with(effective_at=at(2**40)), Role.OPERATOR), INVALID,
                 id="entitlement: catalog effective at 2^40 s"),
    pytest.param(ent("LeaseReconciler", pb.LeaseReconcilerRequest(holder="h", ttl=Duration(seconds=10**11)), C),
                 INVALID, id="entitlement: lease for 10^11 s"),
    pytest.param(ent("LeaseReconciler", pb.LeaseReconcilerRequest(holder="h", ttl=Duration(seconds=-60)), C),
                 INVALID, id="entitlement: lease for -60 s"),
    # Quantities.
    pytest.param(ent("ValidatePurchase", pb.ValidatePurchaseRequest(
        account_id="acct_1", items=[pb.PurchaseItem(price="pro_monthly", quantity=-5)]), C), OK,
        id="entitlement: validate quantity -5 (a problem, not an error)"),
    pytest.param(ent("RegisterPurchase", purchase(quantity=-5), C), INVALID,
                 id="entitlement: register quantity -5"),
    pytest.param(ent("ValidatePurchase", pb.ValidatePurchaseRequest(
        account_id="acct_1", items=[pb.PurchaseItem(price="pro_monthly", quantity=2**62)]), C), OK,
        id="entitlement: validate quantity 2^62 (a problem, not an error)"),
    pytest.param(ent("RegisterPurchase", purchase(quantity=2**62), C), INVALID,
                 id="entitlement: register quantity 2^62"),
    pytest.param(ent("ApplyProviderEvents", subscription_event(quantity=1), C), "applied",
                 id="entitlement: event quantity 1"),
    pytest.param(ent("ApplyProviderEvents", subscription_event(quantity=MAX_QUANTITY), C), "applied",
                 id="entitlement: event quantity at the maximum"),
    pytest.param(ent("ApplyProviderEvents", subscription_event(quantity=MAX_QUANTITY + 1), C), "rejected",
                 id="entitlement: event quantity past the maximum"),
    pytest.param(ent("ApplyProviderEvents", subscription_event(quantity=-1), C), "rejected",
                 id="entitlement: event quantity -1"),
    pytest.param(ent("ApplyProviderEvents", subscription_event(quantity=2**63 - 1), C), "rejected",
                 id="entitlement: event quantity 2^63-1"),
    pytest.param(ent("ApplyProviderEvents", session_event(quantity=2**62), C), "rejected",
                 id="entitlement: a credit pack bought 2^62 times"),
    # Page tokens and sizes.
    pytest.param(ent("ListMismatches", pb.ListMismatchesRequest(page_token="\u00b2"), Role.SUPPORT), INVALID,
                 id="entitlement: page_token superscript two"),
    pytest.param(ent("ListMismatches", pb.ListMismatchesRequest(page_token="9" * 30), Role.SUPPORT), INVALID,
                 id="entitlement: page_token of 30 digits"),
    pytest.param(ent("ListMismatches", pb.ListMismatchesRequest(page_token="bWlzbWF0Y2g6NDI="), Role.SUPPORT),
                 INVALID, id="entitlement: page_token base64"),
    pytest.param(ent("ListMismatches", pb.ListMismatchesRequest(page_size=-5), Role.SUPPORT), OK,
                 id="entitlement: page_size -5"),
    pytest.param(ent("ListMismatches", pb.ListMismatchesRequest(page_size=2**31 - 1), Role.SUPPORT), OK,
                 id="entitlement: page_size 2^31-1"),
    pytest.param(ent("GetReconcileState", pb.GetReconcileStateRequest(page_size=-1), C), OK,
                 id="entitlement: reconcile page_size -1"),
    # The catalog, from a caller that may write it.
    pytest.param(ent("UpsertCatalog", pb.UpsertCatalogRequest(config=pb.CatalogConfig(
        groups=[pb.SubscriptionGroup(code="co\x00re")])), Role.OPERATOR), INVALID,
        id="entitlement: group code with NUL"),
    pytest.param(ent("UpsertCatalog", catalog_with(products=[pb.ProductSnapshot(
        product_id="prod_x", name="X", metadata={"subscription_group": "core\x00"})]), Role.OPERATOR), INVALID,
        id="entitlement: product metadata with NUL"),
    pytest.param(ent("UpsertCatalog", catalog_with(products=[pb.ProductSnapshot(product_id="prod_x", name="X\x00")]),
                     Role.OPERATOR), INVALID, id="entitlement: product name with NUL"),
    pytest.param(ent("UpsertCatalog", catalog_with(prices=[pb.PriceSnapshot(
        price_id="price_x", product_id="prod_x", interval="fortnight")]), Role.OPERATOR), INVALID,
        id="entitlement: price billed every fortnight"),
    pytest.param(ent("UpsertCatalog", catalog_with(prices=[pb.PriceSnapshot(
        price_id="price_x", product_id="prod_x", unit_amount=-1, interval="month", interval_count=2**40)]),
        Role.OPERATOR), INVALID, id="entitlement: price interval_count 2^40"),
    # Authorization metadata.
    pytest.param(ent("GetEntitlements", entitlements(), None), UNAUTHENTICATED, id="entitlement: no token"),
    pytest.param(ent("GetEntitlements", entitlements(), None, ("authorization", "Bearer")), UNAUTHENTICATED,
                 id="entitlement: Bearer without a token"),
    pytest.param(ent("GetEntitlements", entitlements(), None, ("authorization", TOKENS[Role.PRODUCT])),
                 UNAUTHENTICATED, id="entitlement: a token without its scheme"),
    pytest.param(ent("GetEntitlements", entitlements(), None, ("authorization", "Bearer short")), UNAUTHENTICATED,
                 id="entitlement: a short token"),
    pytest.param(ent("GetEntitlements", entitlements(), None, ("authorization-bin", "Bearer \u00e9".encode())),
                 UNAUTHENTICATED, id="entitlement: authorization as binary non-ASCII"),
    pytest.param(ent("UpsertCatalog", catalog_with(), Role.PRODUCT), DENIED, id="entitlement: catalog as product"),
    pytest.param(ent("ReplayEvents", pb.ReplayEventsRequest(reason="x"), Role.SUPPORT), DENIED,
                 id="entitlement: replay as support"),
    pytest.param(ent("GetEntitlements", entitlements(), Role.PRODUCT, ("x-request-id-bin", b"\xff\xfe\x00")), OK,
                 id="entitlement: binary non-ASCII request id"),
    # gRPC refuses metadata past 8 KiB in all (its soft limit) at random and past 16 KiB always:
    # the longest request id that always arrives, and one that never does.
    pytest.param(ent("GetEntitlements", entitlements(), Role.PRODUCT, ("x-request-id", "r" * 7_000)), OK,
                 id="entitlement: request id of 7,000 characters"),
    pytest.param(ent("GetEntitlements", entitlements(), Role.PRODUCT, ("x-request-id", "r" * 20_000)),
                 grpc.StatusCode.RESOURCE_EXHAUSTED, id="entitlement: request id of 20,000 characters"),
    pytest.param(ent("GetEntitlements", entitlements(), Role.PRODUCT, ("traceparent", "00-zz-zz-zz")), OK,
                 id="entitlement: a garbage traceparent"),
    pytest.param(ent("GetEntitlements", entitlements("a" * (5 * MIB))), grpc.StatusCode.RESOURCE_EXHAUSTED,
                 id="entitlement: a 5 MiB message"),
    # The checkout service.
    pytest.param(co("CreateCheckoutSession", new_session(account_id="")), INVALID, id="checkout: account empty"),
    pytest.param(co("CreateCheckoutSession", new_session(account_id=NUL_ID)), INVALID,
                 id="checkout: account with NUL"),
    pytest.param(co("CreateCheckoutSession", new_session(account_id=LONG_ID)), INVALID,
                 id="checkout: account overlong"),
    pytest.param(co("CreateCheckoutSession", new_session(price="pro_\x00")), INVALID, id="checkout: price with NUL"),
    pytest.param(co("CreateCheckoutSession", new_session(quantity=-1)), INVALID, id="checkout: quantity -1"),
    pytest.param(co("CreateCheckoutSession", new_session(quantity=0)), INVALID, id="checkout: quantity 0"),
    pytest.param(co("CreateCheckoutSession", new_session(success_url="ftp://x")), INVALID,
                 id="checkout: success_url ftp"),
    pytest.param(co("GetPurchase", cpb.GetPurchaseRequest(purchase_id="")), INVALID, id="checkout: purchase empty"),
    pytest.param(co("GetPurchase", cpb.GetPurchaseRequest(purchase_id="pur_\x00")), INVALID,
                 id="checkout: purchase with NUL"),
    pytest.param(co("GetPurchase", cpb.GetPurchaseRequest(purchase_id="pur_none")), grpc.StatusCode.NOT_FOUND,
                 id="checkout: purchase unknown"),
    pytest.param(co("ListCatalog", cpb.ListCatalogRequest(account_id=NUL_ID)), INVALID,
                 id="checkout: catalog for an account with NUL"),
    pytest.param(co("CreatePortalSession", cpb.CreatePortalSessionRequest(
        account_id=LONG_ID, return_url="https://app.example")), INVALID, id="checkout: portal for an overlong account"),
    pytest.param(co("ReplayUnreadableEvents", cpb.ReplayUnreadableEventsRequest(provider_event_ids=[" "]),
                    Role.OPERATOR), INVALID, id="checkout: replay a blank id"),
    pytest.param(co("ReplayUnreadableEvents", cpb.ReplayUnreadableEventsRequest(provider_event_ids=["evt_\x00"]),
                    Role.OPERATOR), INVALID, id="checkout: replay an id with NUL"),
    pytest.param(co("ReplayUnreadableEvents", cpb.ReplayUnreadableEventsRequest(limit=-1), Role.OPERATOR), OK,
                 id="checkout: replay limit -1"),
    pytest.param(co("Reconcile", cpb.ReconcileRequest(account_id=NUL_ID), Role.OPERATOR), INVALID,
                 id="checkout: reconcile an account with NUL"),
    pytest.param(co("Reconcile", cpb.ReconcileRequest(), Role.PRODUCT), DENIED, id="checkout: reconcile as product"),
    pytest.param(co("GetPurchase", cpb.GetPurchaseRequest(purchase_id="p"), None), UNAUTHENTICATED,
                 id="checkout: no token"),
    pytest.param(co("GetPurchase", cpb.GetPurchaseRequest(purchase_id="p"), Role.SUPPORT), DENIED,
                 id="checkout: support's token"),
    pytest.param(co("GetPurchase", cpb.GetPurchaseRequest(purchase_id="a" * (5 * MIB))),
                 grpc.StatusCode.RESOURCE_EXHAUSTED, id="checkout: a 5 MiB message"),
]


async def answer(stack: Stack, rpc: Rpc) -> tuple[grpc.StatusCode, str]:
    """The status code and message of the call (of a stream, of its first answer)."""
    entitlement = rpc.service == "entitlement"
    port = stack.entitlement.running.port if entitlement else stack.checkout.port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = (entitlement_pb2_grpc.EntitlementServiceStub if entitlement
                     else checkout_pb2_grpc.CheckoutServiceStub)(channel)
        call = getattr(stub, rpc.method)(rpc.request, metadata=rpc.metadata, timeout=10)
        try:
            if isinstance(call, grpc.aio.UnaryStreamCall):
                await call.read()
                call.cancel()
                return OK, ""
            await call
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return OK, ""


@pytest.mark.parametrize(("rpc", "expected"), GRPC)
async def test_grpc(watched: Watched, rpc: Rpc, expected: grpc.StatusCode | str) -> None:
    """`expected` is a status code, or for ApplyProviderEvents the outcome its one event is stored with."""
    await watched.counted()
    answered, details = await answer(watched.stack, rpc)
    assert answered == (OK if isinstance(expected, str) else expected), details
    if isinstance(expected, str):
        event_id = rpc.request.events[0].provider_event_id  # type: ignore[attr-defined]
        assert await events_stored(watched.database_url, event_id) == [expected]
    elif expected is not OK:
        await watched.assert_unchanged()
    watched.assert_quiet()


UNDECODABLE = [
    pytest.param("entitlement", "selfserve.entitlement.v1.EntitlementService/CheckGate", b"\xff\xff\xff\x07junk",
                 id="entitlement: CheckGate bytes that are no message"),
    pytest.param("entitlement", "selfserve.entitlement.v1.EntitlementService/ApplyProviderEvents", b"\x0a\x05ab",
                 id="entitlement: ApplyProviderEvents cut short"),
    pytest.param("checkout", "selfserve.checkout.v1.CheckoutService/GetPurchase", b"\x08",
                 id="checkout: GetPurchase a varint cut short"),
    pytest.param("checkout", "selfserve.checkout.v1.CheckoutService/CreateCheckoutSession", b"\x12\xff\xff",
                 id="checkout: CreateCheckoutSession a length past the end"),
]


@pytest.mark.parametrize(("service", "method", "raw"), UNDECODABLE)
async def test_grpc_request_bytes_that_do_not_decode(watched: Watched, service: str, method: str, raw: bytes) -> None:
    stack = watched.stack
    await watched.counted()
    port = stack.entitlement.running.port if service == "entitlement" else stack.checkout.port
    role = Role.CHECKOUT if method.endswith("ApplyProviderEvents") else Role.PRODUCT
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{method}", request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(raw, metadata=bearer(role), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"is not a {method.split('/')[0].rsplit('.', 1)[0]}." in (refused.value.details() or "")
    await watched.assert_unchanged()
    watched.assert_quiet()


# ---------------------------------------------------------------------------------------------
# The catalog file: parse_catalog, and `catalog apply` refusing it before anything is written.

CATALOG = CONFIG + PRO


def edited(old: str, new: str) -> str:
    assert old in CATALOG
    return CATALOG.replace(old, new, 1)


CATALOG_FILES = [
    pytest.param(CATALOG + "[[", "not valid TOML", id="invalid TOML"),
    pytest.param(edited("priority = 20", "priority = 20\npriority = 30"), "not valid TOML", id="a key twice"),
    pytest.param(edited("priority = 20", 'priority = "high"'), "priority must be an integer", id="priority a string"),
    pytest.param(edited("stackable = false", 'stackable = "no"'), "stackable must be true or false",
                 id="stackable a string"),
    pytest.param(edited('gates = ["export"]', 'gates = "export"'), "gates must be a list", id="gates a string"),
    pytest.param(edited("unit_amount = 2000", "unit_amount = 20.5"), "unit_amount must be an integer",
                 id="unit_amount a float"),
    pytest.param(edited("unit_amount = 2000", "unit_amount = nan"), "unit_amount must be an integer",
                 id="unit_amount nan"),
    pytest.param(edited("[[products]]", "products = 1\n[[other]]"), "unknown top-level key 'other'",
                 id="unknown top-level key"),
    pytest.param(edited('currency = "usd"', 'currency = "usd"\ncolour = "red"'), "unknown key 'colour'",
                 id="unknown key in a price"),
    pytest.param(edited('billing_plan_code = "pro"', 'billing_plan_code = "pro"\nnote = "x"'),
                 "metadata: unknown key 'note'", id="unknown metadata key"),
    pytest.param(CATALOG + '\n[[products]]\nid = "pro"\nname = "Pro again"\n', "id 'pro' is already used",
                 id="duplicate product id"),
    pytest.param(CATALOG.replace('interval = "month"\n', 'interval = "month"\n\n[[products.prices]]\n'
                                 'lookup_key = "pro_monthly"\nunit_amount = 1\ncurrency = "usd"\n'),
                 "lookup_key 'pro_monthly' is already used", id="duplicate lookup key"),
    pytest.param(edited('name = "Pro"', 'name = "Pro\\u0000"'), "name must not contain a NUL character",
                 id="NUL in a name"),
    pytest.param(edited('billing_plan_code = "pro"', 'billing_plan_code = "pro\\u0000"'), "NUL character",
                 id="NUL in a metadata value"),
    pytest.param(edited("[plans.pro]", '[plans."pro\\u0000"]'), "NUL character", id="NUL in a code"),
    pytest.param(edited("unit_amount = 2000", f"unit_amount = {10**30}"), "unit_amount must be at most",
                 id="unit_amount 10^30"),
    pytest.param(edited("priority = 20", f"priority = {2**40}"), "priority must be at most", id="priority 2^40"),
    pytest.param(edited("priority = 20", f"priority = {-(2**40)}"), "priority must be at least",
                 id="priority -2^40"),
    pytest.param(edited('interval = "month"', f'interval = "month"\ninterval_count = {2**40}'),
                 "interval_count must be at most", id="interval_count 2^40"),
    pytest.param(edited('billing_plan_code = "pro"', 'billing_plan_code = "pro"\n'
                        f'grants = \'[{{"grant_program_code": "ai_credits", "amount": {10**30}}}]\''),
                 "amount must be at most", id="grant amount 10^30"),
]


@pytest.mark.parametrize(("text", "names"), CATALOG_FILES)
def test_catalog_file(text: str, names: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CatalogFileError, match=names.replace("(", r"\(")):
        parse_catalog(text)
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert catalog_apply(str(path)) == 2
    printed = capsys.readouterr().out
    assert printed.startswith("catalog refused, nothing was written:") and names in printed


def test_the_catalog_the_cases_edit_is_valid() -> None:
    parse_catalog(CATALOG)


@pytest.mark.parametrize("raw", [pytest.param(b"\xff\xfe[groups]", id="not UTF-8"),
                                 pytest.param(b"[groups.core]\nstackable = \x00", id="a raw NUL byte")])
def test_catalog_file_unreadable(raw: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "catalog.toml"
    path.write_bytes(raw)
    assert catalog_apply(str(path)) == 2
    assert capsys.readouterr().out.startswith("catalog refused, nothing was written:")


# ---------------------------------------------------------------------------------------------
# SERVICE_TOKENS: an error names the entry by position and never shows a token.

TOKEN = "a-token-of-twenty-chars"
SERVICE_TOKENS_VALUES = [
    pytest.param(TOKEN, "entry 1 is not role:token", id="an entry without a role"),
    pytest.param(f"product:{TOKEN},{TOKEN}x", "entry 2 is not role:token", id="the second entry without a role"),
    pytest.param("product:", "entry 1 is not role:token", id="a role without a token"),
    pytest.param(f"admin:{TOKEN}", "entry 1 has an unknown role", id="an unknown role"),
    pytest.param(f"PRODUCT:{TOKEN}", "entry 1 has an unknown role", id="a role in upper case"),
    pytest.param(f":{TOKEN}", "entry 1 has an unknown role", id="an empty role"),
    pytest.param("product:short-token", "at least 16 characters", id="a short token"),
    pytest.param(f"product:{TOKEN},support:{TOKEN}", "gives the product token to support too",
                 id="one token for two roles"),
    pytest.param("", "must list at least one", id="empty"),
    pytest.param(" , ,, ", "must list at least one", id="commas and spaces only"),
]


@pytest.mark.parametrize(("raw", "says"), SERVICE_TOKENS_VALUES)
def test_service_tokens(raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as refused:
        ServiceTokens.parse(raw)
    assert TOKEN not in str(refused.value) and "short-token" not in str(refused.value)


@pytest.mark.parametrize("raw", [
    pytest.param(f"  product :  {TOKEN}  ", id="spaces around role and token"),
    pytest.param(f"product:{TOKEN},,", id="trailing commas"),
    pytest.param(f"product:{TOKEN},product:{TOKEN}", id="the same entry twice"),
])
def test_service_tokens_accepted(raw: str) -> None:
    tokens = ServiceTokens.parse(raw)
    assert tokens.role_of(TOKEN) is Role.PRODUCT and TOKEN not in repr(tokens)


# ---------------------------------------------------------------------------------------------
# Property-based fuzzers.

# What may stand in for any value: the types a field should not have, and the values that broke
# parsers before (NUL, lone surrogates, integers past 64 bits, deep and empty containers).
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.sampled_from(["", "\x00", "\ud800", "abc", "1e400", "frozen", "\u00b2", " "]),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30, MAX_QUANTITY + 1]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def paths_in(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document: each key of each object and each index of each array."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_in(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_in(item, (*path, index))
    return found


def mutated(document: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    """A copy of `document` with the value at `path` deleted, replaced by `value`, turned into a
    string, or wrapped in a list or an object."""
    copy = json.loads(json.dumps(document))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    last, current = path[-1], parent[path[-1]]
    if how == "delete":
        del parent[last]
    else:
        parent[last] = {"replace": value, "stringify": str(current), "wrap in a list": [current],
                        "wrap in an object": {"value": current}}[how]
    return copy


MUTATIONS = st.sampled_from(["delete", "replace", "replace", "stringify", "wrap in a list", "wrap in an object"])
# The codes each refusal of a session request may carry (docs/contract.md, the HTTP error table).
SESSION_ANSWERS = {201: {None}, 400: {"malformed_json"}, 404: {"not_found"},
                   409: {"group_conflict", "checkout_in_progress", "failed_precondition"},
                   422: {"invalid_request", "invalid_selection"}}
PORTAL_BODY = {"account_id": "acct_1", "return_url": "https://app.example/account"}


@st.composite
def session_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A path and a body: random bytes, a random JSON value, or a valid request mutated."""
    path, valid = draw(st.sampled_from([(SESSIONS, checkout_body()), (PORTALS, PORTAL_BODY)]))
    kind = draw(st.sampled_from(["bytes", "json", "mutated", "mutated"]))
    if kind == "bytes":
        return path, draw(st.binary(max_size=64))
    if kind == "json":
        return path, json.dumps(draw(JSON_VALUES)).encode()
    body = valid
    for _ in range(draw(st.integers(1, 3))):
        places = paths_in(body)
        if not places:
            break
        body = mutated(body, draw(st.sampled_from(places)), draw(MUTATIONS), draw(JSON_VALUES))
    return path, json.dumps(body).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=session_requests())
async def test_any_session_request_body_is_answered_as_documented(watched: Watched, request: tuple[str, bytes]
                                                                   ) -> None:
    path, body = request
    stack = watched.stack
    watched.forget_logs()
    before = await row_counts(watched.database_url)
    async with stack.http.post(stack.url(path), data=body, headers={**PRODUCT, "Content-Type": "application/json"}
                               ) as r:
        status, reply = r.status, await r.json()
    code = reply.get("error", {}).get("code") if isinstance(reply, dict) else None
    assert status in SESSION_ANSWERS and code in SESSION_ANSWERS[status], (status, reply, body)
    if status >= 400:
        assert await row_counts(watched.database_url) == before, (status, reply, body)
    watched.assert_quiet()


FIXTURES = json.loads((Path(__file__).resolve().parents[1] / "support" / "stripe_fixtures.json").read_text())[
    "resources"]


def stripe_event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_base", "object": "event", "type": kind, "created": 1_767_225_600, "api_version": "2026-08-27",
            "livemode": False, "data": {"object": obj}}


# Realistic events to start from: ours, which applies, and Stripe's example objects.
BASE_EVENTS = [
    subscription_payload("evt_base"),
    stripe_event("customer.subscription.updated", {**FIXTURES["subscription"], "metadata": {"account_id": "acct_f"}}),
    stripe_event("invoice.paid", FIXTURES["invoice"]),
    stripe_event("checkout.session.completed", {**FIXTURES["checkout.session"], "mode": "subscription"}),
    stripe_event("price.updated", FIXTURES["price"]),
    stripe_event("product.updated", FIXTURES["product"]),
    stripe_event("customer.updated", FIXTURES["customer"]),
]


def has_envelope(event: Any) -> bool:
    """What docs/contract.md calls a provider event: an id, a type, an integer created time and an
    object. Only a body without one is refused; every other signed event is recorded."""
    if not isinstance(event, dict):
        return False
    data, created = event.get("data"), event.get("created")
    return (isinstance(event.get("id"), str) and bool(event["id"]) and isinstance(event.get("type"), str)
            and bool(event["type"]) and isinstance(created, int) and not isinstance(created, bool)
            and isinstance(data, dict) and isinstance(data.get("object"), dict))


_fuzzed = itertools.count()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_mutated_signed_event_is_recorded_once_or_refused_for_its_envelope(
    watched: Watched, data: st.DataObject
) -> None:
    watched.forget_logs()
    event = {**data.draw(st.sampled_from(BASE_EVENTS)), "id": f"evt_fuzz_{next(_fuzzed)}"}
    for _ in range(data.draw(st.integers(1, 4))):
        event = mutated(event, data.draw(st.sampled_from(paths_in(event))), data.draw(MUTATIONS),
                        data.draw(JSON_VALUES))
    raw = json.dumps(event).encode()  # lone surrogates travel as \ud800 escapes, big integers as digits
    before = len(await stored_events(watched.database_url))
    async with watched.stack.http.post(watched.stack.url("/webhooks/stripe"), data=raw,
                                       headers={"Stripe-Signature": signed(raw, int(time.time()))}) as r:
        status, reply = r.status, await r.json()
    if has_envelope(event):
        assert status == 200, (reply, event)
        [row] = await stored(watched.database_url, reply["id"])
        assert bytes(row["payload"]) == raw or reply["outcome"] == "duplicate"
        added = len(await stored_events(watched.database_url)) - before
        assert added == (0 if reply["outcome"] == "duplicate" else 1), reply
    else:
        assert (status, reply["error"]["code"]) == (400, "malformed_body"), (reply, event)
        assert len(await stored_events(watched.database_url)) == before
    watched.assert_quiet()


async def stored_events(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch("SELECT provider_event_id FROM provider_events")
    finally:
        await conn.close()
