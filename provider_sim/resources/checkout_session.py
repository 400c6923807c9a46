"""`checkout.session` objects and their line items (`item` objects)."""

from __future__ import annotations

from provider_sim.model import CheckoutSession, Json, SessionLine
from provider_sim.resources.price import render_price
from provider_sim.store import State


def render_session_line(state: State, line: SessionLine) -> Json:
    price = state.prices[line.price]
    amount = price.unit_amount * line.quantity
    return {
        "id": line.id,
        "object": "item",
        "adjustable_quantity": None,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price.currency,
        "description": state.products[price.product].name if price.product in state.products else None,
        "metadata": {},
        "price": render_price(price),
        "quantity": line.quantity,
    }


def session_total(state: State, session: CheckoutSession) -> int:
    return sum(state.prices[line.price].unit_amount * line.quantity for line in session.line_items)


def _customer_details(state: State, session: CheckoutSession) -> Json | None:
    if session.status != "complete":
        return None
    customer = state.customers.get(session.customer or "")
    email = customer.email if customer else session.customer_email
    return {"address": None, "business_name": None, "email": email, "individual_name": None,
            "name": customer.name if customer else None, "phone": None, "tax_exempt": "none", "tax_ids": []}


def _fixed_fields() -> Json:
    """Fields this simulator never varies: no taxes, shipping, promotions or custom fields."""
    return {
        "adaptive_pricing": {"enabled": False}, "after_expiration": None, "allow_promotion_codes": None,
        "allowed_payment_method_types": None,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None, "client_secret": None, "consent": None, "consent_collection": None,
        "currency_conversion": None, "custom_fields": [], "custom_text": {
            "after_submit": None, "shipping_address": None, "submit": None, "terms_of_service_acceptance": None},
        "customer_account": None, "discounts": [], "integration_identifier": None, "livemode": False,
        "locale": None, "managed_payments": {"enabled": False}, "origin_context": None, "payment_link": None,
        "payment_method_configuration_details": None, "payment_method_options": {},
        "payment_method_types": ["card"], "permissions": None, "phone_number_collection": {"enabled": False},
        "recovered_from": None, "saved_payment_method_options": None, "setup_intent": None,
        "shipping_address_collection": None, "shipping_cost": None, "shipping_options": [], "submit_type": None,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}, "ui_mode": "hosted",
        "wallet_options": None,
    }


def render_checkout_session(state: State, session: CheckoutSession) -> Json:
    total = session_total(state, session)
    complete = session.status == "complete"
    invoice_creation = None
    if session.mode == "payment":
        invoice_creation = {"enabled": False, "invoice_data": {
            "account_tax_ids": None, "custom_fields": None, "description": None, "footer": None,
            "issuer": None, "metadata": {}, "rendering_options": None}}
    return {
        "id": session.id, "object": "checkout.session", **_fixed_fields(),
        "amount_subtotal": total, "amount_total": total, "cancel_url": session.cancel_url,
        "client_reference_id": session.client_reference_id,
        "collected_information": ({"business_name": None, "individual_name": None, "shipping_details": None}
                                  if complete else None),
        "created": session.created, "currency": session.currency, "customer": session.customer,
        "customer_creation": session.customer_creation, "customer_details": _customer_details(state, session),
        "customer_email": session.customer_email, "expires_at": session.expires_at, "invoice": session.invoice,
        "invoice_creation": invoice_creation, "metadata": dict(session.metadata), "mode": session.mode,
        "payment_intent": session.payment_intent,
        "payment_method_collection": "always" if session.mode == "subscription" else None,
        "payment_status": session.payment_status, "status": session.status,
        "subscription": session.subscription, "success_url": session.success_url,
        # Stripe shows the hosted page's address only while the session can still be paid.
        "url": session.url if session.status == "open" else None,
    }
