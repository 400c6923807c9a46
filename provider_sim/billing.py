"""Subscription lifecycle: start, invoices and their payment, renewal at period end, cancellation.

Every change happens at `ctx.now` (simulated time) and emits the events Stripe emits for it."""

from __future__ import annotations

import calendar
from dataclasses import replace
from datetime import UTC, datetime

from provider_sim import payments
from provider_sim.events import Ctx, emit, snapshot
from provider_sim.model import Customer, Invoice, InvoiceLine, Price, Subscription, SubscriptionItem
from provider_sim.store import new_id

DAY = 86_400
TRIAL_WILL_END_NOTICE_S = 3 * DAY
Line = tuple[Price, int]


def add_interval(start: int, interval: str, count: int) -> int:
    """`start` plus `count` intervals; months keep the day of month, clamped to the month's end
    (Jan 31 + 1 month = Feb 28), as Stripe bills."""
    if interval in ("day", "week"):
        return start + count * (DAY if interval == "day" else 7 * DAY)
    moment = datetime.fromtimestamp(start, UTC)
    months = moment.month - 1 + count * (12 if interval == "year" else 1)
    year, month = moment.year + months // 12, months % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def next_boundary(anchor: int, after: int, interval: str, count: int) -> int:
    """The first period end after `after`, counted from the billing cycle anchor (so periods never drift)."""
    periods = 1
    while (end := add_interval(anchor, interval, count * periods)) <= after:
        periods += 1
    return end


def describe(ctx: Ctx, price: Price, quantity: int, *, trial: bool = False) -> str:
    product = ctx.state.products.get(price.product)
    name = product.name if product else price.product
    if trial:
        return f"Trial period for {name}"
    amount = f"{price.unit_amount / 100:.2f} {price.currency.upper()}"
    per = f" / {price.interval}" if price.interval else ""
    return f"{quantity} × {name} (at {amount}{per})"


def _invoice(ctx: Ctx, sub: Subscription, reason: str, lines: list[InvoiceLine], period: tuple[int, int]) -> Invoice:
    customer = ctx.state.customers[sub.customer]
    invoice = Invoice(
        id=new_id("in_"), customer=sub.customer, created=ctx.now, currency=sub.currency, billing_reason=reason,
        lines=lines, period_start=period[0], period_end=period[1], subscription=sub.id,
        subscription_metadata=dict(sub.metadata), customer_email=customer.email, customer_name=customer.name,
    )
    ctx.state.invoices[invoice.id] = invoice
    sub.latest_invoice = invoice.id
    return invoice


def _item_line(ctx: Ctx, item: SubscriptionItem, *, trial: bool = False) -> InvoiceLine:
    price = ctx.state.prices[item.price]
    return InvoiceLine(
        id=new_id("il_"), price=price.id, quantity=item.quantity,
        amount=0 if trial else price.unit_amount * item.quantity,
        period_start=item.current_period_start, period_end=item.current_period_end,
        description=describe(ctx, price, item.quantity, trial=trial), subscription_item=item.id,
    )


def open_subscription(ctx: Ctx, customer: Customer, recurring: list[Line], *, metadata: dict[str, str],
                      trial_days: int | None, one_time: list[Line]) -> tuple[Subscription, Invoice]:
    """A new subscription (status `incomplete` until its first invoice is settled) and that invoice."""
    now = ctx.now
    anchor = now + trial_days * DAY if trial_days else now
    items = [SubscriptionItem(id=new_id("si_", 14), price=price.id, quantity=quantity, created=now,
                              current_period_start=now,
                              current_period_end=anchor if trial_days else next_boundary(
                                  now, now, str(price.interval), price.interval_count))
             for price, quantity in recurring]
    sub = Subscription(id=new_id("sub_"), customer=customer.id, created=now, currency=recurring[0][0].currency,
                       billing_cycle_anchor=anchor, items=items, metadata=dict(metadata),
                       trial_start=now if trial_days else None, trial_end=anchor if trial_days else None)
    ctx.state.subscriptions[sub.id] = sub
    customer.currency = customer.currency or sub.currency
    lines = [_item_line(ctx, item, trial=bool(trial_days)) for item in items]
    lines += [InvoiceLine(id=new_id("il_"), price=price.id, quantity=quantity, amount=price.unit_amount * quantity,
                          period_start=now, period_end=now, description=describe(ctx, price, quantity))
              for price, quantity in one_time]
    return sub, _invoice(ctx, sub, "subscription_create", lines, (now, now))


def _running_status(sub: Subscription, now: int) -> str:
    return "trialing" if sub.trial_end and sub.trial_end > now else "active"


