"""Provider events into provider-neutral snapshots for the entitlement service.

Reads both the current API shape (billing periods on subscription items, invoice lines priced in
`pricing.price_details`) and the older one endpoints may be pinned to (periods and `plan` on the
subscription, `price` and `subscription` on invoice lines)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from selfserve.entitlement.v1 import entitlement_pb2 as pb

Json = Mapping[str, Any]

SUBSCRIPTION_TYPES = frozenset({
    "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
    "customer.subscription.paused", "customer.subscription.resumed",
    "customer.subscription.pending_update_applied", "customer.subscription.pending_update_expired",
    "customer.subscription.trial_will_end",
})
SESSION_TYPES = frozenset({"checkout.session.completed", "checkout.session.expired",
                           "checkout.session.async_payment_succeeded", "checkout.session.async_payment_failed"})
INVOICE_TYPES = frozenset({"invoice.paid", "invoice.payment_failed", "invoice.payment_succeeded"})
PRODUCT_TYPES = frozenset({"product.created", "product.updated", "product.deleted"})
PRICE_TYPES = frozenset({"price.created", "price.updated", "price.deleted"})

STATUSES = {
    "incomplete": pb.SUBSCRIPTION_STATUS_INCOMPLETE, "incomplete_expired": pb.SUBSCRIPTION_STATUS_INCOMPLETE_EXPIRED,
    "trialing": pb.SUBSCRIPTION_STATUS_TRIALING, "active": pb.SUBSCRIPTION_STATUS_ACTIVE,
    "past_due": pb.SUBSCRIPTION_STATUS_PAST_DUE, "canceled": pb.SUBSCRIPTION_STATUS_CANCELED,
    "unpaid": pb.SUBSCRIPTION_STATUS_UNPAID, "paused": pb.SUBSCRIPTION_STATUS_PAUSED,
}


class MalformedEvent(ValueError):
    """The body is JSON but not a provider event we can read; the message says what is wrong."""


# What a protobuf Timestamp can hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TIMESTAMP_SECONDS = range(-62_135_596_800, 253_402_300_800)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(at: datetime) -> Timestamp:
    """A time with a zone as a Timestamp, to the microsecond: what `Timestamp.FromDatetime` gives,
    for a fraction of that method's cost (it is Python; this is two subtractions in C)."""
    delta = at - EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def ts(seconds: object) -> Timestamp | None:
    """Unix seconds (as the provider sends times) as a Timestamp; None when absent."""
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        return None
    if seconds not in TIMESTAMP_SECONDS:
        raise MalformedEvent(f"timestamp {seconds} is out of range")
    return Timestamp(seconds=seconds)


def ref(value: object) -> str:
    """An expandable field: an id string or an expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return str(value.get("id") or "")
    return ""


def metadata(obj: Json) -> dict[str, str]:
    found = obj.get("metadata")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) else {}


def envelope(event: object) -> tuple[str, str, int, Json]:
    """The event's id, type, created and object; MalformedEvent when any is missing."""
    if not isinstance(event, Mapping):
        raise MalformedEvent("the body is not a JSON object")
    event_id, kind, created = event.get("id"), event.get("type"), event.get("created")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(event_id, str) or not event_id:
        raise MalformedEvent("the event has no id")
    if not isinstance(kind, str) or not kind:
        raise MalformedEvent("the event has no type")
    if not isinstance(created, int) or isinstance(created, bool):
        raise MalformedEvent("the event has no integer created time")
    if not isinstance(obj, Mapping):
        raise MalformedEvent("the event has no data.object")
    return event_id, kind, created, obj


def product_ids(kind: str, obj: Json) -> set[str]:
    """Products whose metadata the snapshot needs and the payload does not carry."""
    prices: list[Any] = []
    if kind in SUBSCRIPTION_TYPES:
        prices = [i.get("price") or i.get("plan") for i in _items(obj)]
    elif kind in SESSION_TYPES:
        prices = [li.get("price") for li in _list(obj.get("line_items"))]
    return {p["product"] for p in prices if isinstance(p, Mapping) and isinstance(p.get("product"), str)}


def product(obj: Json, updated: int | None = None) -> pb.ProductSnapshot:
    return pb.ProductSnapshot(
        product_id=ref(obj), name=str(obj.get("name") or ""), active=bool(obj.get("active", True)),
        metadata=metadata(obj), provider_updated_at=ts(updated if updated is not None else obj.get("updated")),
        deleted=bool(obj.get("deleted", False)),
    )


