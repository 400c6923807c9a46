"""`invoice` objects and their `line_item`s.

Current shape: a line names its price in `pricing.price_details` and its subscription item in
`parent.subscription_item_details`; the invoice names its subscription only in
`parent.subscription_details` (`parent` is null on an invoice of no subscription), and its payments
are `invoice_payment` objects (`expand[]=payments`). Legacy shape: `price`, `plan`,
`subscription_item` and `type` on the line, and `subscription`, `subscription_details`, `paid`,
`payment_intent` and `charge` on the invoice."""

from __future__ import annotations

from provider_sim.model import Invoice, InvoiceLine, Json
from provider_sim.resources.lists import list_object
from provider_sim.resources.price import render_plan, render_price
from provider_sim.store import State
from provider_sim.versions import Shape


def render_invoice_line(state: State, invoice: Invoice, line: InvoiceLine, shape: Shape = Shape.CURRENT) -> Json:
    price = state.prices[line.price]
    rendered: Json = {
        "id": line.id,
        "object": "line_item",
        "amount": line.amount,
        "currency": invoice.currency,
        "description": line.description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice.id,
        "livemode": False,
        "metadata": {},
        "period": {"end": line.period_end, "start": line.period_start},
        "pretax_credit_amounts": [],
        "quantity": line.quantity,
        "quantity_decimal": str(line.quantity),
        "subscription": invoice.subscription,
        "subtotal": line.amount,
        "taxes": [],
    }
    if shape is Shape.CURRENT:
        details = {"invoice_item": None, "proration": line.proration, "proration_details": {"credited_items": None},
                   "subscription": invoice.subscription, "subscription_item": line.subscription_item}
        rendered["parent"] = {"invoice_item_details": None, "subscription_item_details": details,
                              "type": "subscription_item_details"}
        rendered["pricing"] = {"price_details": {"price": price.id, "product": price.product},
                               "type": "price_details", "unit_amount_decimal": str(price.unit_amount)}
    else:
        rendered.update({"price": render_price(price), "plan": render_plan(price) if price.interval else None,
                         "proration": line.proration, "subscription_item": line.subscription_item,
                         "type": "subscription" if line.subscription_item else "invoiceitem"})
    return rendered


def _fixed_fields() -> Json:
    """Fields this simulator never varies: no taxes, discounts, credit notes or Connect."""
    return {
        "account_country": "US", "account_name": "Provider Simulator", "account_tax_ids": None,
        "amount_overpaid": 0, "amount_shipping": 0, "application": None, "automatic_tax": {
            "disabled_reason": None, "enabled": False, "liability": None, "provider": None, "status": None},
        "automatically_finalizes_at": None, "collection_method": "charge_automatically", "custom_fields": None,
        "customer_account": None, "customer_address": None, "customer_phone": None, "customer_shipping": None,
        "customer_tax_exempt": "none", "customer_tax_ids": [], "default_payment_method": None,
        "default_source": None, "default_tax_rates": [], "description": None, "discounts": [], "due_date": None,
        "footer": None, "from_invoice": None, "invoice_pdf": None, "issuer": {"type": "self"},
        "last_finalization_error": None, "latest_revision": None, "livemode": False, "metadata": {},
        "next_payment_attempt": None, "on_behalf_of": None, "payment_settings": {
            "default_mandate": None, "payment_method_options": None, "payment_method_types": None},
        "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0, "receipt_number": None,
        "rendering": None, "shipping_cost": None, "shipping_details": None, "starting_balance": 0,
        "statement_descriptor": None, "test_clock": None, "total_discount_amounts": [],
        "total_pretax_credit_amounts": [], "total_taxes": [],
    }


def render_invoice(state: State, invoice: Invoice, shape: Shape = Shape.CURRENT) -> Json:
    paid = invoice.status == "paid"
    total = invoice.total
    lines = [render_invoice_line(state, invoice, line, shape) for line in invoice.lines]
    rendered: Json = {
        "id": invoice.id, "object": "invoice", **_fixed_fields(),
        "amount_due": invoice.amount_due, "amount_paid": invoice.amount_due if paid else 0,
        "amount_remaining": 0 if paid else invoice.amount_due,
        "attempt_count": invoice.attempt_count, "attempted": invoice.attempt_count > 0,
        "auto_advance": invoice.status not in ("paid", "void"), "billing_reason": invoice.billing_reason,
        "created": invoice.created, "currency": invoice.currency, "customer": invoice.customer,
        "customer_email": invoice.customer_email, "customer_name": invoice.customer_name,
        "effective_at": invoice.finalized_at, "ending_balance": 0 if invoice.finalized_at else None,
        "hosted_invoice_url": None, "lines": list_object(lines, f"/v1/invoices/{invoice.id}/lines"),
        "number": invoice.number, "period_end": invoice.period_end, "period_start": invoice.period_start,
        "status": invoice.status,
        "status_transitions": {"finalized_at": invoice.finalized_at, "marked_uncollectible_at": None,
                               "paid_at": invoice.paid_at, "voided_at": None},
        "subtotal": total, "subtotal_excluding_tax": total,
        "total": total, "total_excluding_tax": total, "webhooks_delivered_at": invoice.created,
    }
    if shape is Shape.CURRENT:
        rendered["parent"] = None
        if invoice.subscription:
            details = {"metadata": dict(invoice.subscription_metadata), "subscription": invoice.subscription}
            rendered["parent"] = {"quote_details": None, "subscription_details": details,
                                  "type": "subscription_details"}
    else:
        rendered["subscription"] = invoice.subscription
        payment = next((p for p in state.invoice_payments.values() if p.invoice == invoice.id), None)
        intent = state.payment_intents.get(payment.payment_intent) if payment else None
        rendered["paid"] = paid
        rendered["payment_intent"] = intent.id if intent else None
        rendered["charge"] = intent.latest_charge if intent else None
        rendered["subscription_details"] = {"metadata": dict(invoice.subscription_metadata)}
    return rendered
