"""One subscription's billing as the provider sends it, captured from the simulator for each plan
asked for: bought through checkout (`customer.subscription.created` and its `invoice.paid`), then
renewed one period on (`customer.subscription.updated` and its `invoice.paid`). bench/seed.py
clones these webhooks into any number of accounts and periods.

The simulator runs on its own, delivering nowhere, with the example catalog applied as
`python -m checkout_service catalog apply` applies it (its provider half)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from checkout_service.catalog_apply import apply
from checkout_service.stripe.gateway import StripeGateway
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.support.provider import example_catalog

from .stack import API_KEY, start_simulator
from .webhook_bodies import price_for, template_event

Json = dict[str, Any]
DAY = 86_400


@dataclass(frozen=True)
class PlanHistory:
    """A subscription to one price: its webhooks in the order sent, the price's lookup key and
    the simulator's id for it."""

    lookup_key: str
    price_id: str
    created: Json
    first_paid: Json
    renewed: Json
    renewal_paid: Json


@dataclass(frozen=True)
class Captured:
    plans: dict[str, PlanHistory]  # by lookup key
    products: dict[str, Json]  # as the checkout service fetches them to normalize subscription events


class _CatalogOnly:
    """Stands in for the entitlement service: only the provider half of `catalog apply` is wanted."""

    async def UpsertCatalog(self, request: pb.UpsertCatalogRequest, **_: object) -> pb.UpsertCatalogResponse:
        return pb.UpsertCatalogResponse()


async def _events(sim: str) -> list[Json]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{sim}/v1/events", params={"limit": "100"},
            headers={"Authorization": aiohttp.encode_basic_auth(API_KEY, "")}) as response:
        found: list[Json] = (await response.json())["data"]
    return found


async def _advance(sim: str, seconds: int) -> None:
    async with aiohttp.ClientSession() as http, http.post(
            f"{sim}/_sim/clock/advance", data={"seconds": str(seconds)}) as response:
        if response.status != 200:
            raise RuntimeError(f"simulator clock advance: {response.status}")


def _subscription_of(event: Json) -> str:
    obj = event["data"]["object"]
    if obj["object"] == "subscription":
        return str(obj["id"])
    return str(obj["parent"]["subscription_details"]["subscription"])


async def capture(work: Path, lookup_keys: Sequence[str]) -> Captured:
    """Runs a simulator of its own (logging in `work`/provider_history) for the captures."""
    log_dir = work / "provider_history"
    log_dir.mkdir(exist_ok=True)
    child, sim = await start_simulator(log_dir)
    gateway = StripeGateway(API_KEY, sim, timeout_s=10, max_retries=0, deadline_s=30)
    try:
        file = example_catalog()
        await apply(file, gateway, _CatalogOnly())  # type: ignore[arg-type]
        products = {spec.product_id: await gateway.retrieve_product(spec.product_id) for spec in file.products}
        # A day on, so no time in a subscription's webhooks is also its price's creation time.
        await _advance(sim, DAY)
        prices = {key: await price_for(sim, key) for key in lookup_keys}
        subscriptions = {}
        for key in lookup_keys:
            bought = await template_event(sim, prices[key], f"acct_template_{key}")
            subscriptions[_subscription_of(bought)] = key
        await _advance(sim, 32 * DAY)  # every subscription renews once
        by_sub: dict[str, list[Json]] = {}
        for event in reversed(await _events(sim)):  # oldest first
            if event["type"] in ("customer.subscription.created", "customer.subscription.updated", "invoice.paid"):
                by_sub.setdefault(_subscription_of(event), []).append(event)
    finally:
        await gateway.close()
        await child.stop()
    plans = {}
    for sub_id, key in subscriptions.items():
        kinds = [e["type"] for e in by_sub.get(sub_id, [])]
        if kinds != ["customer.subscription.created", "invoice.paid", "customer.subscription.updated",
                     "invoice.paid"]:
            raise RuntimeError(f"the simulator sent {kinds} for a {key} subscription renewed once")
        plans[key] = PlanHistory(key, prices[key], *by_sub[sub_id])
    return Captured(plans, products)
