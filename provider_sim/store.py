"""All simulator state in memory, Stripe-like ids, and the optional JSON snapshot file."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import string
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from provider_sim.errors import no_such
from provider_sim.model import (
    Charge,
    CheckoutSession,
    Customer,
    Event,
    Invoice,
    InvoicePayment,
    PaymentIntent,
    PortalSession,
    Price,
    Product,
    Refund,
    Subscription,
    WebhookEndpoint,
)

T = TypeVar("T")
ALPHABET = string.ascii_letters + string.digits
SNAPSHOT_VERSION = 1


def new_id(prefix: str, length: int = 24) -> str:
    """`prod_`, `price_`, `cus_`, `sub_`, `si_`, `in_`, `il_`, `evt_`, `we_`, `bps_`, …: Stripe's
    prefixes followed by random base62, so ids never repeat across resets or restarts."""
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(length))


def new_session_id() -> str:
    return "cs_test_a1" + "".join(secrets.choice(ALPHABET) for _ in range(58))


def new_secret() -> str:
    return new_id("whsec_", 32)


def new_invoice_prefix() -> str:
    return secrets.token_hex(4).upper()


@dataclass(frozen=True)
class Replay:
    """The first answer to an idempotent request, replayed for the same key."""

    fingerprint: str
    status: int
    body: bytes
    request_id: str


@dataclass
class State:
    products: dict[str, Product] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    checkout_sessions: dict[str, CheckoutSession] = field(default_factory=dict)
    portal_sessions: dict[str, PortalSession] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    payment_intents: dict[str, PaymentIntent] = field(default_factory=dict)
    charges: dict[str, Charge] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    invoice_payments: dict[str, InvoicePayment] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)
    webhook_endpoints: dict[str, WebhookEndpoint] = field(default_factory=dict)
    event_seq: int = 0
    # Not part of the snapshot: events not yet handed to delivery, idempotent answers.
    outbox: list[Event] = field(default_factory=list)
    replays: dict[tuple[str, str], Replay] = field(default_factory=dict)

    def take_outbox(self) -> list[Event]:
        taken, self.outbox = self.outbox, []
        return taken

    def price_by_lookup_key(self, lookup_key: str) -> Price | None:
        return next((p for p in self.prices.values() if p.lookup_key == lookup_key), None)


COLLECTIONS: dict[str, type[Any]] = {
    "products": Product, "prices": Price, "customers": Customer, "checkout_sessions": CheckoutSession,
    "portal_sessions": PortalSession, "subscriptions": Subscription, "invoices": Invoice,
    "payment_intents": PaymentIntent, "charges": Charge, "refunds": Refund, "invoice_payments": InvoicePayment,
    "events": Event, "webhook_endpoints": WebhookEndpoint,
}


def find(collection: dict[str, T], object_id: str, label: str, *, param: str | None = None) -> T:
    """The object, or Stripe's `resource_missing` (404 for a path id, 400 for a parameter)."""
    found = collection.get(object_id)
    if found is None:
        raise no_such(label, object_id, param=param)
    return found


def _revive(cls: type[T], data: dict[str, Any]) -> T:
    """A dataclass from its `asdict` form, including lists of nested dataclasses."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        args = typing.get_args(hints[f.name])
        if typing.get_origin(hints[f.name]) is list and args and isinstance(args[0], type) \
                and dataclasses.is_dataclass(args[0]):
            value = [_revive(args[0], item) for item in value]
        values[f.name] = value
    return cls(**values)


def to_snapshot(state: State, clock_offset_s: int) -> dict[str, Any]:
    body: dict[str, Any] = {"version": SNAPSHOT_VERSION, "clock_offset_s": clock_offset_s,
                            "event_seq": state.event_seq}
    for name in COLLECTIONS:
        body[name] = [dataclasses.asdict(obj) for obj in getattr(state, name).values()]
    return body


def from_snapshot(body: dict[str, Any]) -> tuple[State, int]:
    if body.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported snapshot version {body.get('version')!r}")
    state = State(event_seq=int(body.get("event_seq", 0)))
    for name, cls in COLLECTIONS.items():
        records = [_revive(cls, item) for item in body.get(name, [])]
        setattr(state, name, {record.id: record for record in records})
    return state, int(body.get("clock_offset_s", 0))


def save_snapshot(path: Path, state: State, clock_offset_s: int) -> None:
    """Written to a temporary file and renamed, so a crash never leaves half a snapshot."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(to_snapshot(state, clock_offset_s)))
    os.replace(temporary, path)


def load_snapshot(path: Path) -> tuple[State, int] | None:
    if not path.exists():
        return None
    return from_snapshot(json.loads(path.read_text()))
