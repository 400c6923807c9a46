"""What each provider event needs and may share, decided from the event alone before any row is
read: whether it belongs to an account, which account, which events it may be applied together
with, and whether it comes too late to change the state held."""

from __future__ import annotations

from datetime import datetime

from catalog_rules.model import Price, Product, ResolvedPrice
from entitlement_service.domain.model import Outcome
from entitlement_service.domain.provider import (
    RECONCILIATION,
    CheckoutSessionSnapshot,
    InvoiceSnapshot,
    ProviderEvent,
    SubscriptionSnapshot,
)
from entitlement_service.domain.records import EventResult, SubscriptionRecord
from entitlement_service.domain.timeline import ended_at, order_key

# The reason an event that needs an account, and whose account cannot be found, is rejected with;
# such an event is applied once its customer is linked to an account.
UNKNOWN_ACCOUNT = "unknown_account"
# The types of the events that need an account (SQL LIKE patterns): an account's history is
# made of them, and only they wait for their customer to be linked.
ACCOUNT_EVENT_TYPES = ("customer.subscription.%", "invoice.paid", f"{RECONCILIATION}subscription")
# The outcomes of the events an account's history keeps: a stale snapshot still fills in the past.
HISTORY_OUTCOMES = (Outcome.APPLIED, Outcome.STALE)


def needs_account(event: ProviderEvent) -> bool:
    """Subscription snapshots and paid subscription invoices change an account's state; every
    other event (a checkout session finds its account through its purchase) does not."""
    obj = event.object
    return not event.malformed and (isinstance(obj, SubscriptionSnapshot) or (
        isinstance(obj, InvoiceSnapshot) and event.type == "invoice.paid" and obj.paid
        and obj.subscription_id is not None))


def in_history(event: ProviderEvent) -> bool:
    """Whether the event, applied (or stale), joins its account's history: a subscription snapshot
    or paid invoice of one of ACCOUNT_EVENT_TYPES."""
    return needs_account(event) and any(
        event.type.startswith(p[:-1]) if p.endswith("%") else event.type == p for p in ACCOUNT_EVENT_TYPES)


def derived_since(event: ProviderEvent) -> datetime | None:
    """The earliest provider time from which applying the event can change its account's
    derivation (domain/partial.py): a snapshot's own time, or the end it gives its subscription if
    earlier; a paid invoice's earliest period end (the periods it funds). None for other events."""
    obj = event.object
    if isinstance(obj, SubscriptionSnapshot):
        end = ended_at(obj)
        return min(obj.at, end) if end is not None else obj.at
    if isinstance(obj, InvoiceSnapshot):
        return min((line.period_end for line in obj.lines), default=obj.at)
    return None


def outcome_without_account(event: ProviderEvent) -> EventResult | None:
    """The outcome of an event decided without reading anything: a malformed one is rejected with
    its reason, an unpaid or non-subscription invoice and any other event that needs no account
    is ignored. None for an event that needs an account."""
    if event.malformed:
        return EventResult(event.provider_event_id, Outcome.REJECTED, event.malformed, None)
    if needs_account(event):
        return None
    if isinstance(event.object, InvoiceSnapshot):
        return EventResult(event.provider_event_id, Outcome.IGNORED,
                           "only paid subscription invoices fund grants; status changes arrive as subscription events")
    return EventResult(event.provider_event_id, Outcome.IGNORED, f"{event.type} is not used")


def unknown_account(event: ProviderEvent) -> EventResult:
    return EventResult(event.provider_event_id, Outcome.REJECTED, UNKNOWN_ACCOUNT)


def linked_elsewhere(account_id: str, customer_id: str | None, holder: str) -> str:
    """Why an event is refused when it names one account while its customer is linked to another
    (a typo in `metadata.account_id`, say): it grants nothing to either account."""
    return f"customer_linked_elsewhere: customer {customer_id} is linked to account {holder}, not {account_id}"


def catalog_problem(price_id: str, resolved: ResolvedPrice | None) -> str | None:
    """Why an event that names a price cannot be applied: the catalog does not know the price (and
    the event did not carry its product to learn it from), or its entry is invalid. None when the
    price can be used."""
    if resolved is None:
        return f"unknown_price: {price_id} is not in the catalog and the event does not carry its product"
    if not resolved.valid:
        return f"invalid_catalog_entry: {resolved.invalid_reason}"
    return None


def account_of(event: ProviderEvent, linked: str | None, hint: str | None = None) -> str | None:
    """The event's account, in order: the object's `metadata.account_id`; what the caller knows
    (the account of the purchase a checkout session belongs to); the account linked to its
    provider customer; the customer's own `metadata.account_id`. None when none says."""
    return event.account_id or hint or linked or event.customer_account_id or None


def applied_alone(event: ProviderEvent) -> bool:
    """Checkout sessions and catalog objects are applied one at a time, in their place in a batch."""
    return not event.malformed and isinstance(event.object, CheckoutSessionSnapshot | Product | Price)


def batch_keys(event: ProviderEvent) -> frozenset[str]:
    """What two events applied together must not share: events about the same account, customer
    or subscription (or the same event twice) are applied one after the other."""
    obj = event.object
    subscription = obj.subscription_id if isinstance(obj, SubscriptionSnapshot | InvoiceSnapshot) else None
    named = (("event", event.provider_event_id), ("account", event.account_id),
             ("customer", event.provider_customer_id), ("subscription", subscription))
    return frozenset(f"{kind}:{value}" for kind, value in named if value)


def completion_time(event: ProviderEvent) -> datetime | None:
    """When the provider completed what the event reports, which the checkout-to-finalized latency
    is measured from whoever finalizes: the event's own time, except for a reconciliation, timed
    when the reconciler read the provider: then the subscription's start, and for a checkout
    session, unknown (not measured rather than measured wrong)."""
    if not event.type.startswith(RECONCILIATION):
        return event.created
    return event.object.start_date if isinstance(event.object, SubscriptionSnapshot) else None


def arrived_late(event: ProviderEvent, held: SubscriptionRecord | None) -> bool:
    """The state held for the event's subscription is already from a later provider time: the
    event arrived out of order, whether it still applies (an invoice, a history to fill in) or not."""
    return held is not None and event.created < held.provider_updated_at and not event.type.startswith(RECONCILIATION)


def timed_by_read(event: ProviderEvent) -> bool:
    """A reconciliation event is timed when the reconciler read the provider, not by the provider:
    the same state read again comes under the same id (a hash of the state) with a later time."""
    return event.type.startswith(RECONCILIATION)


def cause_of(event: ProviderEvent) -> str:
    """What the audit trail names as the cause of the changes an event makes."""
    return "reconciliation" if event.type.startswith(RECONCILIATION) else "provider_event"


def stale_reason(snapshot: SubscriptionSnapshot, held: SubscriptionRecord | None) -> str | None:
    """Why the snapshot is stale: the state already held for its subscription is later in
    provider order (the same order that sorts snapshots, `timeline.provider_order`). None when it
    applies. A stale snapshot still joins the history: it fills in the past, changes nothing now."""
    if held is None or order_key(snapshot) >= held.order_key:
        return None
    return f"older than the state held (from {held.provider_event_id})"
