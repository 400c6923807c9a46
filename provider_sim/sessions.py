"""Checkout sessions: creation rules, and what paying, declining, an asynchronous payment and
expiry do, with the events Stripe emits for each, in Stripe's order."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from provider_sim import billing, payments
from provider_sim.errors import bad_state, invalid
from provider_sim.events import Ctx, emit
from provider_sim.model import CheckoutSession, Customer, Price, SessionLine
from provider_sim.resources.checkout_session import session_total
from provider_sim.store import find, new_id, new_invoice_prefix, new_session_id

MIN_EXPIRY_S, MAX_EXPIRY_S = 30 * 60, 24 * 3600
PAYMENTS = ("succeeded", "failed", "async_pending")


@dataclass(frozen=True)
class SessionSpec:
    mode: str
    lines: list[tuple[str, int]]
    base_url: str
    success_url: str | None = None
    cancel_url: str | None = None
    customer: str | None = None
    customer_email: str | None = None
    customer_creation: str | None = None
    client_reference_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    subscription_metadata: dict[str, str] = field(default_factory=dict)
    trial_period_days: int | None = None
    expires_at: int | None = None


def _line_prices(ctx: Ctx, spec: SessionSpec) -> list[Price]:
    prices = []
    for index, (price_id, _) in enumerate(spec.lines):
        param = f"line_items[{index}][price]"
        price = find(ctx.state.prices, price_id, "price", param=param)
        if not price.active:
            raise bad_state(f"The price `{price_id}` is not active.", param=param)
        if spec.mode == "payment" and price.recurring:
            raise invalid(param, "You specified `payment` mode but passed a recurring price. Either switch to "
                          "`subscription` mode or use only one-time prices.")
        prices.append(price)
    if spec.mode == "subscription" and not any(p.recurring for p in prices):
        raise invalid("line_items", "You must provide at least one recurring price in `subscription` mode when "
                      "using prices.")
    if len({p.currency for p in prices}) > 1:
        raise invalid("line_items", "All prices on a Checkout Session must have the same currency.")
    if len({(p.interval, p.interval_count) for p in prices if p.recurring}) > 1:
        raise invalid("line_items", "All recurring prices on a Checkout Session must have the same billing interval.")
    return prices


def create_session(ctx: Ctx, spec: SessionSpec) -> CheckoutSession:
    if spec.customer:
        find(ctx.state.customers, spec.customer, "customer", param="customer")
        if spec.customer_email:
            raise invalid("customer_email", "You may only specify one of these parameters: customer, customer_email.")
    expires_at = spec.expires_at or ctx.now + MAX_EXPIRY_S
    if not ctx.now + MIN_EXPIRY_S <= expires_at <= ctx.now + MAX_EXPIRY_S:
        raise invalid("expires_at", "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                      "Checkout Session creation.")
    prices = _line_prices(ctx, spec)
    session_id = new_session_id()
    session = CheckoutSession(
        id=session_id, mode=spec.mode, created=ctx.now, expires_at=expires_at, currency=prices[0].currency,
        url=f"{spec.base_url}/checkout/{session_id}",
        line_items=[SessionLine(new_id("li_"), price_id, quantity) for price_id, quantity in spec.lines],
        success_url=spec.success_url, cancel_url=spec.cancel_url, customer=spec.customer,
        customer_email=spec.customer_email, client_reference_id=spec.client_reference_id,
        customer_creation=spec.customer_creation or ("if_required" if spec.mode == "payment" else None),
        metadata=dict(spec.metadata), subscription_metadata=dict(spec.subscription_metadata),
        trial_period_days=spec.trial_period_days,
    )
    ctx.state.checkout_sessions[session.id] = session
    return session


def _customer(ctx: Ctx, session: CheckoutSession, email: str | None) -> Customer:
    """The session's customer, or a new one (announced with `customer.created`)."""
    if session.customer:
        return ctx.state.customers[session.customer]
    customer = Customer(id=new_id("cus_", 14), created=ctx.now, invoice_prefix=new_invoice_prefix(),
                        email=session.customer_email or email or "customer@example.com")
    ctx.state.customers[customer.id] = customer
    emit(ctx, "customer.created", "customer", customer.id)
    return customer


def _finish(ctx: Ctx, session: CheckoutSession, payment_status: str) -> None:
    session.status, session.payment_status = "complete", payment_status
    session.awaiting_async_payment = payment_status == "unpaid"
    emit(ctx, "checkout.session.completed", "checkout.session", session.id)


