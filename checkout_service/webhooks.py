"""Provider webhooks: verify the signature on the raw body, read the event, complete what the
payload lacks, forward it, and acknowledge only once the entitlement service recorded it."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from checkout_service.conflict_actions import PromptActions
from checkout_service.errors import BadWebhook, InvalidRequest, Unavailable
from checkout_service.event_batches import EventBatcher
from checkout_service.service import Deps, entitlement_call
from checkout_service.stripe import normalize as norm
from checkout_service.stripe.gateway import Obj, ProviderError
from checkout_service.stripe.signature import SignatureError, verify
from selfserve.entitlement.v1 import entitlement_pb2 as pb

log = structlog.get_logger("webhooks")

# The reason prefix the entitlement service records an unreadable event with.
UNREADABLE = "unreadable"


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
    conflicts: PromptActions = field(init=False)

    def __post_init__(self) -> None:
        self.batcher = EventBatcher(self._apply_events)
        self.conflicts = PromptActions(self.deps)

    def _apply_events(self, events: Sequence[pb.ProviderEvent]) -> Awaitable[Sequence[pb.EventResult]]:
        """Sends the call now, as the batcher expects; what this returns is awaited for the results."""
        return _results(entitlement_call(self.deps.entitlement.ApplyProviderEvents,
                                         pb.ApplyProviderEventsRequest(events=events)))


async def _results(reply: Awaitable[pb.ApplyProviderEventsResponse]) -> Sequence[pb.EventResult]:
    results: Sequence[pb.EventResult] = (await reply).results
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
        event = loads(raw)
        norm.envelope(event)
    except (ValueError, norm.MalformedEvent) as exc:
        raise BadWebhook("malformed_body", f"not a provider event: {exc}") from exc
    return event


# Twenty digits in a row: maybe an integer past 64 bits, which orjson reads as a float, inexactly.
# Found as twenty zeros once every digit is mapped to "0" and every other byte to ".": one pass in
# C, several times faster than a regular expression over the body.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x2E for byte in range(256))
_LONG_DIGITS = b"0" * 20


def loads(raw: bytes) -> Any:
    """The JSON body; what orjson refuses or reads inexactly and JSON allows (an integer beyond 64
    bits, a lone surrogate's escape) is read by the standard library, so the event can still be
    kept. JSON nested deeper than the standard library can follow is a ValueError."""
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except ValueError:
            pass
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


async def handle(w: WebhookDeps, raw: bytes, signature: str | None) -> Accepted:
    return await forward(w, verified_event(raw, signature, w.secrets, w.tolerance_s, w.now()), raw)


async def forward(w: WebhookDeps, event: Any, raw: bytes) -> Accepted:
    """Completes, normalizes and forwards one provider event (from a webhook or the provider's
    event list); returns once the entitlement service has recorded it. An event that cannot be
    normalized, or that the entitlement service refuses as it is, is forwarded as unreadable (its
    raw payload and why) and so recorded as rejected; only an outage is raised (Unavailable)."""
    norm.envelope(event)
    try:
        normalized = await normalized_event(w, event, raw)
    except Unavailable:
        raise
    except Exception as exc:  # whatever the payload holds: kept, and acknowledged
        normalized = _unreadable(event, raw, exc)
    try:
        result = await w.batcher.apply(normalized)
    except InvalidRequest as exc:
        if normalized.unreadable_reason:
            raise
        result = await w.batcher.apply(_unreadable(event, raw, exc))
    if result.conflict_action:
        w.conflicts.act(result.account_id)
    outcome = pb.EventOutcome.Name(result.outcome).removeprefix("EVENT_OUTCOME_").lower()
    return Accepted(result.provider_event_id, normalized.type, outcome, result.reason, result.account_id)


async def normalized_event(w: WebhookDeps, event: Any, raw: bytes) -> pb.ProviderEvent:
    """The provider-neutral event, its object completed (and re-read in refetch mode); raises
    whatever the payload makes the normalizer raise, and Unavailable when the provider is down."""
    norm.check_text(event)
    _, kind, _, obj = norm.envelope(event)
    if kind in norm.PRODUCT_TYPES:
        w.products.invalidate(norm.ref(obj))
    if kind == "customer.updated":
        w.customers.invalidate(norm.ref(obj))
    source = await _current(w, kind, obj)
    products = {pid: p for pid in norm.product_ids(kind, source) if (p := await _product(w, pid)) is not None}
    refetched = w.refetch and kind in (norm.SUBSCRIPTION_TYPES | norm.INVOICE_TYPES | norm.SESSION_TYPES)
    normalized = norm.normalize(event, raw, datetime.now(UTC), products, source, refetched)
    await _customer_account(w, normalized)
    normalized.SerializeToString()  # text the wire format cannot carry fails here, not in the batch
    return normalized


def _unreadable(event: Any, raw: bytes, exc: Exception) -> pb.ProviderEvent:
    reason = str(exc) or type(exc).__name__
    unreadable = norm.unreadable(event, raw, datetime.now(UTC), reason)
    log.warning("webhook_event_unreadable", provider_event_id=unreadable.provider_event_id, type=unreadable.type,
                reason=unreadable.unreadable_reason)
    return unreadable


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


async def replay_unreadable(w: WebhookDeps, event_ids: Sequence[str], limit: int, dry_run: bool
                            ) -> tuple[list[pb.ReplayedEvent], bool]:
    """The events recorded as unreadable (those named, or all), normalized again from their raw
    payloads; those that read now are applied (unless `dry_run`) through ReplayEvents. One that
    still does not read stays rejected, answered with the reason now."""
    if any(not i.strip() for i in event_ids):
        raise InvalidRequest("provider_event_ids must not hold a blank id")
    listed = await entitlement_call(w.deps.entitlement.ReplayUnreadableEvents, pb.ReplayUnreadableEventsRequest(
        provider_event_ids=event_ids, limit=limit))
    answers: dict[str, pb.ReplayedEvent] = {}
    readable: list[pb.ProviderEvent] = []
    for stored in listed.events:
        answer = pb.ReplayedEvent()
        answer.CopyFrom(stored)
        answer.ClearField("raw_payload")
        answers[stored.provider_event_id] = answer
        try:
            event = loads(stored.raw_payload)
            normalized = await normalized_event(w, event, stored.raw_payload)
            if normalized.provider_event_id != stored.provider_event_id:
                raise norm.MalformedEvent(f"the payload's id is not {stored.provider_event_id}")
        except Unavailable:
            raise
        except Exception as exc:
            answer.reason = f"{UNREADABLE}: {str(exc) or type(exc).__name__}"
            continue
        readable.append(normalized)
    if readable and not dry_run:
        applied = await entitlement_call(w.deps.entitlement.ReplayUnreadableEvents,
                                         pb.ReplayUnreadableEventsRequest(renormalized=readable))
        for replayed in applied.events:
            answers[replayed.provider_event_id].CopyFrom(replayed)
            answers[replayed.provider_event_id].ClearField("raw_payload")
        taken = {r.provider_event_id for r in applied.events}
        for gone in [e.provider_event_id for e in readable if e.provider_event_id not in taken]:
            del answers[gone]  # applied meanwhile: no longer unreadable
    return list(answers.values()), listed.more
