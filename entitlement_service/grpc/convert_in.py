"""Proto requests and provider snapshots into domain values. Missing or malformed request
fields raise InvalidRequest naming the field."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from catalog_rules.file import INTERVALS
from catalog_rules.model import (
    MAX_QUANTITY,
    Cadence,
    CatalogConfig,
    ChangePolicy,
    ConflictPolicy,
    GateBundle,
    GrantProgram,
    Group,
    Plan,
    PlanKind,
    Price,
    Product,
)
from entitlement_service.domain.conflict_actions import ActionState
from entitlement_service.domain.errors import InvalidRequest
from entitlement_service.domain.model import Mode, Status
from entitlement_service.domain.provider import (
    UNREADABLE,
    CheckoutSessionSnapshot,
    InvoiceLine,
    InvoiceSnapshot,
    ItemSnapshot,
    LineItem,
    ProviderEvent,
    ProviderObject,
    SubscriptionSnapshot,
)
from entitlement_service.service.preview import Change, PreviewRequest
from entitlement_service.service.purchases import NewPurchase
from entitlement_service.service.reads import MAX_WATCHED_ACCOUNTS
from entitlement_service.service.reconciliation import ProviderAccount, Reconciliation
from entitlement_service.service.replay import ReplaySelection
from selfserve.entitlement.v1 import entitlement_pb2 as pb

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

STATUSES = {
    pb.SUBSCRIPTION_STATUS_INCOMPLETE: Status.INCOMPLETE, pb.SUBSCRIPTION_STATUS_INCOMPLETE_EXPIRED:
    Status.INCOMPLETE_EXPIRED, pb.SUBSCRIPTION_STATUS_TRIALING: Status.TRIALING,
    pb.SUBSCRIPTION_STATUS_ACTIVE: Status.ACTIVE, pb.SUBSCRIPTION_STATUS_PAST_DUE: Status.PAST_DUE,
    pb.SUBSCRIPTION_STATUS_CANCELED: Status.CANCELED, pb.SUBSCRIPTION_STATUS_UNPAID: Status.UNPAID,
    pb.SUBSCRIPTION_STATUS_PAUSED: Status.PAUSED,
}
MODES = {pb.PURCHASE_MODE_SUBSCRIPTION: Mode.SUBSCRIPTION, pb.PURCHASE_MODE_PAYMENT: Mode.PAYMENT}
CADENCES = {pb.GRANT_CADENCE_PER_PERIOD: Cadence.PER_PERIOD, pb.GRANT_CADENCE_WHILE_ACTIVE: Cadence.WHILE_ACTIVE,
            pb.GRANT_CADENCE_ONE_TIME: Cadence.ONE_TIME}
CHANGE_POLICIES = {pb.CHANGE_POLICY_UNSPECIFIED: ChangePolicy.NONE, pb.CHANGE_POLICY_NONE: ChangePolicy.NONE,
                   pb.CHANGE_POLICY_DIFFERENCE: ChangePolicy.DIFFERENCE}
CONFLICT_POLICIES = {pb.CONFLICT_POLICY_UNSPECIFIED: ConflictPolicy.FLAG, pb.CONFLICT_POLICY_FLAG: ConflictPolicy.FLAG,
                     pb.CONFLICT_POLICY_CANCEL_AND_REFUND: ConflictPolicy.CANCEL_AND_REFUND}
KINDS = {pb.PLAN_KIND_BASE: PlanKind.BASE, pb.PLAN_KIND_ADDON: PlanKind.ADDON, pb.PLAN_KIND_UNSPECIFIED: PlanKind.BASE}


# The longest id kept: provider ids are far shorter, and a longer one may not fit an index entry
# (PostgreSQL's limit is about 2.7 kB).
MAX_ID_CHARS = 255
# What a Timestamp may hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_SECONDS = range(-62_135_596_800, 253_402_300_800)
# What the database's 32-bit integer columns hold (a price's interval_count).
INT32_MAX = 2**31 - 1
MAX_LEASE_S = 86_400


def identifier(value: str, field: str) -> str:
    """`value` without the spaces around it; InvalidRequest naming `field` when it holds a NUL
    character (PostgreSQL text cannot) or is longer than an id may be."""
    text = value.strip()
    if "\x00" in text:
        raise InvalidRequest(f"{field} must not contain a NUL character")
    if len(text) > MAX_ID_CHARS:
        raise InvalidRequest(f"{field} must be at most {MAX_ID_CHARS} characters")
    return text


def required(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidRequest(f"{field} is required")
    return identifier(value, field)


def optional(value: str, field: str) -> str | None:
    return identifier(value, field) or None


def time_or_none(message: object, name: str) -> datetime | None:
    """The time in UTC, to the microsecond (nanoseconds truncated), as `Timestamp.ToDatetime`
    gives it, without that method's checks and time zone conversion, done once here."""
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    ts: Timestamp = getattr(message, name)
    seconds, nanos = ts.seconds, ts.nanos
    if seconds not in TIMESTAMP_SECONDS or not 0 <= nanos < 1_000_000_000:
        raise InvalidRequest(f"{name} is not a time a Timestamp can hold (seconds {seconds}, nanos {nanos})")
    return EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def lease_ttl(r: pb.LeaseReconcilerRequest) -> timedelta:
    """A lease lasts minutes: a day is past any reconciler run; 0 gives the lease up."""
    if not 0 <= r.ttl.seconds <= MAX_LEASE_S or not 0 <= r.ttl.nanos < 1_000_000_000:
        raise InvalidRequest(f"ttl must be from 0 to {MAX_LEASE_S} s")
    return r.ttl.ToTimedelta()


MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 0.1, 300.0


@dataclass(frozen=True)
class WatchSelection:
    account_ids: tuple[str, ...]
    known_revisions: dict[str, int]
    heartbeat_s: float | None


def watch_selection(r: pb.WatchEntitlementsRequest) -> WatchSelection:
    """One account (`account_id`) or many (`account_ids`, at most MAX_WATCHED_ACCOUNTS, no
    repeats), never both; the heartbeat interval when set."""
    if r.account_id and r.account_ids:
        raise InvalidRequest("exactly one of account_id and account_ids is required")
    if r.account_ids:
        if len(r.account_ids) > MAX_WATCHED_ACCOUNTS:
            raise InvalidRequest(f"account_ids must hold at most {MAX_WATCHED_ACCOUNTS} accounts")
        ids = tuple(required(a, f"account_ids[{i}]") for i, a in enumerate(r.account_ids))
        if len(set(ids)) != len(ids):
            raise InvalidRequest("account_ids must not repeat an account")
    else:
        ids = (required(r.account_id, "account_id"),)
    heartbeat_s = None
    if r.HasField("heartbeat_interval"):
        heartbeat_s = r.heartbeat_interval.seconds + r.heartbeat_interval.nanos / 1e9
        if not MIN_HEARTBEAT_S <= heartbeat_s <= MAX_HEARTBEAT_S:
            raise InvalidRequest(f"heartbeat_interval must be from {MIN_HEARTBEAT_S} to {MAX_HEARTBEAT_S} s")
    known = {identifier(a, "known_revisions"): int(v) for a, v in r.known_revisions.items()}
    return WatchSelection(ids, known, heartbeat_s)


def quantity(value: int, field: str, minimum: int = 0) -> int:
    if not minimum <= value <= MAX_QUANTITY:
        raise InvalidRequest(f"{field} must be from {minimum} to {MAX_QUANTITY}, not {value}")
    return value


def required_time(message: object, name: str, field: str) -> datetime:
    found = time_or_none(message, name)
    if found is None:
        raise InvalidRequest(f"{field} is required")
    return found


def items(values: Iterable[pb.PurchaseItem], field: str = "items") -> tuple[tuple[str, int], ...]:
    return tuple((required(item.price, f"{field}[{i}].price"), int(item.quantity)) for i, item in enumerate(values))


def product(p: pb.ProductSnapshot, fallback_at: datetime, field: str = "product") -> Product:
    return Product(required(p.product_id, f"{field}.product_id"), p.name, p.active, dict(p.metadata),
                   time_or_none(p, "provider_updated_at") or fallback_at, p.deleted)


def price(p: pb.PriceSnapshot, fallback_at: datetime, field: str = "price") -> Price:
    if p.interval and p.interval not in INTERVALS:
        raise InvalidRequest(f"{field}.interval must be one of {', '.join(INTERVALS)}, not {p.interval!r}")
    if p.interval_count > INT32_MAX:
        raise InvalidRequest(f"{field}.interval_count must be at most {INT32_MAX}")
    return Price(required(p.price_id, f"{field}.price_id"), p.product_id or (p.product.product_id if
                 p.HasField("product") else ""), p.lookup_key or None, p.active,
                 p.unit_amount, p.currency, p.interval or None, p.interval_count or (1 if p.interval else None),
                 dict(p.metadata), time_or_none(p, "provider_updated_at") or fallback_at, p.deleted)


