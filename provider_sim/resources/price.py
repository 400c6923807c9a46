"""`price` objects, and the legacy `plan` view of a recurring price."""

from __future__ import annotations

from provider_sim.model import Json, Price


def render_price(price: Price) -> Json:
    recurring = None
    if price.interval:
        recurring = {"interval": price.interval, "interval_count": price.interval_count, "meter": None,
                     "trial_period_days": price.trial_period_days, "usage_type": "licensed"}
    return {
        "id": price.id,
        "object": "price",
        "active": price.active,
        "billing_scheme": "per_unit",
        "created": price.created,
        "currency": price.currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": price.lookup_key,
        "metadata": dict(price.metadata),
        "nickname": price.nickname,
        "product": price.product,
        "recurring": recurring,
        "tax_behavior": price.tax_behavior,
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if price.interval else "one_time",
        "unit_amount": price.unit_amount,
        "unit_amount_decimal": str(price.unit_amount),
    }


def render_plan(price: Price) -> Json:
    """What older API versions (and still every subscription item) call a plan."""
    return {
        "id": price.id,
        "object": "plan",
        "active": price.active,
        "amount": price.unit_amount,
        "amount_decimal": str(price.unit_amount),
        "billing_scheme": "per_unit",
        "created": price.created,
        "currency": price.currency,
        "interval": price.interval,
        "interval_count": price.interval_count,
        "livemode": False,
        "metadata": dict(price.metadata),
        "meter": None,
        "nickname": price.nickname,
        "product": price.product,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": price.trial_period_days,
        "usage_type": "licensed",
    }
