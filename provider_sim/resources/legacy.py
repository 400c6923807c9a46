"""The legacy shape's fields that differ from the current shape beyond what each renderer changes.

An object rendered for an API version before 2025-03-31 has the fields Stripe's published types for
that version (2025-02-24.acacia) give it: it lacks the fields added since, and keeps the ones
2025-03-31 removed. Each field is named by the kind of object holding it (its `object`) and its path
inside that object, wherever the object appears (nested in another, in a list, in an event)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from provider_sim.model import Json

# Fields added after 2025-02-24.acacia.
ADDED_SINCE = frozenset({
    ("charge", "billing_details.tax_id"),
    ("charge", "payment_method_details.card.electronic_commerce_indicator"),
    ("charge", "payment_method_details.card.transaction_link_id"),
    ("checkout.session", "allowed_payment_method_types"),
    ("checkout.session", "automatic_tax.provider"),
    ("checkout.session", "collected_information.business_name"),
    ("checkout.session", "collected_information.individual_name"),
    ("checkout.session", "customer_account"),
    ("checkout.session", "customer_details.business_name"),
    ("checkout.session", "customer_details.individual_name"),
    ("checkout.session", "integration_identifier"),
    ("checkout.session", "managed_payments"),
    ("checkout.session", "origin_context"),
    ("checkout.session", "permissions"),
    ("checkout.session", "wallet_options"),
    ("invoice", "amount_overpaid"),
    ("invoice", "automatic_tax.provider"),
    ("invoice", "customer_account"),
    ("invoice", "total_taxes"),
    ("line_item", "quantity_decimal"),
    ("line_item", "subtotal"),
    ("line_item", "taxes"),
    ("product", "tax_details"),
    ("refund", "customer"),
    ("refund", "customer_account"),
    ("refund", "payment_method"),
    ("subscription", "billing_mode"),
    ("subscription", "billing_schedules"),
    ("subscription", "cancellation_details.feedback_option"),
    ("subscription", "customer_account"),
    ("subscription", "invoice_settings.custom_fields"),
    ("subscription", "invoice_settings.description"),
    ("subscription", "invoice_settings.footer"),
    ("subscription", "managed_payments"),
    ("subscription", "trial_settings.end_behavior.billing_cycle_anchor"),
    ("subscription_item", "current_trial"),
})
# Fields removed since 2025-02-24.acacia, each with its value here, from the object holding it.
REMOVED_SINCE: dict[tuple[str, str], Callable[[Json], Any]] = {
    ("checkout.session", "shipping_details"): lambda _: None,
    ("invoice", "application_fee_amount"): lambda _: None,
    ("invoice", "discount"): lambda _: None,
    ("invoice", "paid_out_of_band"): lambda _: False,
    ("invoice", "quote"): lambda _: None,
    ("invoice", "tax"): lambda _: None,
    ("invoice", "total_tax_amounts"): lambda _: [],
    ("invoice", "transfer_data"): lambda _: None,
    ("line_item", "amount_excluding_tax"): lambda line: line["amount"],
    ("line_item", "proration_details"): lambda _: {"credited_items": None},
    ("line_item", "tax_amounts"): lambda _: [],
    ("line_item", "tax_rates"): lambda _: [],
    ("line_item", "unit_amount_excluding_tax"): lambda line: (
        line["price"]["unit_amount_decimal"] if isinstance(line.get("price"), dict) else None),
    ("plan", "aggregate_usage"): lambda _: None,
    ("price", "recurring.aggregate_usage"): lambda _: None,
    ("subscription", "discount"): lambda _: None,
}


def to_legacy(value: Any, kind: str = "", path: str = "", holder: Json | None = None) -> Any:
    """The legacy view of a rendered object, at any depth (`holder`: the object `value` is in)."""
    if isinstance(value, list):
        return [to_legacy(item, kind, path, holder) for item in value]
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("object"), str):
        kind, path, holder = value["object"], "", value
    out: Json = {}
    for key, item in value.items():
        field = f"{path}.{key}" if path else key
        if (kind, field) not in ADDED_SINCE:
            out[key] = to_legacy(item, kind, field, holder)
    for (owner, field), value_of in REMOVED_SINCE.items():
        parent, _, name = field.rpartition(".")
        if owner == kind and parent == path and name not in out and holder is not None:
            out[name] = value_of(holder)
    return out