def _expanded(p: pb.PriceSnapshot, at: datetime) -> Product | None:
    return product(p.product, at) if p.HasField("product") and p.product.product_id else None


def catalog_config(c: pb.CatalogConfig) -> CatalogConfig:
    codes = {"groups": [g.code for g in c.groups], "plans": [p.code for p in c.plans],
             "grant_programs": [g.code for g in c.grant_programs], "gate_bundles": [b.code for b in c.gate_bundles]}
    for kind, entries in codes.items():
        for i, code in enumerate(entries):
            required(code, f"config.{kind}[{i}].code")
    for i, gp in enumerate(c.grant_programs):
        if gp.cadence not in CADENCES:
            raise InvalidRequest(f"config.grant_programs[{i}].cadence is required")
        if gp.on_change not in CHANGE_POLICIES:
            raise InvalidRequest(f"config.grant_programs[{i}].on_change is not a known change policy")
        if CHANGE_POLICIES[gp.on_change] is not ChangePolicy.NONE and gp.cadence != pb.GRANT_CADENCE_PER_PERIOD:
            raise InvalidRequest(f"config.grant_programs[{i}].on_change applies to per_period programs only")
    for i, g in enumerate(c.groups):
        if g.conflict_policy not in CONFLICT_POLICIES:
            raise InvalidRequest(f"config.groups[{i}].conflict_policy is not a known conflict policy")
    return CatalogConfig(
        groups={g.code: Group(g.code, g.stackable, CONFLICT_POLICIES[g.conflict_policy]) for g in c.groups},
        plans={p.code: Plan(p.code, p.priority, KINDS[p.kind]) for p in c.plans},
        grant_programs={g.code: GrantProgram(g.code, CADENCES[g.cadence], g.unit, CHANGE_POLICIES[g.on_change])
                        for g in c.grant_programs},
        gate_bundles={b.code: GateBundle(b.code, tuple(b.gates)) for b in c.gate_bundles},
    )


def subscription(s: pb.SubscriptionSnapshot, event_id: str, at: datetime, refetched: bool = False
                 ) -> SubscriptionSnapshot:
    if s.status not in STATUSES:
        raise InvalidRequest("subscription.status is required")
    return SubscriptionSnapshot(
        subscription_id=required(s.subscription_id, "subscription.subscription_id"),
        provider_customer_id=s.provider_customer_id, status=STATUSES[s.status], at=at, event_id=event_id,
        items=tuple(ItemSnapshot(i.item_id, price(i.price, at, f"subscription.items[{n}].price"),
                                 quantity(i.quantity, f"subscription.items[{n}].quantity"),
                                 _expanded(i.price, at), time_or_none(i, "current_period_start"),
                                 time_or_none(i, "current_period_end")) for n, i in enumerate(s.items)),
        start_date=time_or_none(s, "start_date") or time_or_none(s, "created"), trial_end=time_or_none(s, "trial_end"),
        cancel_at=time_or_none(s, "cancel_at"), cancel_at_period_end=s.cancel_at_period_end,
        canceled_at=time_or_none(s, "canceled_at"), ended_at=time_or_none(s, "ended_at"), metadata=dict(s.metadata),
        refetched=refetched,
    )


def checkout_session(c: pb.CheckoutSessionSnapshot, at: datetime) -> CheckoutSessionSnapshot:
    return CheckoutSessionSnapshot(
        checkout_session_id=required(c.checkout_session_id, "checkout_session.checkout_session_id"),
        purchase_id=c.purchase_id or c.metadata.get("purchase_id") or None,
        provider_customer_id=c.provider_customer_id or None, mode=MODES.get(c.mode, Mode.SUBSCRIPTION),
        status=c.status, payment_status=c.payment_status, subscription_id=c.subscription_id or None,
        line_items=tuple(LineItem(price(li.price, at, f"checkout_session.line_items[{n}].price"),
                                  quantity(li.quantity, f"checkout_session.line_items[{n}].quantity"),
                                  _expanded(li.price, at)) for n, li in enumerate(c.line_items)),
        at=at, metadata=dict(c.metadata),
    )


