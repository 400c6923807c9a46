"""What the entitlement service keeps, one frozen value per kind of stored row. The db layer
reads and writes these and nothing else; the rules and the readers take them as they are."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from catalog_rules.model import Cadence
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.funding import Issue
from entitlement_service.domain.model import Mode, Outcome, PurchaseState, Status
from entitlement_service.domain.provider import InvoiceSnapshot, ProviderEvent, SubscriptionSnapshot
from entitlement_service.domain.timeline import Earlier, ItemRow, OrderKey, ended_at, provider_order
from entitlement_service.domain.windows import Window


@dataclass(frozen=True, slots=True)
class AccountRecord:
    account_id: str
    provider_customer_id: str | None
    revision: int  # grows with every change to what the account is entitled to


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """The state held for one provider subscription: its latest snapshot in provider order, with
    the group its items resolve to (None and `group_mismatch` set when they span several)."""

    subscription_id: str
    account_id: str
    provider_customer_id: str
    subscription_group: str | None
    status: Status
    provider_updated_at: datetime
    provider_refetched: bool
    provider_event_id: str | None
    started_at: datetime | None
    trial_end: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    purchase_id: str | None
    metadata: dict[str, str]
    group_mismatch: str | None

    @classmethod
    def of(cls, latest: SubscriptionSnapshot, account_id: str, subscription_group: str | None,
           group_mismatch: str | None) -> SubscriptionRecord:
        s = latest
        return cls(s.subscription_id, account_id, s.provider_customer_id, subscription_group, s.status, s.at,
                   s.refetched, s.event_id, s.start_date, s.trial_end, s.current_period_start, s.current_period_end,
                   s.cancel_at, s.cancel_at_period_end, s.canceled_at, s.ended_at, s.purchase_id, s.metadata,
                   group_mismatch)

    @property
    def order_key(self) -> OrderKey:
        """Where the state held stands in provider order (the same rule that orders snapshots)."""
        return provider_order(self.provider_updated_at, self.provider_refetched, self.status,
                              self.provider_event_id or "")


@dataclass(frozen=True, slots=True)
class AccountItem:
    """A subscription item to write, with the account whose derivation holds it."""

    account_id: str
    item: ItemRow


@dataclass(frozen=True, slots=True)
class AccountAssignment:
    """A plan assignment to write, with its account and whether its group is stackable (which the
    database's exclusion constraint reads)."""

    account_id: str
    stackable: bool
    placed: PlacedAssignment


@dataclass(frozen=True, slots=True)
class AccountBinding:
    account_id: str
    placed: PlacedBinding


@dataclass(frozen=True, slots=True)
class Issuance:
    """An issue of funding to record, with the event that caused it."""

    account_id: str
    issue: Issue
    provider_event_id: str


@dataclass(frozen=True, slots=True)
class IssuedGrantRecord:
    issue_key: str
    grant_program_code: str
    cadence: Cadence
    unit: str
    amount: int
    subscription_id: str | None
    invoice_id: str | None
    checkout_session_id: str | None
    period: Window | None
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class PurchaseRecord:
    """A purchase session and the time it reached each state it has been in."""

    purchase_id: str
    account_id: str
    state: PurchaseState
    mode: Mode
    items: tuple[tuple[str, int], ...]  # (price id or lookup key as asked, quantity)
    subscription_group: str | None
    checkout_session_id: str
    subscription_id: str | None
    provider_customer_id: str | None
    success_url: str
    cancel_url: str
    reason: str | None
    created_at: datetime
    returned_at: datetime | None
    finalized_at: datetime | None
    expired_at: datetime | None
    failed_at: datetime | None
    conflict_at: datetime | None
    expires_at: datetime
    timeout_at: datetime
    checkout_url: str | None = None  # the provider checkout session's URL; None when not kept


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    purchase_id: str
    from_state: PurchaseState | None
    to_state: PurchaseState
    at: datetime
    provider_event_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class EventResult:
    """The one outcome of one provider event, with the account it was applied to."""

    provider_event_id: str
    outcome: Outcome
    reason: str = ""
    account_id: str | None = None
    # Arrived after a later state of its subscription was held (out of order), whatever the outcome.
    late: bool = False


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """A provider event as it is recorded on arrival, under its unique id."""

    provider_event_id: str
    type: str
    created: datetime
    received_at: datetime
    api_version: str
    object_id: str
    subscription_id: str | None
    checkout_session_id: str | None
    account_id: str | None
    provider_customer_id: str | None
    outcome: Outcome
    reason: str
    payload: bytes
    snapshot: bytes

    @classmethod
    def of(cls, event: ProviderEvent, account_id: str | None) -> RecordedEvent:
        """Recorded as applied: the outcome is corrected in the same transaction when it is not."""
        return cls(event.provider_event_id, event.type, event.created, event.received_at, event.api_version,
                   event.object_id, event.subscription_id, event.checkout_session_id, account_id,
                   event.provider_customer_id, Outcome.APPLIED, "", event.raw_payload, event.snapshot)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A recorded provider event as support traces it."""

    provider_event_id: str
    type: str
    created: datetime
    received_at: datetime
    outcome: Outcome
    reason: str
    account_id: str | None
    object_id: str
    deliveries: int


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """A recorded event that was rejected, with the normalized snapshot it can be applied again from."""

    provider_event_id: str
    type: str
    created: datetime
    reason: str
    account_id: str | None
    snapshot: bytes
    # The payload as received; None once pruned (the payload of an event still rejected never is).
    payload: bytes | None = b""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One changed row and what changed it; `at` is set by the database when it is written."""

    account_id: str | None
    cause: str  # provider_event | reconciliation | purchase | catalog
    cause_id: str
    entity: str
    entity_id: str
    action: str
    detail: dict[str, Any]
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A difference between the provider's view and the state held, as it is opened."""

    kind: str
    account_id: str
    subscription_id: str | None
    fingerprint: str  # the same open difference is recorded once
    diff: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MismatchRecord:
    mismatch_id: int
    kind: str
    account_id: str | None
    subscription_id: str | None
    fingerprint: str
    diff: dict[str, Any]
    opened_at: datetime
    closed_at: datetime | None
    resolution: str | None


@dataclass(frozen=True, slots=True)
class Resolution:
    fingerprint: str
    resolution: str


@dataclass(frozen=True, slots=True)
class OverduePurchase:
    purchase_id: str
    checkout_session_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class OperationsCounts:
    open_mismatches: int
    pending: int
    past_timeout: int


@dataclass(frozen=True)
class StoredAccount:
    """One account's stored state, as its derivation reads it (with its row locked)."""

    # Its subscriptions' snapshots and paid invoices: all of them, or with `since` set, the part a
    # derivation from `since` on reads (see `load_accounts`).
    history: tuple[bytes, ...] = ()
    subscriptions: dict[str, SubscriptionRecord] = field(default_factory=dict)
    items: tuple[ItemRow, ...] = ()
    assignments: dict[int, PlacedAssignment] = field(default_factory=dict)  # by row id
    bindings: dict[int, PlacedBinding] = field(default_factory=dict)  # by row id
    purchases: tuple[PurchaseRecord, ...] = ()  # its subscription purchases
    issued: tuple[IssuedGrantRecord, ...] = ()  # everything issued to it, to be issued never again
    open_mismatches: dict[str, str] = field(default_factory=dict)  # fingerprint -> kind
    # Set when the history is partial: the derivation holds from `since` on, and assignments and
    # bindings hold only the rows still open at `since`; `earlier` summarizes what each
    # subscription's snapshots before its part held.
    since: datetime | None = None
    earlier: dict[str, Earlier] = field(default_factory=dict)
    unsummarized: frozenset[bytes] = frozenset()  # history rows not summarized yet (see HistoryEntry)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One snapshot of an account's history, with what reading a part of the history needs to
    know without decoding it: a subscription snapshot's provider time and the end it gives its
    subscription, a paid invoice's latest period end."""

    account_id: str
    provider_event_id: str
    subscription_id: str
    invoice: bool
    provider_at: datetime
    ended_at: datetime | None
    reaches: datetime | None
    snapshot: bytes

    @classmethod
    def of(cls, event: ProviderEvent, account_id: str) -> HistoryEntry:
        obj = event.object
        if isinstance(obj, InvoiceSnapshot):
            reaches = max((max(line.period_start, line.period_end) for line in obj.lines), default=obj.at)
            return cls(account_id, event.provider_event_id, obj.subscription_id or "", True, obj.at, None, reaches,
                       event.snapshot)
        assert isinstance(obj, SubscriptionSnapshot), f"{event.type} is not part of an account's history"
        return cls(account_id, event.provider_event_id, obj.subscription_id, False, obj.at, ended_at(obj), None,
                   event.snapshot)


@dataclass(frozen=True, slots=True)
class ConflictActionRecord:
    """Under `cancel_and_refund`: the decision to cancel `subscription_id` (which lost its group to
    `winner_subscription_id`) and refund its payment, and how far it has been carried out."""

    account_id: str
    subscription_id: str
    subscription_group: str
    winner_subscription_id: str
    purchase_id: str | None
    state: str  # domain/conflict_actions.py ActionState
    refund_id: str | None
    reason: str
    cause_id: str
    decided_at: datetime
    updated_at: datetime