def price(obj: Json, products: Mapping[str, Json], updated: int | None = None) -> pb.PriceSnapshot:
    recurring = _map(obj.get("recurring"))
    interval = recurring.get("interval") or (obj.get("interval") if obj.get("object") == "plan" else None)
    product_ref = obj.get("product")
    product_obj = product_ref if isinstance(product_ref, Mapping) else products.get(ref(product_ref))
    return pb.PriceSnapshot(
        price_id=ref(obj), product_id=ref(product_ref), lookup_key=str(obj.get("lookup_key") or ""),
        active=bool(obj.get("active", True)), unit_amount=int(obj.get("unit_amount") or obj.get("amount") or 0),
        currency=str(obj.get("currency") or ""), interval=str(interval or ""),
        interval_count=int((recurring or obj).get("interval_count") or 0) if interval else 0, metadata=metadata(obj),
        provider_updated_at=ts(updated if updated is not None else obj.get("created")),
        deleted=bool(obj.get("deleted", False)),
        product=product(product_obj) if product_obj else None,
    )


def _map(value: object) -> Json:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Json]:
    if isinstance(value, Mapping):
        value = value.get("data")
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _items(obj: Json) -> list[Json]:
    return _list(obj.get("items"))


def subscription(obj: Json, products: Mapping[str, Json]) -> pb.SubscriptionSnapshot:
    status = obj.get("status")
    if status not in STATUSES:
        raise MalformedEvent(f"subscription {ref(obj)} has unknown status {status!r}")
    items = []
    for item in _items(obj):
        item_price = item.get("price") or item.get("plan")
        if not isinstance(item_price, Mapping):
            raise MalformedEvent(f"subscription item {ref(item)} has no price")
        items.append(pb.SubscriptionItemSnapshot(
            item_id=ref(item), price=price(item_price, products), quantity=int(item.get("quantity") or 0),
            # Current API: periods per item; older API versions: on the subscription.
            current_period_start=ts(item.get("current_period_start", obj.get("current_period_start"))),
            current_period_end=ts(item.get("current_period_end", obj.get("current_period_end"))),
            created=ts(item.get("created")),
        ))
    return pb.SubscriptionSnapshot(
        subscription_id=ref(obj), provider_customer_id=ref(obj.get("customer")), status=STATUSES[status],
        created=ts(obj.get("created")), start_date=ts(obj.get("start_date")), trial_start=ts(obj.get("trial_start")),
        trial_end=ts(obj.get("trial_end")), cancel_at=ts(obj.get("cancel_at")),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")), canceled_at=ts(obj.get("canceled_at")),
        ended_at=ts(obj.get("ended_at")), items=items, metadata=metadata(obj),
    )


def checkout_session(obj: Json, products: Mapping[str, Json]) -> pb.CheckoutSessionSnapshot:
    mode = {"subscription": pb.PURCHASE_MODE_SUBSCRIPTION, "payment": pb.PURCHASE_MODE_PAYMENT}.get(
        str(obj.get("mode")), pb.PURCHASE_MODE_UNSPECIFIED)
    return pb.CheckoutSessionSnapshot(
        checkout_session_id=ref(obj), purchase_id=str(obj.get("client_reference_id") or ""),
        provider_customer_id=ref(obj.get("customer")), mode=mode, status=str(obj.get("status") or ""),
        payment_status=str(obj.get("payment_status") or ""), subscription_id=ref(obj.get("subscription")),
        invoice_id=ref(obj.get("invoice")), metadata=metadata(obj), created=ts(obj.get("created")),
        expires_at=ts(obj.get("expires_at")),
        line_items=[pb.CheckoutLineItem(price=price(li["price"], products), quantity=int(li.get("quantity") or 0))
                    for li in _list(obj.get("line_items")) if isinstance(li.get("price"), Mapping)],
    )


def _line_price(line: Json) -> str:
    details = _map(_map(line.get("pricing")).get("price_details"))
    if details.get("price"):
        return ref(details["price"])
    return ref(line.get("price")) or ref(line.get("plan"))


def invoice_subscription(obj: Json) -> str:
    details = _map(_map(obj.get("parent")).get("subscription_details"))
    if details.get("subscription"):
        return ref(details["subscription"])
    return ref(obj.get("subscription"))


def _proration(line: Json) -> bool:
    """Current API versions say it under the line's parent (a subscription item's or an invoice
    item's details); older ones on the line itself."""
    parent = _map(line.get("parent"))
    details = _map(parent.get("subscription_item_details")) or _map(parent.get("invoice_item_details"))
    return bool(details.get("proration") if details else line.get("proration"))