def invoice(i: pb.InvoiceSnapshot, at: datetime) -> InvoiceSnapshot:
    return InvoiceSnapshot(
        invoice_id=required(i.invoice_id, "invoice.invoice_id"), subscription_id=i.subscription_id or None,
        provider_customer_id=i.provider_customer_id or None, paid=i.paid or i.status == "paid",
        billing_reason=i.billing_reason,
        lines=tuple(InvoiceLine(line.price_id, quantity(line.quantity, f"invoice.lines[{n}].quantity"),
                                time_or_none(line, "period_start") or at, time_or_none(line, "period_end") or at,
                                line.proration, line.amount)
                    for n, line in enumerate(i.lines) if line.price_id),
        at=at, paid_at=time_or_none(i, "paid_at"),
    )


def provider_object(e: pb.ProviderEvent, at: datetime) -> ProviderObject | None:
    kind = e.WhichOneof("object")
    if kind == "subscription":
        # A re-read object is the provider's state when it was read, after the event arrived: it
        # holds from then, which orders several re-reads within one provider second.
        read_at = max(at, time_or_none(e, "received_at") or at) if e.refetched else at
        return subscription(e.subscription, e.provider_event_id, read_at, e.refetched)
    if kind == "checkout_session":
        return checkout_session(e.checkout_session, at)
    if kind == "invoice":
        return invoice(e.invoice, at)
    if kind == "product":
        return product(e.product, at)
    if kind == "price":
        return price(e.price, at)
    return None


def provider_event(e: pb.ProviderEvent, field: str = "event") -> ProviderEvent:
    """Validates the envelope; the object's own problems surface when it is applied."""
    event_id = required(e.provider_event_id, f"{field}.provider_event_id")
    required(e.type, f"{field}.type")
    at = required_time(e, "created", f"{field}.created")
    stored = pb.ProviderEvent()
    stored.CopyFrom(e)
    stored.ClearField("raw_payload")
    if e.unreadable_reason:  # the checkout service could not normalize it: kept with its raw payload
        obj, malformed = None, f"{UNREADABLE}: {e.unreadable_reason}"
    else:
        try:
            obj, malformed = provider_object(e, at), None
        except InvalidRequest as exc:
            obj, malformed = None, f"malformed {e.WhichOneof('object')}: {exc}"
    return ProviderEvent(
        provider_event_id=event_id, type=e.type, created=at,
        received_at=time_or_none(e, "received_at") or at, api_version=e.api_version,
        raw_payload=e.raw_payload, snapshot=stored.SerializeToString(deterministic=True),
        account_id=e.account_id or None, customer_account_id=e.customer_account_id or None,
        object=obj, malformed=malformed,
    )


def stored_event(snapshot: bytes) -> ProviderEvent:
    """A stored normalized event back into domain form (for re-deriving history)."""
    message = pb.ProviderEvent()
    message.ParseFromString(snapshot)
    return provider_event(message)


ACTION_STATES = {pb.CONFLICT_ACTION_STATE_CANCELED: ActionState.CANCELED,
                 pb.CONFLICT_ACTION_STATE_REFUNDED: ActionState.REFUNDED,
                 pb.CONFLICT_ACTION_STATE_SKIPPED: ActionState.SKIPPED}


def action_state(state: pb.ConflictActionState.ValueType) -> ActionState:
    if state not in ACTION_STATES:
        raise InvalidRequest("state must be CANCELED, REFUNDED or SKIPPED")
    return ACTION_STATES[state]


def new_purchase(r: pb.RegisterPurchaseRequest) -> NewPurchase:
    if r.mode not in MODES:
        raise InvalidRequest("mode is required")
    selection = items(r.items)
    if not selection:
        raise InvalidRequest("items must hold at least one item")
    for i, (_, count) in enumerate(selection):
        quantity(count, f"items[{i}].quantity", minimum=1)
    return NewPurchase(
        purchase_id=required(r.purchase_id, "purchase_id"), account_id=required(r.account_id, "account_id"),
        checkout_session_id=required(r.checkout_session_id, "checkout_session_id"), items=selection,
        subscription_group=r.subscription_group or None, mode=MODES[r.mode], success_url=r.success_url,
        cancel_url=r.cancel_url, expires_at=required_time(r, "expires_at", "expires_at"),
        provider_customer_id=r.provider_customer_id or None, checkout_url=r.checkout_url or None,
    )


