"""Changes to a live subscription, through the API (`POST /v1/subscriptions/{id}`) or the portal:
items, prices, quantities, cancel at period end, resume, cancel now, metadata.

Each request is validated whole before anything changes, then emits one
`customer.subscription.updated` with `previous_attributes` (or `.deleted` when canceled now)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from provider_sim.billing import bill_change, end_subscription, new_item, restart_cycle
from provider_sim.errors import bad_state, invalid, missing, no_such
from provider_sim.events import Ctx, emit, snapshot
from provider_sim.model import Price, Subscription, SubscriptionItem
from provider_sim.params import MetadataPatch
from provider_sim.store import find

PORTAL_ACTIONS = ("change_price", "change_quantity", "cancel_at_period_end", "resume", "cancel_now")


@dataclass(frozen=True)
class ItemChange:
    param: str
    id: str | None = None
    price: str | None = None
    quantity: int | None = None
    deleted: bool = False
    metadata: MetadataPatch | None = None


@dataclass(frozen=True)
class SubscriptionUpdate:
    items: list[ItemChange] = field(default_factory=list)
    cancel_at_period_end: bool | None = None
    metadata: MetadataPatch | None = None
    proration_behavior: str = "create_prorations"  # create_prorations | always_invoice | none
    proration_date: int | None = None  # the moment prorations are counted from; default: now


def recurring_price(ctx: Ctx, price_id: str, param: str) -> Price:
    price = find(ctx.state.prices, price_id, "price", param=param)
    if not price.active:
        raise bad_state("The price specified is inactive. This field only accepts active prices.", param=param)
    if not price.recurring:
        raise bad_state("The price specified is set to `type=one_time` but this field only accepts prices with "
                        "`type=recurring`.", param=param)
    return price


def _changed_item(ctx: Ctx, items: list[SubscriptionItem], change: ItemChange) -> None:
    index = next((i for i, item in enumerate(items) if item.id == change.id), None)
    if index is None:
        raise no_such("subscription item", str(change.id), param=f"{change.param}[id]")
    if change.deleted:
        del items[index]
        return
    item = items[index]
    if change.price:
        item.price = recurring_price(ctx, change.price, f"{change.param}[price]").id
    if change.quantity is not None:
        item.quantity = change.quantity
    if change.metadata:
        item.metadata = change.metadata.apply(item.metadata)


def _check_items(ctx: Ctx, items: list[SubscriptionItem]) -> None:
    if not items:
        raise bad_state("A subscription must keep at least one item.", param="items")
    prices = [ctx.state.prices[item.price] for item in items]
    if len({p.id for p in prices}) < len(prices):
        raise bad_state("Cannot add multiple subscription items with the same price.", param="items")
    if len({(p.currency, p.interval, p.interval_count) for p in prices}) > 1:
        raise bad_state("Currency and interval fields must match across all plans on this subscription.",
                        param="items")


def planned_items(ctx: Ctx, sub: Subscription, changes: list[ItemChange]) -> list[SubscriptionItem]:
    """The subscription's items after `changes`, validated; the subscription itself is untouched."""
    items = [replace(item, metadata=dict(item.metadata)) for item in sub.items]
    for change in changes:
        if change.id:
            _changed_item(ctx, items, change)
        elif change.deleted:
            raise missing(f"{change.param}[id]")
        elif not change.price:
            raise missing(f"{change.param}[price]")
        else:
            price = recurring_price(ctx, change.price, f"{change.param}[price]")
            added = new_item(ctx, sub, price, change.quantity or 1)
            added.metadata = change.metadata.apply({}) if change.metadata else {}
            items.append(added)
    _check_items(ctx, items)
    return items


def _set_cancel_at_period_end(ctx: Ctx, sub: Subscription, flag: bool) -> None:
    if flag == sub.cancel_at_period_end:
        return
    sub.cancel_at_period_end = flag
    sub.cancel_at = sub.period_end if flag else None
    sub.canceled_at = ctx.now if flag else None
    sub.cancellation_reason = "cancellation_requested" if flag else None


def _check_proration_date(sub: Subscription, proration_date: int | None) -> None:
    """A proration date must fall within the subscription's current period."""
    if proration_date is None or not sub.items:
        return
    start, end = sub.items[0].current_period_start, sub.items[0].current_period_end
    if not start <= proration_date <= end:
        raise invalid("proration_date", f"The proration_date must be within the current billing period "
                      f"({start} to {end}).")


def update_subscription(ctx: Ctx, sub: Subscription, update: SubscriptionUpdate) -> None:
    if not sub.live and (update.items or update.cancel_at_period_end is not None):
        raise bad_state(f"A {sub.status} subscription can only update its cancellation_details and metadata.")
    _check_proration_date(sub, update.proration_date)
    items = planned_items(ctx, sub, update.items) if update.items else sub.items
    before = snapshot(ctx.state, "subscription", sub.id)
    held = sub.items
    sub.items = items
    # A new billing interval starts its period now: the event already shows it.
    restarted = restart_cycle(ctx, sub, held) if update.items else False
    if update.cancel_at_period_end is not None:
        _set_cancel_at_period_end(ctx, sub, update.cancel_at_period_end)
    if update.metadata:
        sub.metadata = update.metadata.apply(sub.metadata)
    emit(ctx, "customer.subscription.updated", "subscription", sub.id, before=before)
    if update.items:
        bill_change(ctx, sub, held, update.proration_behavior, restarted, update.proration_date)


def cancel_now(ctx: Ctx, sub: Subscription) -> None:
    if sub.status in ("canceled", "incomplete_expired"):
        raise bad_state(f"The subscription {sub.id} has already been canceled.")
    end_subscription(ctx, sub)


def _only_item(sub: Subscription, item_id: str | None) -> str:
    if item_id:
        return item_id
    if len(sub.items) != 1:
        raise missing("item")
    return sub.items[0].id


def portal_action(ctx: Ctx, sub: Subscription, action: str, *, price: str | None = None,
                  quantity: int | None = None, item: str | None = None,
                  proration_behavior: str = "create_prorations") -> None:
    """What a customer does in the hosted portal; emits exactly what the equivalent API call emits.
    `proration_behavior` stands for the portal's configuration of how changes are billed."""
    if action == "cancel_now":
        cancel_now(ctx, sub)
        return
    update = SubscriptionUpdate(cancel_at_period_end={"cancel_at_period_end": True, "resume": False}.get(action))
    if action == "change_price":
        if not price:
            raise missing("price")
        update = SubscriptionUpdate(items=[ItemChange("item", id=_only_item(sub, item), price=price)],
                                    proration_behavior=proration_behavior)
    elif action == "change_quantity":
        if quantity is None:
            raise missing("quantity")
        update = SubscriptionUpdate(items=[ItemChange("item", id=_only_item(sub, item), quantity=quantity)],
                                    proration_behavior=proration_behavior)
    update_subscription(ctx, sub, update)