def start(ctx: Ctx, sub: Subscription, invoice: Invoice, paid: bool | None) -> None:
    """Announces a new subscription and its first invoice: paid (active or trialing), declined
    (`paid=False`: incomplete, payment failed) or awaiting an asynchronous payment (`None`)."""
    if paid:
        sub.status = _running_status(sub, ctx.now)
    emit(ctx, "customer.subscription.created", "subscription", sub.id)
    emit(ctx, "invoice.created", "invoice", invoice.id)
    finalize_invoice(ctx, invoice)
    if paid:
        pay_invoice(ctx, invoice)
    elif paid is False:
        fail_invoice(ctx, invoice)


def finalize_invoice(ctx: Ctx, invoice: Invoice) -> None:
    customer = ctx.state.customers[invoice.customer]
    invoice.number = f"{customer.invoice_prefix}-{customer.next_invoice_sequence:04d}"
    customer.next_invoice_sequence += 1
    invoice.status, invoice.finalized_at = "open", ctx.now
    emit(ctx, "invoice.finalized", "invoice", invoice.id)


def pay_invoice(ctx: Ctx, invoice: Invoice) -> None:
    """Collects the amount due (a payment intent with its charge, named by the invoice's payment)."""
    payments.pay_invoice(ctx, invoice)
    invoice.status, invoice.paid_at = "paid", ctx.now
    invoice.attempt_count += 1 if invoice.amount_due else 0
    emit(ctx, "invoice.paid", "invoice", invoice.id)
    emit(ctx, "invoice.payment_succeeded", "invoice", invoice.id)


def fail_invoice(ctx: Ctx, invoice: Invoice) -> None:
    invoice.attempt_count += 1
    emit(ctx, "invoice.payment_failed", "invoice", invoice.id)


def settle_incomplete(ctx: Ctx, sub: Subscription) -> None:
    """A later successful payment of an incomplete subscription's first invoice activates it."""
    invoice = ctx.state.invoices[str(sub.latest_invoice)]
    pay_invoice(ctx, invoice)
    before = snapshot(ctx.state, "subscription", sub.id)
    sub.status = _running_status(sub, ctx.now)
    emit(ctx, "customer.subscription.updated", "subscription", sub.id, before=before)


def end_subscription(ctx: Ctx, sub: Subscription) -> None:
    """Cancels now (or at the period end, when `ctx.now` is that boundary)."""
    sub.status, sub.ended_at = "canceled", ctx.now
    sub.canceled_at = sub.canceled_at or ctx.now
    sub.cancellation_reason = sub.cancellation_reason or "cancellation_requested"
    emit(ctx, "customer.subscription.deleted", "subscription", sub.id)


def renew(ctx: Ctx, sub: Subscription) -> None:
    """Starts the next period of every item at `ctx.now` (the boundary) and bills it."""
    before = snapshot(ctx.state, "subscription", sub.id)
    ended = (sub.items[0].current_period_start, sub.items[0].current_period_end)
    for item in sub.items:
        price = ctx.state.prices[item.price]
        item.current_period_start = item.current_period_end
        item.current_period_end = next_boundary(sub.billing_cycle_anchor, item.current_period_end,
                                                str(price.interval), price.interval_count)
    sub.status = _running_status(sub, ctx.now)
    # Stripe quirk kept on purpose: a renewal invoice's own period is the period that just ended;
    # the lines carry the new service period.
    # Proration lines kept from changes made with `create_prorations` are billed with this invoice.
    lines = [*sub.pending_prorations, *(_item_line(ctx, item) for item in sub.items)]
    sub.pending_prorations = []
    invoice = _invoice(ctx, sub, "subscription_cycle", lines, ended)
    emit(ctx, "customer.subscription.updated", "subscription", sub.id, before=before)
    emit(ctx, "invoice.created", "invoice", invoice.id)
    finalize_invoice(ctx, invoice)
    pay_invoice(ctx, invoice)


def _notice_trial_end(ctx: Ctx, sub: Subscription) -> None:
    if sub.status != "trialing" or sub.trial_will_end_sent or sub.trial_end is None:
        return
    notice_at = max(sub.trial_end - TRIAL_WILL_END_NOTICE_S, sub.created)
    if notice_at <= ctx.now:
        sub.trial_will_end_sent = True
        emit(ctx, "customer.subscription.trial_will_end", "subscription", sub.id, at=notice_at)


def renew_due(ctx: Ctx) -> None:
    """Everything the passage of time to `ctx.now` causes: trial-end notices, renewals, and the
    cancellations scheduled for a period end. Each happens at its own boundary time."""
    for sub in list(ctx.state.subscriptions.values()):
        _notice_trial_end(ctx, sub)
        while sub.live and sub.period_end <= ctx.now:
            at_boundary = replace(ctx, now=sub.period_end)
            if sub.cancel_at_period_end or (sub.cancel_at is not None and sub.cancel_at <= sub.period_end):
                end_subscription(at_boundary, sub)
                break
            renew(at_boundary, sub)


