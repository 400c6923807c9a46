"""Provider-neutral snapshots of provider objects, as the checkout service normalizes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from catalog_rules.model import Price, Product
from entitlement_service.domain.model import Mode, Status

# Events the reconciler makes from the provider's present state carry this prefix on the type of
# the event they stand for ("reconciliation.subscription", "reconciliation.checkout.session.completed").
RECONCILIATION = "reconciliation."


@dataclass(frozen=True)
class ItemSnapshot:
    item_id: str
    price: Price
    quantity: int
    product: Product | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None


@dataclass(frozen=True)
class SubscriptionSnapshot:
    """A provider subscription as of provider time `at` (its event's `created`)."""

    subscription_id: str
    provider_customer_id: str
    status: Status
    at: datetime
    event_id: str
    items: tuple[ItemSnapshot, ...]
    start_date: datetime | None = None
    trial_end: datetime | None = None
    cancel_at: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Read from the provider after the event arrived (refetch mode, reconciler): the present state.
    refetched: bool = False

    @property
    def purchase_id(self) -> str | None:
        return self.metadata.get("purchase_id") or None

    @property
    def current_period_start(self) -> datetime | None:
        return min((i.current_period_start for i in self.items if i.current_period_start), default=None)

    @property
    def current_period_end(self) -> datetime | None:
        return max((i.current_period_end for i in self.items if i.current_period_end), default=None)


@dataclass(frozen=True)
class LineItem:
    price: Price
    quantity: int
    product: Product | None = None


@dataclass(frozen=True)
class CheckoutSessionSnapshot:
    checkout_session_id: str
    purchase_id: str | None
    provider_customer_id: str | None
    mode: Mode
    status: str
    payment_status: str
    subscription_id: str | None
    line_items: tuple[LineItem, ...]
    at: datetime
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def paid(self) -> bool:
        return self.status == "complete" and self.payment_status in ("paid", "no_payment_required")


@dataclass(frozen=True)
class InvoiceLine:
    price_id: str
    quantity: int
    period_start: datetime
    period_end: datetime
    # A proration: the part of a period charged (or, with a negative amount, credited) because the
    # subscription changed mid-period; its period runs from the change to the period's end.
    proration: bool = False
    amount: int | None = None  # in the currency's smallest unit


@dataclass(frozen=True)
class InvoiceSnapshot:
    invoice_id: str
    subscription_id: str | None
    provider_customer_id: str | None
    paid: bool
    billing_reason: str
    lines: tuple[InvoiceLine, ...]
    at: datetime
    paid_at: datetime | None = None


ProviderObject = SubscriptionSnapshot | CheckoutSessionSnapshot | InvoiceSnapshot | Product | Price


# The reason prefix of an event the checkout service could not normalize (kept with its raw payload).
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class ProviderEvent:
    """A provider event, normalized. `snapshot` is the normalized event in its stored form, kept so
    that a subscription's history can be re-derived and any event re-applied after a fix."""

    provider_event_id: str
    type: str
    created: datetime
    received_at: datetime
    api_version: str
    raw_payload: bytes
    snapshot: bytes
    account_id: str | None
    customer_account_id: str | None
    object: ProviderObject | None
    # Why the object could not be read, when it could not; such an event is kept as rejected.
    malformed: str | None = None

    @property
    def provider_customer_id(self) -> str | None:
        obj = self.object
        if isinstance(obj, SubscriptionSnapshot | CheckoutSessionSnapshot | InvoiceSnapshot):
            return obj.provider_customer_id
        return None

    @property
    def subscription_id(self) -> str | None:
        obj = self.object
        if isinstance(obj, SubscriptionSnapshot | InvoiceSnapshot | CheckoutSessionSnapshot):
            return obj.subscription_id
        return None

    @property
    def checkout_session_id(self) -> str | None:
        return self.object.checkout_session_id if isinstance(self.object, CheckoutSessionSnapshot) else None

    @property
    def object_id(self) -> str:
        obj = self.object
        if isinstance(obj, SubscriptionSnapshot):
            return obj.subscription_id
        if isinstance(obj, CheckoutSessionSnapshot):
            return obj.checkout_session_id
        if isinstance(obj, InvoiceSnapshot):
            return obj.invoice_id
        if isinstance(obj, Product):
            return obj.product_id
        if isinstance(obj, Price):
            return obj.price_id
        return ""
