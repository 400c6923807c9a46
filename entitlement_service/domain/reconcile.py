"""Comparing the provider's present view of a subscription with the state held for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from entitlement_service.domain.model import Status
from entitlement_service.domain.provider import SubscriptionSnapshot


@dataclass(frozen=True)
class HeldSubscription:
    """What is stored for a subscription: its latest status and the items holding now."""

    status: Status
    cancel_at_period_end: bool
    cancel_at: datetime | None
    items: frozenset[tuple[str, int]]


@dataclass(frozen=True)
class Difference:
    kind: str
    diff: dict[str, Any]


def _provider_items(snapshot: SubscriptionSnapshot) -> frozenset[tuple[str, int]]:
    return frozenset((i.price.price_id, i.quantity) for i in snapshot.items)


def difference(held: HeldSubscription | None, provider: SubscriptionSnapshot) -> Difference | None:
    """The first way the held state differs from the provider's, or None when they agree.
    Items are only compared while the subscription lives: an ended one keeps its last items."""
    if held is None:
        return Difference("missing_subscription", {"provider": {"status": provider.status.value,
                                                                "items": sorted(_provider_items(provider))}})
    if held.status is not provider.status:
        return Difference("status_differs", {"provider": provider.status.value, "internal": held.status.value})
    ended = provider.status in (Status.CANCELED, Status.INCOMPLETE_EXPIRED)
    if not ended and held.items != _provider_items(provider):
        return Difference("items_differ", {"provider": sorted(_provider_items(provider)),
                                           "internal": sorted(held.items)})
    if (held.cancel_at_period_end, held.cancel_at) != (provider.cancel_at_period_end, provider.cancel_at):
        return Difference("cancellation_differs", {
            "provider": {"cancel_at_period_end": provider.cancel_at_period_end,
                         "cancel_at": provider.cancel_at.isoformat() if provider.cancel_at else None},
            "internal": {"cancel_at_period_end": held.cancel_at_period_end,
                         "cancel_at": held.cancel_at.isoformat() if held.cancel_at else None}})
    return None