def _split(ctx: Ctx, session: CheckoutSession) -> tuple[list[billing.Line], list[billing.Line]]:
    lines = [(ctx.state.prices[line.price], line.quantity) for line in session.line_items]
    return [line for line in lines if line[0].recurring], [line for line in lines if not line[0].recurring]


def _retry_subscription(ctx: Ctx, session: CheckoutSession, payment: str) -> None:
    """Paying again after a decline settles the subscription the first attempt left incomplete."""
    sub = ctx.state.subscriptions[str(session.pending_subscription)]
    if payment == "failed":
        billing.fail_invoice(ctx, ctx.state.invoices[str(sub.latest_invoice)])
        return
    session.customer, session.subscription, session.invoice = sub.customer, sub.id, sub.latest_invoice
    session.pending_subscription = None
    if payment == "succeeded":
        billing.settle_incomplete(ctx, sub)
    _finish(ctx, session, "paid" if payment == "succeeded" else "unpaid")


def _complete_subscription(ctx: Ctx, session: CheckoutSession, payment: str, trial_days: int | None,
                           email: str | None) -> None:
    if session.pending_subscription:
        _retry_subscription(ctx, session, payment)
        return
    customer = _customer(ctx, session, email)
    recurring, one_time = _split(ctx, session)
    sub, invoice = billing.open_subscription(ctx, customer, recurring, metadata=session.subscription_metadata,
                                             trial_days=trial_days, one_time=one_time)
    free = invoice.total == 0
    paid = True if free or payment == "succeeded" else (False if payment == "failed" else None)
    billing.start(ctx, sub, invoice, paid)
    if paid is False:
        session.pending_subscription = sub.id
        return
    session.customer, session.subscription, session.invoice = customer.id, sub.id, invoice.id
    _finish(ctx, session, "no_payment_required" if free else ("paid" if paid else "unpaid"))


def _complete_payment(ctx: Ctx, session: CheckoutSession, payment: str, email: str | None) -> None:
    if payment == "failed":
        return  # Stripe keeps the session open for another attempt and emits no session event.
    if session.customer or session.customer_creation == "always":
        session.customer = _customer(ctx, session, email).id
    elif not session.customer_email:
        session.customer_email = email
    intent = payments.start_payment(ctx, session_total(ctx.state, session), session.currency,
                                    customer=session.customer, description=None)
    if payment == "succeeded":
        payments.succeed(ctx, intent)
    session.payment_intent = intent.id
    _finish(ctx, session, "paid" if payment == "succeeded" else "unpaid")


def complete(ctx: Ctx, session: CheckoutSession, *, payment: str = "succeeded", trial_days: int | None = None,
             email: str | None = None) -> None:
    if session.status != "open":
        raise bad_state(f"This Checkout Session is {session.status} and can no longer be paid.")
    if session.mode == "subscription":
        days = trial_days if trial_days is not None else session.trial_period_days
        _complete_subscription(ctx, session, payment, days or None, email)
    else:
        _complete_payment(ctx, session, payment, email)


def async_result(ctx: Ctx, session: CheckoutSession, succeeded: bool) -> None:
    """The outcome of a payment that completed the session unpaid (a bank debit, say)."""
    if not session.awaiting_async_payment:
        raise bad_state("This Checkout Session has no asynchronous payment awaiting a result.")
    session.awaiting_async_payment = False
    sub = ctx.state.subscriptions.get(session.subscription or "")
    intent = ctx.state.payment_intents.get(session.payment_intent or "")
    if intent and succeeded:
        payments.succeed(ctx, intent)
    elif intent:
        intent.status = "requires_payment_method"
    if sub and succeeded:
        billing.settle_incomplete(ctx, sub)
    elif sub:
        billing.fail_invoice(ctx, ctx.state.invoices[str(sub.latest_invoice)])
    if succeeded:
        session.payment_status = "paid"
    outcome = "succeeded" if succeeded else "failed"
    emit(ctx, f"checkout.session.async_payment_{outcome}", "checkout.session", session.id)


def expire(ctx: Ctx, session: CheckoutSession) -> None:
    if session.status != "open":
        raise bad_state('Only Checkout Sessions with a status in ["open"] can be expired.')
    session.status = "expired"
    emit(ctx, "checkout.session.expired", "checkout.session", session.id)


def expire_due(ctx: Ctx) -> None:
    for session in list(ctx.state.checkout_sessions.values()):
        if session.status == "open" and session.expires_at <= ctx.now:
            expire(replace(ctx, now=session.expires_at), session)


def catch_up(ctx: Ctx) -> None:
    """Everything due by `ctx.now`: session expiry, trial notices, renewals, scheduled cancellations."""
    expire_due(ctx)
    billing.renew_due(ctx)
