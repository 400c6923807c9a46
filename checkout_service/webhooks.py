"""Provider webhooks: verify the signature on the raw body, read the event, complete what the
payload lacks, forward it, and acknowledge only once the entitlement service recorded it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from checkout_service.errors import BadWebhook, Unavailable
from checkout_service.event_batches import EventBatcher
from checkout_service.service import Deps, entitlement_call
from checkout_service.stripe import normalize as norm
from checkout_service.stripe.gateway import Obj, ProviderError
from checkout_service.stripe.signature import SignatureError, verify
from selfserve.entitlement.v1 import entitlement_pb2 as pb

log = structlog.get_logger("webhooks")


class BoundedCache:
    """A small LRU of provider objects by id (products, customers), so a burst of events does not
    re-read the same object; entries are dropped when an event says the object changed."""

    def __init__(self, load: Callable[[str], Awaitable[Obj]], max_entries: int = 1024) -> None:
        self._load, self._max = load, max_entries
        self._entries: OrderedDict[str, Obj] = OrderedDict()

    async def get(self, key: str) -> Obj:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = await self._load(key)
        self._entries[key] = value
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return value

    def invalidate(self, key: str) -> None:
        self._entries.pop(key, None)


@dataclass
class WebhookDeps:
    deps: Deps
    secrets: tuple[str, ...]
    tolerance_s: float
    refetch: bool
    products: BoundedCache
    customers: BoundedCache
    now: Callable[[], float] = time.time
    batcher: EventBatcher = field(init=False)

    def __post_init__(self) -> None:
        self.batcher = EventBatcher(self._apply_events)

    async def _apply_events(self, events: Sequence[pb.ProviderEvent]) -> Sequence[pb.EventResult]:
        reply = await entitlement_call(self.deps.entitlement.ApplyProviderEvents,
                                       pb.ApplyProviderEventsRequest(events=events))
        results: Sequence[pb.EventResult] = reply.results
        return results


@dataclass(frozen=True)
class Accepted:
    event_id: str
    type: str
    outcome: str
    reason: str
    account_id: str


def verified_event(raw: bytes, signature: str | None, secrets: tuple[str, ...], tolerance_s: float,
                   now: float) -> Any:
    """The event a webhook body carries, once its signature is verified on the raw bytes."""
    try:
        verify(raw, signature, secrets, tolerance_s, now)
    except SignatureError as exc:
        raise BadWebhook("bad_signature", str(exc)) from exc
    try:
        event = orjson.loads(raw)
        norm.envelope(event)
    except (ValueError, norm.MalformedEvent) as exc:
        raise BadWebhook("malformed_body", f"not a provider event: {exc}") from exc
    return event


async def handle(w: WebhookDeps, raw: bytes, signature: str | None) -> Accepted:
    return await forward(w, verified_event(raw, signature, w.secrets, w.tolerance_s, w.now()), raw)


async def forward(w: WebhookDeps, event: Any, raw: bytes) -> Accepted:
    """Completes, normalizes and forwards one provider event (from a webhook or the provider's
    event list); returns once the entitlement service has recorded it."""
    event_id, kind, _, obj = norm.envelope(event)
    if kind in norm.PRODUCT_TYPES:
        w.products.invalidate(norm.ref(obj))
    if kind == "customer.updated":
        w.customers.invalidate(norm.ref(obj))
    source = await _current(w, kind, obj)
    products = {pid: p for pid in norm.product_ids(kind, source) if (p := await _product(w, pid)) is not None}
    try:
        refetched = w.refetch and kind in (norm.SUBSCRIPTION_TYPES | norm.INVOICE_TYPES | norm.SESSION_TYPES)
        normalized = norm.normalize(event, raw, datetime.now(UTC), products, source, refetched)
    except norm.MalformedEvent as exc:
        raise BadWebhook("malformed_body", str(exc)) from exc
    await _customer_account(w, normalized)
    result = await w.batcher.apply(normalized)
    outcome = pb.EventOutcome.Name(result.outcome).removeprefix("EVENT_OUTCOME_").lower()
    return Accepted(event_id, kind, outcome, result.reason, result.account_id)


async def _current(w: WebhookDeps, kind: str, obj: norm.Json) -> norm.Json:
    """In refetch mode the provider's present state of the object; otherwise the payload's, with
    a payment checkout's line items (never in the payload) read from the provider."""
    object_id = norm.ref(obj)
    provider = w.deps.provider
    try:
        if w.refetch and kind in norm.SUBSCRIPTION_TYPES:
            return await provider.retrieve_subscription(object_id)
        if w.refetch and kind in norm.INVOICE_TYPES:
            return await provider.retrieve_invoice(object_id)
        if kind in norm.SESSION_TYPES and (w.refetch or (obj.get("mode") == "payment" and "line_items" not in obj)):
            fetched = await provider.retrieve_checkout_session(object_id)
            return fetched if w.refetch else {**obj, "line_items": fetched.get("line_items")}
    except ProviderError as exc:
        if exc.status is None or exc.status >= 500 or exc.status == 429:
            raise Unavailable(f"the provider is unavailable: {exc}") from exc
        log.warning("refetch_failed", object_id=object_id, error=str(exc))
    return obj


async def _product(w: WebhookDeps, product_id: str) -> Obj | None:
    try:
        return await w.products.get(product_id)
    except ProviderError as exc:
        if exc.status is None or exc.status >= 500 or exc.status == 429:
            raise Unavailable(f"the provider is unavailable: {exc}") from exc
        return None  # a deleted product: the entitlement service decides what the event is worth


async def _customer_account(w: WebhookDeps, event: pb.ProviderEvent) -> None:
    """The third place an account is found: the provider customer's own metadata."""
    kind = event.WhichOneof("object")
    customer = getattr(event, kind).provider_customer_id if kind in ("subscription", "invoice",
                                                                      "checkout_session") else ""
    if event.account_id or not customer:
        return
    try:
        found: Any = await w.customers.get(customer)
    except ProviderError:
        return
    event.customer_account_id = str((found.get("metadata") or {}).get("account_id") or "")
