"""One open checkout per account and non-stackable group: a second checkout into the group while
a purchase into it is still open answers that purchase when it is for the same selection, and is
refused, naming it, when it is for another."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from catalog_rules.model import CatalogConfig
from entitlement_service.domain.model import Mode, PurchaseState
from entitlement_service.domain.records import PurchaseRecord

OPEN_STATES = frozenset({PurchaseState.PENDING, PurchaseState.RETURNED})

# A selection as prices and quantities: each item's price resolved to its provider price id where
# the catalog knows it, in a canonical order.
Selection = tuple[tuple[str, int], ...]


class Decision(StrEnum):
    NEW = "new"  # no open purchase stands in the way: register the new one
    REUSE = "reuse"  # an open purchase of the same selection: answer it instead
    REFUSE = "refuse"  # an open purchase of another selection: refuse, naming it


@dataclass(frozen=True)
class OpenCheckout:
    decision: Decision
    open_purchase: PurchaseRecord | None = None


def selection_of(items: Iterable[tuple[str, int]], price_ids: Mapping[str, str]) -> Selection:
    """Items as (price id, quantity), sorted; a reference the catalog does not resolve stays as given."""
    return tuple(sorted((price_ids.get(ref, ref), quantity) for ref, quantity in items))


def is_open(purchase: PurchaseRecord, now: datetime) -> bool:
    """Pending or returned, and its checkout session not expired: the customer can still pay it."""
    return purchase.state in OPEN_STATES and purchase.expires_at > now


def guarded(config: CatalogConfig, mode: Mode, subscription_group: str | None) -> bool:
    """Only a subscription checkout into a configured non-stackable group is held to one open
    purchase; a one-time payment and a stackable group are not."""
    group = config.groups.get(subscription_group or "")
    return mode is Mode.SUBSCRIPTION and group is not None and not group.stackable


def open_checkout(purchase_id: str, selection: Selection, candidates: Iterable[PurchaseRecord],
                  selections: Mapping[str, Selection], now: datetime) -> OpenCheckout:
    """Among `candidates` (the account's purchases in the group, `selections` giving each one's
    selection), the oldest open one other than `purchase_id` decides: the same selection is
    reused, another is refused. The purchase itself, registered again, is never in its own way."""
    opened = sorted((p for p in candidates if p.purchase_id != purchase_id and is_open(p, now)),
                    key=lambda p: (p.created_at, p.purchase_id))
    if not opened:
        return OpenCheckout(Decision.NEW)
    first = opened[0]
    if selections.get(first.purchase_id) == selection:
        return OpenCheckout(Decision.REUSE, first)
    return OpenCheckout(Decision.REFUSE, first)
