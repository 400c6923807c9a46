"""Invoice previews (`POST /v1/invoices/create_preview`): the invoice a change to a subscription,
or a new subscription, would bring, computed by carrying the change out with the very billing
functions that apply it for real, on a scratch copy of the objects involved; nothing is written
and no event is emitted.

Which invoice: the one the change bills at once if it bills one (`always_invoice`, a new billing
interval, a new subscription); otherwise the subscription's next invoice, at its period end
(prorations kept by `create_prorations` included); none (`invoice_upcoming_none`) when the
subscription ends there instead. Canceling now bills nothing here, so its preview has no lines."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from provider_sim import billing
from provider_sim.changes import ItemChange, SubscriptionUpdate, planned_items, recurring_price, update_subscription
from provider_sim.changes import cancel_now as cancel_subscription_now
from provider_sim.errors import StripeError, bad_state, invalid, missing
from provider_sim.events import Ctx
from provider_sim.model import Customer, Invoice, Subscription
from provider_sim.store import State, find, new_id


@dataclass(frozen=True)
class PreviewRequest:
    customer: str | None = None
    subscription: str | None = None
    items: list[ItemChange] = field(default_factory=list)
    proration_behavior: str = "create_prorations"
    proration_date: int | None = None
    cancel_at_period_end: bool | None = None
    cancel_now: bool = False


def _scratch(state: State, customer: Customer | None, sub: Subscription | None) -> State:
    """A state holding copies of the customer and subscription a preview changes; the catalog is
    shared, as billing only reads it."""
    scratch = State(products=state.products, prices=state.prices)
    if customer is not None:
        scratch.customers[customer.id] = copy.deepcopy(customer)
    if sub is not None:
        scratch.subscriptions[sub.id] = copy.deepcopy(sub)
    return scratch


def _none_upcoming(customer: str) -> StripeError:
    return StripeError(404, f"No upcoming invoices for customer: {customer}", code="invoice_upcoming_none")


def _change(ctx: Ctx, request: PreviewRequest) -> Invoice:
    sub = find(ctx.state.subscriptions, str(request.subscription), "subscription", param="subscription")
    if request.customer is not None and request.customer != sub.customer:
        raise invalid("subscription", f"The subscription {sub.id} does not belong to the customer "
                      f"{request.customer}.")
    scratch = Ctx(_scratch(ctx.state, ctx.state.customers[sub.customer], sub), ctx.now)
    planned = scratch.state.subscriptions[sub.id]
    if request.cancel_now:
        cancel_subscription_now(scratch, planned)
        return Invoice(id="", customer=sub.customer, created=ctx.now, currency=sub.currency,
                       billing_reason="subscription_update", lines=[], period_start=ctx.now, period_end=ctx.now,
                       subscription=sub.id, subscription_metadata=dict(sub.metadata))
    if request.items or request.cancel_at_period_end is not None:
        update_subscription(scratch, planned, SubscriptionUpdate(
            items=request.items, cancel_at_period_end=request.cancel_at_period_end,
            proration_behavior=request.proration_behavior, proration_date=request.proration_date))
    billed_now = list(scratch.state.invoices.values())
    if billed_now:
        return billed_now[-1]
    if not planned.live:
        raise _none_upcoming(sub.customer)
    billing.renew_due(replace(scratch, now=planned.period_end))
    if planned.status == "canceled" or not scratch.state.invoices:
        raise _none_upcoming(sub.customer)
    return list(scratch.state.invoices.values())[-1]


def _new_subscription(ctx: Ctx, request: PreviewRequest) -> Invoice:
    """The first invoice of a subscription to `items`, as a checkout would start it now."""
    if request.customer is None:
        raise missing("customer")
    customer = find(ctx.state.customers, request.customer, "customer", param="customer")
    if not request.items:
        raise invalid("subscription_details[items]", "Provide `subscription_details[items]` to preview a new "
                      "subscription, or `subscription` to preview a change to one.")
    lines = []
    for change in request.items:
        if change.id or change.deleted:
            raise invalid(f"{change.param}[id]", "Items of a new subscription cannot name existing items.")
        if not change.price:
            raise missing(f"{change.param}[price]")
        lines.append((recurring_price(ctx, change.price, f"{change.param}[price]"), change.quantity or 1))
    scratch = Ctx(_scratch(ctx.state, customer, None), ctx.now)
    sub, invoice = billing.open_subscription(scratch, scratch.state.customers[customer.id], lines, metadata={},
                                             trial_days=None, one_time=[])
    planned_items(scratch, sub, [])  # the provider's checks of a subscription's items
    return invoice


def preview(ctx: Ctx, request: PreviewRequest) -> Invoice:
    """The invoice the request would bring, not stored anywhere."""
    if request.subscription is None and (request.cancel_now or request.cancel_at_period_end is not None):
        raise bad_state("Canceling can only be previewed for an existing `subscription`.",
                        param="subscription_details")
    if request.subscription:
        invoice = _change(ctx, request)
    else:
        invoice = _new_subscription(ctx, request)
        invoice.subscription = None  # the subscription does not exist yet
    invoice.id = new_id("upcoming_in_")
    invoice.status, invoice.number, invoice.finalized_at, invoice.paid_at = "draft", None, None, None
    invoice.attempt_count = 0
    for line in invoice.lines:
        line.id = new_id("il_tmp_")
    return invoice
