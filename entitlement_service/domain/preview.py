"""What a purchase or a change would do to an account, without doing it.

A purchase or change is turned into the provider objects it would add to the account's history
(the hypothesis), and the account is derived from its history plus those objects by the same
rules an arriving event is derived by (`account.rebuild`, `account.funding`, `funding.checkout_issues`).
Nothing here reads or writes anything.

The hypothesis is what the provider does for the same request at `as_of`:

- recurring items: a new subscription, active from `as_of`, each item's first period starting then,
  and its first invoice paid then (one-time items of the same checkout on that invoice);
- one-time items alone: a paid one-time checkout at `as_of`;
- new items for a subscription: its latest snapshot with those items from `as_of`; a price it holds
  keeps its item and period, a new price takes the place of an item whose price it no longer lists
  (in order), or joins the current period; a change of billing interval restarts every period at
  `as_of` and is invoiced and paid then; otherwise prorations wait for the next invoice and fund
  nothing now;
- cancel at period end: the latest snapshot, cancelled at its current period's end from `as_of`;
- cancel now: the latest snapshot, ended at `as_of`.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from catalog_rules.model import CatalogConfig, ResolvedPrice
from entitlement_service.domain.account import (
    AccountState,
    PlacedAssignment,
    PlacedBinding,
    funding,
    history_of,
    rebuild,
)
from entitlement_service.domain.funding import Issue, checkout_issues
from entitlement_service.domain.model import Mode, Status
from entitlement_service.domain.price_book import PriceBook
from entitlement_service.domain.provider import (
    CheckoutSessionSnapshot,
    InvoiceLine,
    InvoiceSnapshot,
    ItemSnapshot,
    LineItem,
    SubscriptionSnapshot,
)
from entitlement_service.domain.records import IssuedGrantRecord, SubscriptionRecord
from entitlement_service.domain.timeline import ItemRow

# The ids the objects a preview adds are known by.
NEW_SUBSCRIPTION, NEW_INVOICE, NEW_CHECKOUT, PREVIEW_EVENT = "sub_preview", "in_preview", "cs_preview", "evt_preview"
ENDED = (Status.CANCELED, Status.INCOMPLETE_EXPIRED)


def period_end(start: datetime, interval: str, count: int) -> datetime:
    """`start` plus `count` intervals, as the provider bills: a month keeps the day of the month,
    clamped to the month's end (January 31 plus one month is February 28 or 29)."""
    if interval in ("day", "week"):
        return start + timedelta(days=count * (1 if interval == "day" else 7))
    months = start.month - 1 + count * (12 if interval == "year" else 1)
    year, month = start.year + months // 12, months % 12 + 1
    return start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1]))


def _end_of(resolved: ResolvedPrice, start: datetime) -> datetime:
    return period_end(start, str(resolved.price.interval), resolved.price.interval_count or 1)


@dataclass(frozen=True)
class Hypothesis:
    """The provider objects a purchase or change would add to the account's history."""

    subscription: SubscriptionSnapshot | None = None
    invoice: InvoiceSnapshot | None = None
    checkout: CheckoutSessionSnapshot | None = None


def _paid_invoice(subscription_id: str, customer_id: str, lines: Sequence[InvoiceLine], as_of: datetime
                  ) -> InvoiceSnapshot:
    return InvoiceSnapshot(NEW_INVOICE, subscription_id, customer_id, True, "subscription_create", tuple(lines), as_of,
                           paid_at=as_of)


def new_purchase(items: Sequence[tuple[ResolvedPrice, int]], customer_id: str, as_of: datetime) -> Hypothesis:
    """A checkout of `items` paid at `as_of`: a new subscription and its paid first invoice when any
    item is recurring, else a paid one-time checkout. No items: nothing."""
    recurring = [(r, q) for r, q in items if r.price.recurring]
    one_time = [(r, q) for r, q in items if not r.price.recurring]
    if not recurring:
        if not one_time:
            return Hypothesis()
        return Hypothesis(checkout=CheckoutSessionSnapshot(
            NEW_CHECKOUT, None, customer_id or None, Mode.PAYMENT, "complete", "paid", None,
            tuple(LineItem(r.price, q) for r, q in one_time), as_of))
    snapshot_items = tuple(ItemSnapshot(f"si_preview_{n}", r.price, q, None, as_of, _end_of(r, as_of))
                           for n, (r, q) in enumerate(recurring))
    subscription = SubscriptionSnapshot(NEW_SUBSCRIPTION, customer_id, Status.ACTIVE, as_of, PREVIEW_EVENT,
                                        snapshot_items, start_date=as_of)
    lines = [InvoiceLine(i.price.price_id, i.quantity, as_of, i.current_period_end or as_of,
                         amount=(i.price.unit_amount or 0) * i.quantity) for i in snapshot_items]
    lines += [InvoiceLine(r.price.price_id, q, as_of, as_of, amount=(r.price.unit_amount or 0) * q)
              for r, q in one_time]
    return Hypothesis(subscription, _paid_invoice(NEW_SUBSCRIPTION, customer_id, lines, as_of))


