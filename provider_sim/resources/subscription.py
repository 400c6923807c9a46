"""`subscription` and `subscription_item` objects.

Current shape: billing periods on each item. Legacy shape (API versions before 2025-03-31):
periods, `plan` and `quantity` on the subscription, none on the items."""

from __future__ import annotations

from provider_sim.model import Json, Subscription, SubscriptionItem
from provider_sim.resources.lists import list_object
from provider_sim.resources.price import render_plan, render_price
from provider_sim.store import State
from provider_sim.versions import Shape


def render_subscription_item(state: State, item: SubscriptionItem, subscription_id: str,
                             shape: Shape = Shape.CURRENT) -> Json:
    price = state.prices[item.price]
    rendered: Json = {
        "id": item.id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": item.created,
        "current_trial": None,
        "discounts": [],
        "metadata": dict(item.metadata),
        "plan": render_plan(price),
        "price": render_price(price),
        "quantity": item.quantity,
        "subscription": subscription_id,
        "tax_rates": [],
    }
    if shape is Shape.CURRENT:
        rendered["current_period_start"] = item.current_period_start
        rendered["current_period_end"] = item.current_period_end
    return rendered


def _fixed_fields(sub: Subscription) -> Json:
    """Fields this simulator never varies: no taxes, discounts, schedules or Connect."""
    return {
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor_config": None,
        "billing_mode": {"type": "classic", "flexible": None},
        "billing_schedules": [],
        "billing_thresholds": None,
        "collection_method": "charge_automatically",
        "customer_account": None,
        "days_until_due": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "invoice_settings": {"account_tax_ids": None, "custom_fields": None, "description": None,
                             "footer": None, "issuer": {"type": "self"}},
        "livemode": False,
        "managed_payments": {"enabled": False},
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                             "save_default_payment_method": "off"},
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "test_clock": None,
        "transfer_data": None,
        "trial_settings": {"end_behavior": {"billing_cycle_anchor": None, "missing_payment_method": "create_invoice"}},
    }


def render_subscription(state: State, sub: Subscription, shape: Shape = Shape.CURRENT) -> Json:
    items = [render_subscription_item(state, item, sub.id, shape) for item in sub.items]
    rendered: Json = {
        "id": sub.id,
        "object": "subscription",
        **_fixed_fields(sub),
        "billing_cycle_anchor": sub.billing_cycle_anchor,
        "cancel_at": sub.cancel_at,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "canceled_at": sub.canceled_at,
        "cancellation_details": {"comment": None, "feedback": None, "feedback_option": None,
                                 "reason": sub.cancellation_reason},
        "created": sub.created,
        "currency": sub.currency,
        "customer": sub.customer,
        "default_payment_method": sub.default_payment_method,
        "ended_at": sub.ended_at,
        "items": list_object(items, f"/v1/subscription_items?subscription={sub.id}"),
        "latest_invoice": sub.latest_invoice,
        "metadata": dict(sub.metadata),
        "start_date": sub.created,
        "status": sub.status,
        "trial_end": sub.trial_end,
        "trial_start": sub.trial_start,
    }
    if shape is Shape.LEGACY:
        first = sub.items[0]
        single = len(sub.items) == 1
        rendered["current_period_start"] = first.current_period_start
        rendered["current_period_end"] = first.current_period_end
        rendered["plan"] = render_plan(state.prices[first.price]) if single else None
        rendered["quantity"] = first.quantity if single else None
    return rendered