def new_item(ctx: Ctx, sub: Subscription, price: Price, quantity: int) -> SubscriptionItem:
    """An item added mid-period shares the subscription's current period (classic billing)."""
    first = sub.items[0]
    return SubscriptionItem(id=new_id("si_", 14), price=price.id, quantity=quantity, created=ctx.now,
                            current_period_start=first.current_period_start,
                            current_period_end=first.current_period_end)


PRORATION_BEHAVIORS = ("create_prorations", "always_invoice", "none")


def _prorated(ctx: Ctx, item: SubscriptionItem, price: Price, quantity: int, sign: int) -> InvoiceLine:
    """What `quantity` of `price` costs for the rest of the item's period from `ctx.now`: charged
    (sign 1) for a new price or quantity, credited (sign -1) for the one it replaces."""
    length = max(item.current_period_end - item.current_period_start, 1)
    left = max(item.current_period_end - ctx.now, 0)
    amount = sign * round(price.unit_amount * quantity * left / length)
    verb = "Remaining time on" if sign > 0 else "Unused time on"
    return InvoiceLine(id=new_id("il_"), price=price.id, quantity=quantity, amount=amount, period_start=ctx.now,
                       period_end=item.current_period_end, subscription_item=item.id, proration=True,
                       description=f"{verb} {describe(ctx, price, quantity)}")


def prorations(ctx: Ctx, before: list[SubscriptionItem], after: list[SubscriptionItem]) -> list[InvoiceLine]:
    """For each item whose price or quantity changed (or that was added or removed) mid-period: a
    credit for what it had, a charge for what it has."""
    old = {item.id: item for item in before}
    new = {item.id: item for item in after}
    lines: list[InvoiceLine] = []
    for item_id in [*old, *(i for i in new if i not in old)]:
        was, now = old.get(item_id), new.get(item_id)
        if was is not None and now is not None and (was.price, was.quantity) == (now.price, now.quantity):
            continue
        if was is not None:
            lines.append(_prorated(ctx, was, ctx.state.prices[was.price], was.quantity, -1))
        if now is not None:
            lines.append(_prorated(ctx, now, ctx.state.prices[now.price], now.quantity, 1))
    return lines


def _interval_of(ctx: Ctx, items: list[SubscriptionItem]) -> tuple[str | None, int]:
    price = ctx.state.prices[items[0].price]
    return price.interval, price.interval_count


def restart_cycle(ctx: Ctx, sub: Subscription, before: list[SubscriptionItem]) -> bool:
    """A change to another billing interval restarts the billing cycle now, as at the provider;
    returns whether it did."""
    if _interval_of(ctx, before) == _interval_of(ctx, sub.items):
        return False
    sub.billing_cycle_anchor = ctx.now
    for item in sub.items:
        price = ctx.state.prices[item.price]
        item.current_period_start = ctx.now
        item.current_period_end = next_boundary(ctx.now, ctx.now, str(price.interval), price.interval_count)
    return True


def bill_change(ctx: Ctx, sub: Subscription, before: list[SubscriptionItem], behavior: str, restarted: bool,
                prorate_at: int | None = None) -> None:
    """Bills a change of items as the provider does. A restarted cycle is invoiced at once: the new
    period in full, the old one's unused time credited unless `none`. Otherwise, mid-period:
    `create_prorations` keeps the proration lines for the next invoice, `always_invoice` invoices
    them (and any kept before) now, `none` bills nothing. A trial is never prorated. Prorations are
    counted from `prorate_at` (the request's `proration_date`), or from now."""
    if sub.status == "trialing":
        return
    at = ctx if prorate_at is None else replace(ctx, now=prorate_at)
    credits = prorations(at, before, sub.items) if behavior != "none" else []
    if restarted:
        lines = [*sub.pending_prorations, *(line for line in credits if line.amount < 0),
                 *(_item_line(ctx, item) for item in sub.items)]
        sub.pending_prorations = []
        _bill_now(ctx, sub, lines)
    elif behavior == "create_prorations":
        sub.pending_prorations.extend(credits)
    elif behavior == "always_invoice" and (credits or sub.pending_prorations):
        lines = [*sub.pending_prorations, *credits]
        sub.pending_prorations = []
        _bill_now(ctx, sub, lines)


def _bill_now(ctx: Ctx, sub: Subscription, lines: list[InvoiceLine]) -> None:
    """An invoice for a change, paid at once; one that credits more than it charges is paid at zero."""
    invoice = _invoice(ctx, sub, "subscription_update", lines, (ctx.now, ctx.now))
    emit(ctx, "invoice.created", "invoice", invoice.id)
    finalize_invoice(ctx, invoice)
    pay_invoice(ctx, invoice)
