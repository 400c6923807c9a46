"""`/v1/subscriptions` and `/v1/subscription_items`."""

from __future__ import annotations

from aiohttp import web

from provider_sim.api.common import ctx_of, listed, newest_first, params_of, respond_expanded, state_of
from provider_sim.billing import PRORATION_BEHAVIORS
from provider_sim.changes import ItemChange, SubscriptionUpdate, cancel_now, update_subscription
from provider_sim.errors import no_such
from provider_sim.params import Params
from provider_sim.resources.subscription import render_subscription, render_subscription_item
from provider_sim.store import find

routes = web.RouteTableDef()
STATUSES = ("active", "all", "canceled", "ended", "incomplete", "incomplete_expired", "past_due", "paused",
            "trialing", "unpaid")
UPDATE_IGNORED = ("payment_behavior", "billing_cycle_anchor",
                  "default_payment_method", "description", "off_session")


def item_changes(params: Params, prefix: str = "items") -> list[ItemChange]:
    """`items[n][id|price|quantity|deleted|metadata]`; `prefix` names them in errors."""
    changes = []
    for index, item in enumerate(params.children("items") or []):
        changes.append(ItemChange(
            param=f"{prefix}[{index}]", id=item.text("id"), price=item.text("price"),
            quantity=item.integer("quantity", minimum=1), deleted=bool(item.boolean("deleted")),
            metadata=item.metadata(),
        ))
        item.ignore("clear_usage", "tax_rates", "discounts", "billing_thresholds")
    return changes


@routes.get("/v1/subscriptions/{id}")
async def retrieve_subscription(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    sub = find(state.subscriptions, request.match_info["id"], "subscription")
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_subscription(state, sub), paths)


@routes.get("/v1/subscriptions")
async def list_subscriptions(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    customer, price = params.text("customer"), params.text("price")
    status = params.choice("status", STATUSES)
    found = [s for s in newest_first(list(state.subscriptions.values()))
             if (customer is None or s.customer == customer)
             and (price is None or any(item.price == price for item in s.items))
             and (status == "all" or (status is None and s.status != "canceled") or s.status == status
                  or (status == "ended" and s.status in ("canceled", "incomplete_expired")))]
    params.ignore("created", "current_period_end", "current_period_start", "collection_method", "test_clock")
    return listed(params, found, lambda s: render_subscription(state, s), "/v1/subscriptions", lambda s: s.id,
                  request)


@routes.post("/v1/subscriptions/{id}")
async def update(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    sub = find(ctx.state.subscriptions, request.match_info["id"], "subscription")
    behavior = params.choice("proration_behavior", PRORATION_BEHAVIORS) or "create_prorations"
    change = SubscriptionUpdate(items=item_changes(params), metadata=params.metadata(),
                                cancel_at_period_end=params.boolean("cancel_at_period_end"),
                                proration_behavior=str(behavior), proration_date=params.integer("proration_date"))
    paths = params.expand()
    params.ignore(*UPDATE_IGNORED)
    params.finish()
    update_subscription(ctx, sub, change)
    return respond_expanded(request, render_subscription(ctx.state, sub), paths)


@routes.delete("/v1/subscriptions/{id}")
async def cancel(request: web.Request) -> web.Response:
    params, ctx = await params_of(request), ctx_of(request)
    sub = find(ctx.state.subscriptions, request.match_info["id"], "subscription")
    paths = params.expand()
    params.ignore("invoice_now", "prorate", "cancellation_details")
    params.finish()
    cancel_now(ctx, sub)
    return respond_expanded(request, render_subscription(ctx.state, sub), paths)


@routes.get("/v1/subscription_items")
async def list_items(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    sub = find(state.subscriptions, str(params.text("subscription", required=True)), "subscription",
               param="subscription")
    return listed(params, sub.items, lambda item: render_subscription_item(state, item, sub.id),
                  f"/v1/subscription_items?subscription={sub.id}", lambda item: item.id, request)


@routes.get("/v1/subscription_items/{id}")
async def retrieve_item(request: web.Request) -> web.Response:
    params, state = await params_of(request), state_of(request)
    item_id = request.match_info["id"]
    found = next(((s, i) for s in state.subscriptions.values() for i in s.items if i.id == item_id), None)
    if found is None:
        raise no_such("subscription_item", item_id)
    paths = params.expand()
    params.finish()
    return respond_expanded(request, render_subscription_item(state, found[1], found[0].id), paths)