def _interval(prices: Iterable[tuple[str | None, int | None]]) -> tuple[str | None, int] | None:
    first = next(iter(prices), None)
    return None if first is None else (first[0], first[1] or 1)


def new_items(latest: SubscriptionSnapshot, items: Sequence[tuple[ResolvedPrice, int]], book: PriceBook,
              as_of: datetime) -> Hypothesis:
    """The subscription with exactly `items` (recurring prices) from `as_of` (the module docstring
    says how items and periods carry over). The billing interval it has is read from the catalog
    (`book`), a snapshot's own price naming only its id."""
    wanted = {r.price_id for r, _ in items}
    held = {i.price.price_id: i for i in latest.items}
    spare = [i for i in latest.items if i.price.price_id not in wanted]
    first = latest.items[0] if latest.items else None
    held_prices = [book.at(i.price.price_id, as_of) for i in latest.items]
    before = _interval((r.price.interval, r.price.interval_count) if r else (i.price.interval, i.price.interval_count)
                       for i, r in zip(latest.items, held_prices, strict=True))
    after = _interval((r.price.interval, r.price.interval_count) for r, _ in items)
    restart = before != after
    changed: list[ItemSnapshot] = []
    for n, (resolved, quantity) in enumerate(items):
        base = held.get(resolved.price_id) or (spare.pop(0) if spare else None)
        item_id = base.item_id if base else f"si_preview_{n}"
        period = base or first
        start = period.current_period_start if period else as_of
        end = period.current_period_end if period else _end_of(resolved, as_of)
        if restart:
            start, end = as_of, _end_of(resolved, as_of)
        changed.append(ItemSnapshot(item_id, resolved.price, quantity, None, start, end))
    snapshot = replace(latest, at=as_of, event_id=PREVIEW_EVENT, items=tuple(changed), refetched=False)
    if not restart or latest.status is Status.TRIALING:
        return Hypothesis(snapshot)
    lines = [InvoiceLine(i.price.price_id, i.quantity, as_of, i.current_period_end or as_of,
                         amount=(i.price.unit_amount or 0) * i.quantity) for i in changed]
    invoice = replace(_paid_invoice(latest.subscription_id, latest.provider_customer_id, lines, as_of),
                      billing_reason="subscription_update")
    return Hypothesis(snapshot, invoice)


def cancel_at_period_end(latest: SubscriptionSnapshot, as_of: datetime) -> Hypothesis:
    """The subscription set to end at its current period's end, from `as_of`."""
    return Hypothesis(replace(latest, at=as_of, event_id=PREVIEW_EVENT, cancel_at_period_end=True,
                              cancel_at=latest.current_period_end, canceled_at=as_of, refetched=False))


def cancel_now(latest: SubscriptionSnapshot, as_of: datetime) -> Hypothesis:
    """The subscription ended at `as_of`."""
    return Hypothesis(replace(latest, at=as_of, event_id=PREVIEW_EVENT, status=Status.CANCELED, ended_at=as_of,
                              canceled_at=latest.canceled_at or as_of, refetched=False))


@dataclass(frozen=True)
class Previewed:
    """An account's derived rows with a hypothesis in its history: what its stored rows would be."""

    state: AccountState
    subscriptions: tuple[SubscriptionRecord, ...]  # by subscription id
    items: tuple[ItemRow, ...]  # by subscription id, then price id
    funding: tuple[IssuedGrantRecord, ...]  # by issue time, then issue key

    @property
    def assignments(self) -> tuple[PlacedAssignment, ...]:
        return self.state.assignments

    @property
    def bindings(self) -> tuple[PlacedBinding, ...]:
        return self.state.bindings


def issued_record(issue: Issue) -> IssuedGrantRecord:
    """An issue as its stored row reads back."""
    return IssuedGrantRecord(issue.issue_key, issue.grant_program_code, issue.cadence, issue.unit, issue.amount,
                             issue.subscription_id, issue.invoice_id, issue.checkout_session_id, issue.period,
                             issue.issued_at)


