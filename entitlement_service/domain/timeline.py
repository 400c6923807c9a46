"""A subscription's history, rebuilt from every snapshot the provider sent, in provider order.

Deriving windows from the whole ordered history (rather than from arrival order) is what makes
the final state identical for any delivery order: a late, older snapshot fills in the past and
changes nothing about the present."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from catalog_rules.model import GrantSpec, Plan, ResolvedPrice, Source
from entitlement_service.domain.model import Status
from entitlement_service.domain.precedence import Claim
from entitlement_service.domain.price_book import PriceBook
from entitlement_service.domain.provider import ItemSnapshot, SubscriptionSnapshot
from entitlement_service.domain.windows import Window, coalesce

# Trialing and active are effective. past_due stays effective: the provider is still retrying the
# payment and a customer mid-retry keeps access. unpaid, canceled, incomplete_expired, incomplete
# and paused are not.
EFFECTIVE = frozenset({Status.TRIALING, Status.ACTIVE, Status.PAST_DUE})
ENDED = frozenset({Status.CANCELED, Status.INCOMPLETE_EXPIRED})

# The tie rule for snapshots with the same provider second: a snapshot read from the provider
# (refetch mode; it holds from when it was read) wins over one from an event payload;
# then the one further along the lifecycle (a cancellation is never undone by an update stamped
# the same second); if still tied, the larger provider event id, arbitrary but the same for every
# arrival order.
LIFECYCLE_RANK = {
    Status.INCOMPLETE: 0, Status.TRIALING: 1, Status.ACTIVE: 2, Status.PAST_DUE: 3, Status.PAUSED: 4,
    Status.UNPAID: 5, Status.CANCELED: 6, Status.INCOMPLETE_EXPIRED: 6,
}

OrderKey = tuple[datetime, bool, int, str]


def provider_order(at: datetime, refetched: bool, status: Status, event_id: str) -> OrderKey:
    """Where a subscription state stands in provider order: by provider time, then the tie rule
    above. The one rule for snapshots and for the state held alike."""
    return (at, refetched, LIFECYCLE_RANK[status], event_id)


def order_key(snapshot: SubscriptionSnapshot) -> OrderKey:
    return provider_order(snapshot.at, snapshot.refetched, snapshot.status, snapshot.event_id)


@dataclass(frozen=True)
class Segment:
    """What one snapshot says, over the provider time until the next snapshot."""

    snapshot: SubscriptionSnapshot
    window: Window


@dataclass(frozen=True)
class ItemRow:
    subscription_id: str
    price_id: str
    item_id: str
    product_id: str
    quantity: int
    window: Window
    current_period_start: datetime | None
    current_period_end: datetime | None


@dataclass(frozen=True)
class AssignmentRow:
    subscription_id: str
    subscription_group: str
    price_id: str
    billing_plan_code: str
    priority: int
    gate_bundle: str | None
    started_at: datetime
    window: Window


@dataclass(frozen=True)
class BindingRow:
    subscription_id: str
    subscription_group: str
    price_id: str
    product_id: str
    grant_program_code: str
    amount: int
    scale_by_quantity: bool
    quantity: int
    source: Source
    window: Window

    @property
    def total_amount(self) -> int:
        return self.amount * self.quantity if self.scale_by_quantity else self.amount


@dataclass(frozen=True)
class Derived:
    """Everything one subscription contributes, before precedence between subscriptions."""

    latest: SubscriptionSnapshot
    subscription_group: str | None
    group_mismatch: str | None
    items: tuple[ItemRow, ...]
    assignments: tuple[AssignmentRow, ...]
    bindings: tuple[BindingRow, ...]
    claims: tuple[Claim, ...]


@dataclass(frozen=True)
class Earlier:
    """What a subscription's snapshots before a partial history tell its derivation: when the
    first of all was (provider time) and the earliest end any snapshot gave it (None: none)."""

    first_at: datetime
    ended_at: datetime | None


def ended_at(snapshot: SubscriptionSnapshot) -> datetime | None:
    """When the subscription ended, if this snapshot says it did."""
    return snapshot.ended_at if snapshot.status in ENDED else None


def segments(snapshots: list[SubscriptionSnapshot], earlier: Earlier | None = None) -> list[Segment]:
    """Orders snapshots by provider time (tie rule above); each holds until the next. The first
    reaches back to the subscription's start, so a lost `created` event loses no time. Nothing
    holds past the subscription's `ended_at`, even when the snapshot saying so arrived later.

    With `earlier`, the snapshots are the end of a longer history: from the last one before some
    instant on. The first of them is then not the subscription's first, and an end given before
    them still holds."""
    ordered = sorted({s.event_id: s for s in snapshots}.values(), key=order_key)
    ends = [e for s in ordered if (e := ended_at(s)) is not None]
    if earlier is not None and earlier.ended_at is not None:
        ends.append(earlier.ended_at)
    ended = min(ends, default=None)
    out: list[Segment] = []
    for i, snapshot in enumerate(ordered):
        start = snapshot.at
        if not out and earlier is None and snapshot.start_date is not None and snapshot.start_date < start:
            start = snapshot.start_date
        end = ordered[i + 1].at if i + 1 < len(ordered) else None
        window = Window(start, end).clipped(ended) if ended is None or ended > start else None
        if window is None or (window.end is not None and window.end <= start):
            continue  # superseded within the same instant, or after the subscription ended
        out.append(Segment(snapshot, window))
    return out


def effective_window(segment: Segment) -> Window | None:
    """The part of a segment the subscription is effective: an effective status, cut at
    `ended_at`, `cancel_at`, or the period end when it cancels at period end."""
    snapshot = segment.snapshot
    if snapshot.status not in EFFECTIVE:
        return None
    stops = [snapshot.ended_at, snapshot.cancel_at]
    if snapshot.cancel_at_period_end:
        stops.append(snapshot.current_period_end)
    window: Window | None = segment.window
    for stop in stops:
        if window is not None and stop is not None:
            window = window.clipped(stop) if stop > window.start else None
    return window


@dataclass(frozen=True)
class _PlanKey:
    group: str
    price_id: str
    plan: Plan
    gate_bundle: str | None


@dataclass(frozen=True)
class _GrantKey:
    group: str
    price_id: str
    product_id: str
    grant: GrantSpec
    quantity: int


def derive(
    snapshots: list[SubscriptionSnapshot], prices: PriceBook | Mapping[str, ResolvedPrice], plans: Mapping[str, Plan],
    earlier: Earlier | None = None,
) -> Derived:
    """The subscription's items, plan assignments, grant bindings and group claims over its whole
    history, each stretch of it read with the resolution of its prices in force then (a catalog
    change cuts a window where it takes effect). Items whose price the catalog cannot resolve
    contribute nothing; a snapshot whose items span several groups contributes nothing and is
    reported as a group mismatch. With `earlier` (see `segments`), what it derives holds from the
    first snapshot given on."""
    book = prices if isinstance(prices, PriceBook) else PriceBook.constant(prices)
    parts = segments(snapshots, earlier)
    latest = max(snapshots, key=order_key)
    sub = latest.subscription_id
    first_at = min(s.at for s in snapshots)
    started_at = latest.start_date or (min(first_at, earlier.first_at) if earlier else first_at)
    plan_pieces: list[tuple[_PlanKey, Window]] = []
    grant_pieces: list[tuple[_GrantKey, Window]] = []
    claim_pieces: list[tuple[tuple[str, int], Window]] = []
    for part in parts:
        effective = effective_window(part)
        if effective is None:
            continue
        price_ids = [item.price.price_id for item in part.snapshot.items]
        for window in book.pieces(price_ids, effective):
            in_force = book.in_force(price_ids, window.start)
            group = group_of_snapshot(part.snapshot, in_force)
            if group is None:
                continue
            priority = 0
            for item in part.snapshot.items:
                resolved = in_force.get(item.price.price_id)
                if resolved is None or not resolved.valid:
                    continue
                plan = plans.get(resolved.billing_plan_code or "")
                if plan is not None:
                    priority = max(priority, plan.priority)
                    plan_pieces.append((_PlanKey(group, item.price.price_id, plan, resolved.gate_bundle), window))
                for grant in resolved.grants:
                    key = _GrantKey(group, item.price.price_id, resolved.price.product_id, grant, item.quantity)
                    grant_pieces.append((key, window))
            claim_pieces.append(((group, priority), window))
    current = book.now(item.price.price_id for item in latest.items)
    return Derived(
        latest=latest,
        subscription_group=group_of_snapshot(latest, current),
        group_mismatch=group_mismatch(latest, current),
        items=item_rows(parts),
        assignments=tuple(
            AssignmentRow(sub, k.group, k.price_id, k.plan.code, k.plan.priority, k.gate_bundle, started_at, w)
            for k, w in coalesce(plan_pieces)
        ),
        bindings=tuple(
            BindingRow(sub, k.group, k.price_id, k.product_id, k.grant.grant_program_code, k.grant.amount,
                       k.grant.scale_by_quantity, k.quantity, k.grant.source, w)
            for k, w in coalesce(grant_pieces)
        ),
        claims=tuple(Claim(sub, k[0], k[1], started_at, w) for k, w in coalesce(claim_pieces)),
    )


def group_of_snapshot(snapshot: SubscriptionSnapshot, prices: Mapping[str, ResolvedPrice]) -> str | None:
    """The one group all resolvable items share; None when they span several or none resolve."""
    groups = {r.subscription_group for i in snapshot.items if (r := prices.get(i.price.price_id)) and r.valid}
    return groups.pop() if len(groups) == 1 else None


def group_mismatch(snapshot: SubscriptionSnapshot, prices: Mapping[str, ResolvedPrice]) -> str | None:
    groups = sorted({r.subscription_group or "" for i in snapshot.items
                     if (r := prices.get(i.price.price_id)) and r.valid})
    if len(groups) < 2:
        return None
    return f"subscription {snapshot.subscription_id} has items in groups {', '.join(groups)}"


def item_rows(parts: list[Segment]) -> tuple[ItemRow, ...]:
    """One row per price: its latest unbroken presence in the subscription, with the latest
    quantity and period. An item that left the subscription ends when the snapshot without it
    begins."""
    presence: list[tuple[str, Window]] = []
    latest: dict[str, tuple[ItemSnapshot, str]] = {}
    for part in parts:
        for item in part.snapshot.items:
            presence.append((item.price.price_id, part.window))
            latest[item.price.price_id] = (item, part.snapshot.subscription_id)
    last_run: dict[str, Window] = {}
    for price_id, window in coalesce(presence):
        last_run[price_id] = window
    rows = []
    for price_id, window in sorted(last_run.items()):
        item, sub = latest[price_id]
        rows.append(ItemRow(sub, price_id, item.item_id, item.price.product_id, item.quantity, window,
                            item.current_period_start, item.current_period_end))
    return tuple(rows)
