"""Money moving: a payment collected (a payment intent with its one charge) and refunds of it.

A paid invoice with something due and a paid one-time checkout each hold a payment intent, so a
refund can name it (or its charge). Collecting emits no event of its own: the invoice and session
events announce the payment, as the services read them. A refund emits `charge.refunded` (the
charge with its new `amount_refunded` and `refunded`) and `refund.created`."""

from __future__ import annotations

from provider_sim.errors import StripeError, bad_state
from provider_sim.events import Ctx, emit, snapshot
from provider_sim.model import Charge, Invoice, InvoicePayment, PaymentIntent, Refund
from provider_sim.store import find, new_id

REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def start_payment(ctx: Ctx, amount: int, currency: str, *, customer: str | None, description: str | None,
                  invoice: str | None = None) -> PaymentIntent:
    """A payment intent still waiting for its money (an asynchronous payment in flight)."""
    intent = PaymentIntent(id=new_id("pi_"), amount=amount, currency=currency, created=ctx.now, customer=customer,
                           description=description, invoice=invoice)
    ctx.state.payment_intents[intent.id] = intent
    return intent


def succeed(ctx: Ctx, intent: PaymentIntent) -> Charge:
    """The money arrived: the intent succeeds with its charge."""
    charge = Charge(id=new_id("ch_"), amount=intent.amount, currency=intent.currency, created=ctx.now,
                    payment_intent=intent.id, customer=intent.customer, description=intent.description,
                    invoice=intent.invoice)
    ctx.state.charges[charge.id] = charge
    intent.status, intent.latest_charge = "succeeded", charge.id
    return charge


def collect(ctx: Ctx, amount: int, currency: str, *, customer: str | None, description: str | None,
            invoice: str | None = None) -> PaymentIntent:
    """A payment collected at once."""
    intent = start_payment(ctx, amount, currency, customer=customer, description=description, invoice=invoice)
    succeed(ctx, intent)
    return intent


def pay_invoice(ctx: Ctx, invoice: Invoice) -> InvoicePayment | None:
    """The payment of an invoice's amount due, recorded as its `invoice_payment`; none for an
    invoice with nothing due (a trial, a change that credits more than it charges)."""
    if invoice.amount_due <= 0:
        return None
    intent = collect(ctx, invoice.amount_due, invoice.currency, customer=invoice.customer,
                     description="Subscription creation" if invoice.billing_reason == "subscription_create"
                     else "Subscription update", invoice=invoice.id)
    payment = InvoicePayment(id=new_id("inpay_"), invoice=invoice.id, payment_intent=intent.id,
                             amount=invoice.amount_due, currency=invoice.currency, created=ctx.now, paid_at=ctx.now)
    ctx.state.invoice_payments[payment.id] = payment
    return payment


def refundable_charge(ctx: Ctx, charge_id: str | None, intent_id: str | None) -> Charge:
    """The charge a refund request names, by itself or through its payment intent; both must agree."""
    charge = find(ctx.state.charges, charge_id, "charge", param="charge") if charge_id else None
    if intent_id:
        intent = find(ctx.state.payment_intents, intent_id, "payment_intent", param="payment_intent")
        if intent.latest_charge is None:
            raise bad_state(f"This PaymentIntent ({intent.id}) does not have a successful charge to refund.",
                            param="payment_intent", code="payment_intent_unexpected_state")
        if charge is not None and charge.payment_intent != intent.id:
            raise bad_state(f"The charge {charge.id} does not belong to the PaymentIntent {intent.id}.",
                            param="charge")
        charge = charge or ctx.state.charges[intent.latest_charge]
    if charge is None:
        raise StripeError(400, "One of the following params should be provided for this request: charge or "
                               "payment_intent.", code="parameter_missing")
    return charge


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:.2f} {currency.upper()}"


def refund(ctx: Ctx, charge: Charge, amount: int | None, *, reason: str | None,
           metadata: dict[str, str]) -> Refund:
    """Refunds `amount` (default: all that remains) of the charge, or refuses with Stripe's error:
    `charge_already_refunded` when nothing remains, `amount_too_large` for more than remains."""
    if charge.refunded:
        raise bad_state(f"Charge {charge.id} has already been refunded.", code="charge_already_refunded")
    amount = charge.refundable if amount is None else amount
    if amount > charge.refundable:
        raise bad_state(f"Refund amount ({_money(amount, charge.currency)}) is greater than unrefunded amount on "
                        f"charge ({_money(charge.refundable, charge.currency)})", param="amount",
                        code="amount_too_large")
    before = snapshot(ctx.state, "charge", charge.id)
    made = Refund(id=new_id("re_"), amount=amount, currency=charge.currency, created=ctx.now, charge=charge.id,
                  payment_intent=charge.payment_intent, reason=reason, metadata=dict(metadata),
                  customer=charge.customer)
    ctx.state.refunds[made.id] = made
    charge.amount_refunded += amount
    charge.refunds.append(made.id)
    emit(ctx, "charge.refunded", "charge", charge.id, before=before)
    emit(ctx, "refund.created", "refund", made.id)
    return made
