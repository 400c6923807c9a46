"""An account's whole derived state: every subscription's history with precedence applied
between subscriptions that claim one non-stackable group at the same time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from catalog_rules.model import CatalogConfig, GrantProgram, ResolvedPrice
from entitlement_service.domain.funding import Issue, invoice_issues
from entitlement_service.domain.precedence import Claim, Loss, losses, split_by_losses
from entitlement_service.domain.price_book import PriceBook
from entitlement_service.domain.provider import InvoiceSnapshot, SubscriptionSnapshot
from entitlement_service.domain.timeline import AssignmentRow, BindingRow, Derived, Earlier, ItemRow, derive
from entitlement_service.domain.windows import Window

if TYPE_CHECKING:
    from entitlement_service.domain.records import IssuedGrantRecord

R = TypeVar("R", AssignmentRow, BindingRow)


@dataclass(frozen=True)
class Placed(Generic[R]):
    """A derived row over one window of its life, marked with the winner when it lost its group
    there."""

    row: R
    window: Window
    conflict_with: str | None = None

    @property
    def conflict(self) -> bool:
        return self.conflict_with is not None


PlacedAssignment = Placed[AssignmentRow]
PlacedBinding = Placed[BindingRow]


@dataclass(frozen=True)
class AccountState:
    subscriptions: tuple[Derived, ...]
    items: tuple[ItemRow, ...]
    assignments: tuple[PlacedAssignment, ...]
    bindings: tuple[PlacedBinding, ...]
    # Per (subscription, group): the windows it lost to another subscription.
    lost: dict[tuple[str, str], list[Loss]]

    def lost_at_start(self, subscription_id: str) -> str | None:
        """The winner, when the subscription lost its group at the instant it first took effect."""
        derived = next((d for d in self.subscriptions if d.latest.subscription_id == subscription_id), None)
        if derived is None or not derived.claims:
            return None
        first = min(derived.claims, key=lambda c: c.window.start)
        for loss in self.lost.get((subscription_id, first.subscription_group), []):
            if loss.window.contains(first.window.start):
                return loss.winner
        return None


def history_of(objects: Iterable[object]) -> tuple[dict[str, list[SubscriptionSnapshot]], list[InvoiceSnapshot]]:
    """An account's history as derivation reads it: each subscription's snapshots, in the order
    given, and the invoices; any other object takes no part."""
    subscriptions: dict[str, list[SubscriptionSnapshot]] = {}
    invoices: list[InvoiceSnapshot] = []
    for obj in objects:
        if isinstance(obj, SubscriptionSnapshot):
            subscriptions.setdefault(obj.subscription_id, []).append(obj)
        elif isinstance(obj, InvoiceSnapshot):
            invoices.append(obj)
    return subscriptions, invoices


def funding(state: AccountState, invoices: Iterable[InvoiceSnapshot], prices: PriceBook | Mapping[str, ResolvedPrice],
            programs: Mapping[str, GrantProgram], issued: Iterable[IssuedGrantRecord],
            since: datetime | None = None) -> list[Issue]:
    """The issues the paid invoices of the account's subscriptions call for that `issued` does not
    hold yet, a period lost to another subscription funding nothing (domain/funding.py)."""
    known = [d.latest.subscription_id for d in state.subscriptions]
    return invoice_issues(invoices, prices, programs, known, state.lost, issued, since)


def rebuild(
    histories: Mapping[str, list[SubscriptionSnapshot]], prices: PriceBook | Mapping[str, ResolvedPrice],
    config: CatalogConfig, earlier: Mapping[str, Earlier] | None = None, since: datetime | None = None,
) -> AccountState:
    """Derives each subscription, then in every non-stackable group keeps exactly one holder at any
    instant: the losers' assignments and bindings over the lost windows are kept but marked with
    the winner, and grant nothing.

    With `since`, each history holds the snapshots from the last one before `since` on (`earlier`
    says what came before, per subscription whose history is partial), and the claims, assignments
    and bindings are what holds from `since` on. Precedence at an instant depends only on the
    claims at that instant, so those are exact; items are each price's latest run in what was given."""
    earlier = earlier or {}
    derived = [derive(snaps, prices, config.plans, earlier.get(sub)) for sub, snaps in sorted(histories.items())
               if snaps]
    claims = [replace(c, window=w) for d in derived for c in d.claims if (w := c.window.since(since)) is not None]
    lost = _losses_by_subscription_and_group(claims, config)
    assignments: list[PlacedAssignment] = []
    bindings: list[PlacedBinding] = []
    for d in derived:
        for a in d.assignments:
            for window, winner in _placed(a.window, since, lost.get((a.subscription_id, a.subscription_group), [])):
                assignments.append(Placed(a, window, winner))
        for b in d.bindings:
            for window, winner in _placed(b.window, since, lost.get((b.subscription_id, b.subscription_group), [])):
                bindings.append(Placed(b, window, winner))
    return AccountState(
        subscriptions=tuple(derived),
        items=tuple(i for d in derived for i in d.items),
        assignments=tuple(assignments),
        bindings=tuple(bindings),
        lost=lost,
    )


def _placed(window: Window, since: datetime | None, lost: list[Loss]) -> list[tuple[Window, str | None]]:
    held = window.since(since)
    return split_by_losses(held, lost) if held is not None else []


def _losses_by_subscription_and_group(claims: list[Claim], config: CatalogConfig) -> dict[tuple[str, str], list[Loss]]:
    by_group: dict[str, list[Claim]] = {}
    for claim in claims:
        by_group.setdefault(claim.subscription_group, []).append(claim)
    found: dict[tuple[str, str], list[Loss]] = {}
    for group, group_claims in by_group.items():
        known = config.groups.get(group)
        if known is not None and known.stackable:
            continue
        for subscription_id, lost in losses(group_claims).items():
            found[(subscription_id, group)] = lost
    return found
