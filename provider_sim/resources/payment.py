"""`payment_intent`, `charge`, `refund` and `invoice_payment` objects.

Since 2022-11-15 a charge lists its refunds only when asked (`expand[]=refunds`); since
2025-03-31 charges and payment intents no longer name their invoice (an invoice's payments are
`invoice_payment` objects), which the legacy shape still does."""

from __future__ import annotations

from provider_sim.model import Charge, InvoicePayment, Json, PaymentIntent, Refund
from provider_sim.resources.lists import list_object
from provider_sim.store import State
from provider_sim.versions import Shape

CARD = {"brand": "visa", "country": "US", "exp_month": 12, "exp_year": 2034, "fingerprint": "simulatorcard42",
        "funding": "credit", "last4": "4242", "network": "visa"}
PAYMENT_METHOD = "pm_card_visa"


def render_payment_intent(intent: PaymentIntent, shape: Shape = Shape.CURRENT) -> Json:
    received = intent.amount if intent.status == "succeeded" else 0
    rendered: Json = {
        "id": intent.id, "object": "payment_intent", "allowed_payment_method_types": None,
        "amount": intent.amount, "amount_capturable": 0,
        "amount_details": {"tip": {}}, "amount_received": received, "application": None,
        "application_fee_amount": None, "automatic_payment_methods": None, "canceled_at": None,
        "cancellation_reason": None, "capture_method": "automatic", "client_secret": f"{intent.id}_secret_sim",
        "confirmation_method": "automatic", "created": intent.created, "currency": intent.currency,
        "customer": intent.customer, "customer_account": None, "description": intent.description,
        "excluded_payment_method_types": None, "last_payment_error": None, "managed_payments": None,
        "latest_charge": intent.latest_charge, "livemode": False, "metadata": dict(intent.metadata),
        "next_action": None, "on_behalf_of": None, "payment_method": PAYMENT_METHOD,
        "payment_method_configuration_details": None, "payment_method_options": {},
        "payment_method_types": ["card"], "payment_record": None, "processing": None, "receipt_email": None,
        "review": None,
        "setup_future_usage": None, "shipping": None, "source": None, "statement_descriptor": None,
        "statement_descriptor_suffix": None, "status": intent.status, "transfer_data": None, "transfer_group": None,
    }
    if shape is Shape.LEGACY:
        rendered["invoice"] = intent.invoice
    return rendered


def render_refund(refund: Refund) -> Json:
    return {
        "id": refund.id, "object": "refund", "amount": refund.amount, "balance_transaction": None,
        "charge": refund.charge, "created": refund.created, "currency": refund.currency,
        "customer": refund.customer, "customer_account": None,
        "destination_details": {"card": {"reference_status": "pending", "reference_type": "acquirer_reference_number",
                                         "type": "refund"}, "type": "card"},
        "metadata": dict(refund.metadata), "payment_intent": refund.payment_intent,
        "payment_method": PAYMENT_METHOD, "reason": refund.reason,
        "receipt_number": None, "source_transfer_reversal": None, "status": refund.status,
        "transfer_reversal": None,
    }


def render_charge_refunds(state: State, charge: Charge) -> Json:
    """The charge's refunds, newest first, as `expand[]=refunds` shows them."""
    refunds = [render_refund(state.refunds[refund_id]) for refund_id in reversed(charge.refunds)]
    return list_object(refunds, f"/v1/charges/{charge.id}/refunds")


def render_charge(charge: Charge, shape: Shape = Shape.CURRENT) -> Json:
    rendered: Json = {
        "id": charge.id, "object": "charge", "amount": charge.amount, "amount_captured": charge.amount,
        "amount_refunded": charge.amount_refunded, "application": None, "application_fee": None,
        "application_fee_amount": None, "balance_transaction": None,
        "billing_details": {"address": {"city": None, "country": None, "line1": None, "line2": None,
                                        "postal_code": None, "state": None},
                            "email": None, "name": None, "phone": None, "tax_id": None},
        "calculated_statement_descriptor": "PROVIDER SIMULATOR", "captured": True, "created": charge.created,
        "currency": charge.currency, "customer": charge.customer, "description": charge.description,
        "disputed": False, "failure_balance_transaction": None, "failure_code": None, "failure_message": None,
        "fraud_details": {}, "livemode": False, "metadata": {}, "on_behalf_of": None,
        "outcome": {"advice_code": None, "network_advice_code": None, "network_decline_code": None,
                    "network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                    "seller_message": "Payment complete.", "type": "authorized"},
        "paid": True, "payment_intent": charge.payment_intent, "payment_method": PAYMENT_METHOD,
        "payment_method_details": {"card": {**CARD, "amount_authorized": charge.amount, "authorization_code": None,
                                            "checks": {"address_line1_check": None,
                                                       "address_postal_code_check": None, "cvc_check": "pass"},
                                            "electronic_commerce_indicator": None, "installments": None,
                                            "mandate": None, "network_transaction_id": None,
                                            "regulated_status": "unregulated", "three_d_secure": None,
                                            "transaction_link_id": None, "wallet": None},
                                   "type": "card"},
        "receipt_email": None, "receipt_number": None, "receipt_url": None, "refunded": charge.refunded,
        "review": None, "shipping": None, "source": None, "source_transfer": None, "statement_descriptor": None,
        "statement_descriptor_suffix": None, "status": "succeeded", "transfer_data": None, "transfer_group": None,
    }
    if shape is Shape.LEGACY:
        rendered["invoice"] = charge.invoice
    return rendered


def render_invoice_payment(payment: InvoicePayment) -> Json:
    return {
        "id": payment.id, "object": "invoice_payment", "amount_paid": payment.amount,
        "amount_requested": payment.amount, "created": payment.created, "currency": payment.currency,
        "invoice": payment.invoice, "is_default": True, "livemode": False,
        "payment": {"payment_intent": payment.payment_intent, "type": "payment_intent"}, "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": payment.paid_at},
    }


def render_invoice_payments(state: State, invoice_id: str) -> Json:
    """An invoice's payments, as `expand[]=payments` shows them."""
    found = [render_invoice_payment(p) for p in state.invoice_payments.values() if p.invoice == invoice_id]
    return list_object(found, f"/v1/invoice_payments?invoice={invoice_id}")