def _digest(message: Message) -> str:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()[:16]


def reconciliation(r: pb.ApplyReconciliationRequest) -> Reconciliation:
    """The provider's present state as reconciliation events: their ids hash the state read, so
    the same drift is repaired once however often the reconciler runs."""
    read_at = required_time(r, "read_at", "read_at")
    accounts = []
    for i, account in enumerate(r.accounts):
        account_id = required(account.account_id, f"accounts[{i}].account_id")
        subs = []
        for sub in [] if account.unreadable else account.subscriptions:
            event = pb.ProviderEvent(
                provider_event_id=f"recon_{sub.subscription_id}_{_digest(sub)}", type="reconciliation.subscription",
                created=r.read_at, received_at=r.read_at, account_id=account_id, subscription=sub, refetched=True)
            domain = provider_event(event)
            if isinstance(domain.object, SubscriptionSnapshot):
                subs.append((domain.object, domain))
        accounts.append(ProviderAccount(account_id, account.provider_customer_id, subs, account.unreadable))
    sessions = []
    for session in r.checkout_sessions:
        kind = "expired" if session.status == "expired" else "completed"
        event = pb.ProviderEvent(
            provider_event_id=f"recon_{session.checkout_session_id}_{_digest(session)}",
            type=f"reconciliation.checkout.session.{kind}", created=r.read_at, received_at=r.read_at,
            account_id=session.metadata.get("account_id", ""), checkout_session=session, refetched=True)
        domain = provider_event(event)
        if isinstance(domain.object, CheckoutSessionSnapshot):
            sessions.append((domain.object, domain))
    return Reconciliation(read_at, accounts, sessions, time_or_none(r, "events_checkpoint"),
                          r.sweep_position if r.HasField("sweep_position") else None, not r.omit_open_mismatches)


def replay_selection(r: pb.ReplayEventsRequest) -> ReplaySelection:
    ids = tuple(required(i, f"provider_event_ids[{n}]") for n, i in enumerate(r.provider_event_ids))
    selection = ReplaySelection(
        provider_event_ids=ids, reason=r.reason or None, account_id=optional(r.account_id, "account_id"),
        created_from=time_or_none(r, "created_from"), created_until=time_or_none(r, "created_until"),
        limit=min(r.limit or 100, 1000))
    if not (ids or selection.reason or selection.account_id or selection.created_from or selection.created_until):
        raise InvalidRequest("give at least one of provider_event_ids, reason, account_id, created_from, "
                             "created_until")
    if selection.created_from and selection.created_until and selection.created_until < selection.created_from:
        raise InvalidRequest("created_until is before created_from")
    if r.limit < 0:
        raise InvalidRequest("limit must not be negative")
    return selection


def unreadable_selection(r: pb.ReplayUnreadableEventsRequest) -> ReplaySelection:
    if r.limit < 0:
        raise InvalidRequest("limit must not be negative")
    return ReplaySelection(
        provider_event_ids=tuple(required(i, f"provider_event_ids[{n}]") for n, i in enumerate(r.provider_event_ids)),
        reason=UNREADABLE, limit=min(r.limit or 100, 1000),
        renormalized=tuple(provider_event(e, f"renormalized[{n}]") for n, e in enumerate(r.renormalized)))


def preview_request(r: pb.PreviewPurchaseRequest) -> PreviewRequest:
    """Exactly one of `items` and `change`; a change names its subscription and one action."""
    account_id = required(r.account_id, "account_id")
    as_of = time_or_none(r, "as_of")
    selection = r.WhichOneof("selection")
    if selection == "items":
        return PreviewRequest(account_id, items=items(r.items.items), as_of=as_of)
    if selection != "change":
        raise InvalidRequest("one of items and change is required")
    c = r.change
    subscription_id = required(c.subscription_id, "change.subscription_id")
    action = c.WhichOneof("action")
    if action == "items":
        change = Change(subscription_id, items=items(c.items.items, "change.items"))
    elif action == "cancel_at_period_end" and c.cancel_at_period_end:
        change = Change(subscription_id, cancel_at_period_end=True)
    elif action == "cancel_now" and c.cancel_now:
        change = Change(subscription_id, cancel_now=True)
    else:
        raise InvalidRequest("change needs one of items, cancel_at_period_end = true and cancel_now = true")
    return PreviewRequest(account_id, change=change, as_of=as_of)
