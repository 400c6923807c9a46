"""The simulator's records: what it remembers about each object, independent of any API shape.

Rendering (`resources/`) turns a record into the JSON of a given API version; the records
themselves are plain data, so a snapshot is their JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass
class Product:
    id: str
    name: str
    created: int
    updated: int
    active: bool = True
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    default_price: str | None = None
    images: list[str] = field(default_factory=list)
    unit_label: str | None = None
    statement_descriptor: str | None = None
    url: str | None = None
    tax_code: str | None = None


@dataclass
class Price:
    id: str
    product: str
    currency: str
    unit_amount: int
    created: int
    interval: str | None = None  # None: a one-time price
    interval_count: int = 1
    trial_period_days: int | None = None
    active: bool = True
    lookup_key: str | None = None
    nickname: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tax_behavior: str = "unspecified"

    @property
    def recurring(self) -> bool:
        return self.interval is not None


@dataclass
class Customer:
    id: str
    created: int
    invoice_prefix: str
    email: str | None = None
    name: str | None = None
    description: str | None = None
    phone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    next_invoice_sequence: int = 1
    currency: str | None = None


@dataclass
class SessionLine:
    id: str
    price: str
    quantity: int


@dataclass
class CheckoutSession:
    id: str
    mode: str
    created: int
    expires_at: int
    url: str
    currency: str
    line_items: list[SessionLine]
    success_url: str | None = None
    cancel_url: str | None = None
    customer: str | None = None
    customer_email: str | None = None
    customer_creation: str | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    subscription_metadata: dict[str, str] = field(default_factory=dict)
    trial_period_days: int | None = None
    status: str = "open"
    payment_status: str = "unpaid"
    subscription: str | None = None
    invoice: str | None = None
    payment_intent: str | None = None
    # A subscription left incomplete by a declined payment; paying again completes it.
    pending_subscription: str | None = None
    awaiting_async_payment: bool = False


@dataclass
class PortalSession:
    id: str
    customer: str
    created: int
    url: str
    configuration: str
    return_url: str | None = None


@dataclass
class SubscriptionItem:
    id: str
    price: str
    quantity: int
    created: int
    current_period_start: int
    current_period_end: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Subscription:
    id: str
    customer: str
    created: int
    currency: str
    billing_cycle_anchor: int
    items: list[SubscriptionItem]
    status: str = "incomplete"
    metadata: dict[str, str] = field(default_factory=dict)
    latest_invoice: str | None = None
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    cancellation_reason: str | None = None
    trial_start: int | None = None
    trial_end: int | None = None
    trial_will_end_sent: bool = False
    default_payment_method: str | None = None
    # Proration lines of changes made with `create_prorations`, billed with the next invoice.
    pending_prorations: list[InvoiceLine] = field(default_factory=list)

    @property
    def period_end(self) -> int:
        return min(item.current_period_end for item in self.items)

    @property
    def live(self) -> bool:
        return self.status in ("active", "trialing", "past_due")


@dataclass
class InvoiceLine:
    id: str
    price: str
    quantity: int
    amount: int
    period_start: int
    period_end: int
    description: str
    subscription_item: str | None = None
    # The part of a period charged (or, with a negative amount, credited) for a change mid-period.
    proration: bool = False


@dataclass
class Invoice:
    id: str
    customer: str
    created: int
    currency: str
    billing_reason: str
    lines: list[InvoiceLine]
    period_start: int
    period_end: int
    subscription: str | None = None
    subscription_metadata: dict[str, str] = field(default_factory=dict)
    status: str = "draft"
    number: str | None = None
    finalized_at: int | None = None
    paid_at: int | None = None
    attempt_count: int = 0
    customer_email: str | None = None
    customer_name: str | None = None

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def amount_due(self) -> int:
        """A negative total (more credited than charged) is due as zero; the rest is the customer's
        credit, as at the provider."""
        return max(self.total, 0)


@dataclass
class PaymentIntent:
    """A payment collected from a customer: for a paid invoice or a paid one-time checkout. The
    simulator's payments always succeed at once, each with a single charge."""

    id: str
    amount: int
    currency: str
    created: int
    customer: str | None = None
    description: str | None = None
    status: str = "processing"
    latest_charge: str | None = None
    invoice: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Charge:
    id: str
    amount: int
    currency: str
    created: int
    payment_intent: str
    customer: str | None = None
    description: str | None = None
    invoice: str | None = None
    amount_refunded: int = 0
    # The charge's refunds, oldest first.
    refunds: list[str] = field(default_factory=list)

    @property
    def refunded(self) -> bool:
        return self.amount_refunded >= self.amount

    @property
    def refundable(self) -> int:
        return self.amount - self.amount_refunded


@dataclass
class Refund:
    id: str
    amount: int
    currency: str
    created: int
    charge: str
    payment_intent: str
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status: str = "succeeded"
    customer: str | None = None


@dataclass
class InvoicePayment:
    """How an invoice was paid (the `invoice_payment` object): which payment intent, how much."""

    id: str
    invoice: str
    payment_intent: str
    amount: int
    currency: str
    created: int
    paid_at: int


@dataclass
class Event:
    id: str
    seq: int
    type: str
    created: int
    # The object as it was when the event happened, in each API shape.
    objects: dict[str, Json]
    previous: dict[str, Json] | None = None
    request_id: str | None = None
    idempotency_key: str | None = None
    pending_webhooks: int = 0


@dataclass
class WebhookEndpoint:
    id: str
    url: str
    secret: str
    created: int
    enabled_events: list[str]
    api_version: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status: str = "enabled"

    def wants(self, event_type: str) -> bool:
        return self.status == "enabled" and ("*" in self.enabled_events or event_type in self.enabled_events)