def invoice(obj: Json) -> pb.InvoiceSnapshot:
    lines = []
    for line in _list(obj.get("lines")):
        period = _map(line.get("period"))
        if _line_price(line):
            lines.append(pb.InvoiceLine(price_id=_line_price(line), quantity=int(line.get("quantity") or 0),
                                        period_start=ts(period.get("start")), period_end=ts(period.get("end")),
                                        proration=_proration(line), amount=int(line.get("amount") or 0)))
    transitions = _map(obj.get("status_transitions"))
    return pb.InvoiceSnapshot(
        invoice_id=ref(obj), subscription_id=invoice_subscription(obj), provider_customer_id=ref(obj.get("customer")),
        status=str(obj.get("status") or ""), paid=obj.get("status") == "paid" or bool(obj.get("paid")),
        billing_reason=str(obj.get("billing_reason") or ""), lines=lines, created=ts(obj.get("created")),
        paid_at=ts(transitions.get("paid_at")),
    )


def account_of(kind: str, obj: Json) -> str:
    """The `metadata.account_id` the object carries (an invoice carries its subscription's)."""
    if kind in INVOICE_TYPES:
        details = _map(_map(obj.get("parent")).get("subscription_details")) or _map(obj.get("subscription_details"))
        return metadata(details).get("account_id", "")
    return metadata(obj).get("account_id", "")


def normalize(event: object, raw: bytes, received_at: datetime, products: Mapping[str, Json],
              current: Json | None = None, refetched: bool = False) -> pb.ProviderEvent:
    """The provider-neutral event. `current` replaces the payload's object: the object re-read
    from the provider (`refetched`), or the payload's completed with what it lacks."""
    event_id, kind, created, obj = envelope(event)
    obj = current or obj
    out = pb.ProviderEvent(
        provider_event_id=event_id, type=kind, created=ts(created), received_at=timestamp(received_at),
        api_version=str(event.get("api_version") or "") if isinstance(event, Mapping) else "",
        raw_payload=raw, account_id=account_of(kind, obj), refetched=refetched,
    )
    if kind in SUBSCRIPTION_TYPES:
        out.subscription.CopyFrom(subscription(obj, products))
    elif kind in SESSION_TYPES:
        out.checkout_session.CopyFrom(checkout_session(obj, products))
    elif kind in INVOICE_TYPES:
        out.invoice.CopyFrom(invoice(obj))
    elif kind in PRODUCT_TYPES:
        out.product.CopyFrom(product({**obj, "deleted": kind == "product.deleted" or obj.get("deleted")}, created))
    elif kind in PRICE_TYPES:
        out.price.CopyFrom(price({**obj, "deleted": kind == "price.deleted" or obj.get("deleted")}, products, created))
    return out


def check_text(value: object, where: str = "event") -> None:
    """MalformedEvent when any key or text value holds what PostgreSQL text cannot (a NUL
    character) or UTF-8 cannot (a lone surrogate, which JSON may escape)."""
    if not _plainly_storable(value):
        _check_text(value, where)


def _plainly_storable(value: object) -> bool:
    """True when every key and text value of `value` is storable, as orjson shows in one pass: it
    refuses a lone surrogate and writes a NUL as `\\u0000`. Whatever it cannot write (an integer
    past 64 bits, nesting past its limit, a type it does not know) or writes with that escape (or
    with an escaped backslash before `u0000`) is left to the walk that names where."""
    try:
        return b"\\u0000" not in orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False


def _check_text(value: object, where: str) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise MalformedEvent(f"{where} holds a NUL character")
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise MalformedEvent(f"{where} is not valid Unicode text") from exc
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, f"{where}.{key}" if isinstance(key, str) and _storable(key) else where)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _check_text(item, f"{where}[{n}]")


def _storable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def storable_text(text: str, limit: int = 255) -> str:
    """`text` when it can be stored and sent as it is; otherwise a stable stand-in: `sha256:` and
    the digest of its code points, so the same text always stands in the same way."""
    if _storable(text) and text == text.strip() and 0 < len(text) <= limit:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def unreadable(event: Json, raw: bytes, received_at: datetime, reason: str) -> pb.ProviderEvent:
    """A signed event the normalizer could not read, carried with only its raw payload and why, so
    the entitlement service keeps it (as rejected `unreadable`) and it can be read again later.
    Its id and type stand in as `storable_text`; a provider time out of range stands at the nearest
    end of the range, so that every delivery of the event carries the same time (the entitlement
    service finds an event's row by its id and time)."""
    event_id, kind, created, _ = envelope(event)
    at = Timestamp(seconds=min(max(created, TIMESTAMP_SECONDS.start), TIMESTAMP_SECONDS.stop - 1))
    text_reason = reason if _storable(reason) else reason.encode("utf-8", "backslashreplace").decode().replace(
        "\x00", "\\x00")
    return pb.ProviderEvent(provider_event_id=storable_text(event_id), type=storable_text(kind), created=at,
                            received_at=timestamp(received_at), raw_payload=raw,
                            unreadable_reason=text_reason[:1000] or "unreadable")