def current_state(history: Iterable[object], book: PriceBook, config: CatalogConfig) -> AccountState:
    """The account's derivation from its history alone."""
    subscriptions, _ = history_of(history)
    return rebuild(subscriptions, book, config)


def derive(history: Sequence[object], hypothesis: Hypothesis, book: PriceBook, config: CatalogConfig,
           issued: Iterable[IssuedGrantRecord], account_id: str) -> Previewed:
    """The account derived whole from its history (the stored snapshots' objects, in their stored
    order) with the hypothesis's objects after it: the rows a derivation would store, every issue
    already held kept and the new ones added."""
    added = [obj for obj in (hypothesis.subscription, hypothesis.invoice) if obj is not None]
    subscriptions, invoices = history_of([*history, *added])
    state = rebuild(subscriptions, book, config)
    held = tuple(issued)
    issues = funding(state, invoices, book, config.grant_programs, held)
    session = hypothesis.checkout
    if session is not None:
        prices = book.in_force([line.price.price_id for line in session.line_items], session.at)
        keys = {i.issue_key for i in held}
        issues += [i for i in checkout_issues(session, prices, config.grant_programs) if i.issue_key not in keys]
    records = sorted([*held, *(issued_record(i) for i in issues)], key=lambda r: (r.issued_at, r.issue_key))
    return Previewed(
        state=state,
        subscriptions=tuple(sorted((SubscriptionRecord.of(d.latest, account_id, d.subscription_group, d.group_mismatch)
                                    for d in state.subscriptions), key=lambda s: s.subscription_id)),
        items=tuple(sorted(state.items, key=lambda i: (i.subscription_id, i.price_id))),
        funding=tuple(records),
    )


@dataclass(frozen=True)
class Standing:
    """What holds for an account at one instant, as a comparison reads it."""

    plans: tuple[PlacedAssignment, ...]
    bindings: tuple[PlacedBinding, ...]
    funding: tuple[IssuedGrantRecord, ...]
    gate_bundle: str | None
    gates: frozenset[str]


@dataclass(frozen=True)
class Changes:
    gates_gained: tuple[str, ...]
    gates_lost: tuple[str, ...]
    plans_added: tuple[PlacedAssignment, ...]
    plans_removed: tuple[PlacedAssignment, ...]
    plans_changed: tuple[PlacedAssignment, ...]
    bindings_added: tuple[PlacedBinding, ...]
    bindings_removed: tuple[PlacedBinding, ...]
    funding_added: tuple[IssuedGrantRecord, ...]
    gate_bundle_before: str | None
    gate_bundle_after: str | None


def _plan_key(p: PlacedAssignment) -> tuple[str, str, str]:
    return (p.row.subscription_id, p.row.price_id, p.row.billing_plan_code)


def _binding_key(p: PlacedBinding) -> tuple[object, ...]:
    r = p.row
    return (r.subscription_id, r.price_id, r.grant_program_code, r.amount, r.scale_by_quantity, r.quantity, p.window)


def differences(before: Standing, after: Standing) -> Changes:
    """What differs between two standings: gates by name; plans by subscription, price and plan
    (one in both whose window or conflict differs is changed, listed as it is after); bindings by
    everything they grant and their window; funding by issue key."""
    old_plans = {_plan_key(p): p for p in before.plans}
    new_plans = {_plan_key(p): p for p in after.plans}
    old_bindings = {_binding_key(b) for b in before.bindings}
    new_bindings = {_binding_key(b) for b in after.bindings}
    issued = {f.issue_key for f in before.funding}
    return Changes(
        gates_gained=tuple(sorted(after.gates - before.gates)),
        gates_lost=tuple(sorted(before.gates - after.gates)),
        plans_added=tuple(p for k, p in new_plans.items() if k not in old_plans),
        plans_removed=tuple(p for k, p in old_plans.items() if k not in new_plans),
        plans_changed=tuple(p for k, p in new_plans.items()
                            if k in old_plans and (old_plans[k].window, old_plans[k].conflict_with)
                            != (p.window, p.conflict_with)),
        bindings_added=tuple(b for b in after.bindings if _binding_key(b) not in old_bindings),
        bindings_removed=tuple(b for b in before.bindings if _binding_key(b) not in new_bindings),
        funding_added=tuple(f for f in after.funding if f.issue_key not in issued),
        gate_bundle_before=before.gate_bundle,
        gate_bundle_after=after.gate_bundle,
    )
