"""Distinct signed `customer.subscription.created` webhooks, cloned from one the simulator emitted
(current API shape, real price ids), each for its own account, customer and subscription; and
the renewals of those subscriptions."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from checkout_service.stripe.signature import sign

from .stack import API_KEY

Json = dict[str, Any]
# The simulator's API key, sent as the provider's SDK sends it.
AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def _form(http: aiohttp.ClientSession, url: str, data: dict[str, str]) -> Json:
    async with http.post(url, data=data, headers=AUTH) as response:
        body: Json = await response.json()
        if response.status != 200:
            raise RuntimeError(f"simulator {url}: {response.status} {body}")
        return body


async def create_price(sim: str) -> str:
    """A Pro product with a monthly price on a bare simulator; returns the price id."""
    async with aiohttp.ClientSession() as http:
        await _form(http, f"{sim}/v1/products", {"id": "pro", "name": "Pro", "metadata[billing_plan_code]": "pro"})
        price = await _form(http, f"{sim}/v1/prices", {"product": "pro", "currency": "usd", "unit_amount": "2000",
                                                       "recurring[interval]": "month", "lookup_key": "pro_monthly"})
    return str(price["id"])


async def price_for(sim: str, lookup_key: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(
            f"{sim}/v1/prices", params={"lookup_keys[]": lookup_key}, headers=AUTH) as response:
        found = (await response.json())["data"]
    if not found:
        raise RuntimeError(f"the simulator has no price with lookup key {lookup_key}")
    return str(found[0]["id"])


async def template_event(sim: str, price_id: str, account_id: str = "acct_bench_template") -> Json:
    """Buys `price_id` through the simulator's checkout and returns the subscription event it emitted."""
    async with aiohttp.ClientSession() as http:
        session = await _form(http, f"{sim}/v1/checkout/sessions", {
            "mode": "subscription", "line_items[0][price]": price_id, "line_items[0][quantity]": "1",
            "metadata[account_id]": account_id, "subscription_data[metadata][account_id]": account_id,
            "success_url": "https://app.example/welcome"})
        async with http.post(f"{sim}/_sim/checkout/sessions/{session['id']}/complete") as response:
            if response.status != 200:
                raise RuntimeError(f"simulator checkout completion: {response.status}")
        async with http.get(f"{sim}/v1/events", params={"type": "customer.subscription.created", "limit": "1"},
                            headers=AUTH) as response:
            event: Json = (await response.json())["data"][0]
    return event


def clone(template: Json, tag: str, n: int, now: int) -> Json:
    """The template for account `acct_<tag>_<n>`, with its own event, customer and subscription ids."""
    event = copy.deepcopy(template)
    sub_id, account = f"sub_{tag}_{n}", f"acct_{tag}_{n}"
    event.update(id=f"evt_{tag}_{n}", created=now)
    obj = event["data"]["object"]
    obj.update(id=sub_id, customer=f"cus_{tag}_{n}", created=now, start_date=now, billing_cycle_anchor=now,
               latest_invoice=None, metadata={"account_id": account})
    obj["items"]["url"] = f"/v1/subscription_items?subscription={sub_id}"
    for k, item in enumerate(obj["items"]["data"]):
        period = item["current_period_end"] - item["current_period_start"]
        item.update(id=f"si_{tag}_{n}_{k}", subscription=sub_id, created=now, current_period_start=now,
                    current_period_end=now + period)
    return event


def bodies(template: Json, tag: str, count: int, now: int | None = None) -> list[bytes]:
    now = int(time.time()) if now is None else now
    return [json.dumps(clone(template, tag, n, now)).encode() for n in range(count)]


def renewals(template: Json, tag: str, count: int, created: int) -> list[bytes]:
    """`customer.subscription.updated` one period on for the first `count` accounts that
    `bodies(template, tag, …, created)` made, as a monthly renewal sends them: same subscription,
    items and start, the next period."""
    out = []
    for n in range(count):
        event = clone(template, tag, n, created)
        obj = event["data"]["object"]
        obj["start_date"] = obj["billing_cycle_anchor"] = created
        items = obj["items"]["data"]
        period = items[0]["current_period_end"] - items[0]["current_period_start"]
        for item in items:
            item.update(current_period_start=created + period, current_period_end=created + 2 * period)
        event.update(id=f"evt_{tag}_renewal_{n}", type="customer.subscription.updated", created=created + period)
        out.append(json.dumps(event).encode())
    return out


def write_signed(path: Path, payloads: list[bytes], secret: str) -> Path:
    """One line per request for requests.lua and the open-loop client: "<Stripe-Signature>\\t<body>",
    signed now (the receiver accepts 300 s either side).

    The file is on the disk when this returns. A measured load's file runs to hundreds of MB; left
    to the kernel, it is written back about 30 s later, in the middle of a later measurement, and
    PostgreSQL's WAL flushes on the same disk wait behind it (commits of 30 to 90 ms, in the stack's
    latencies and in pgbench's alike)."""
    stamp = int(time.time())
    with path.open("wb") as out:
        for body in payloads:
            out.write(f"t={stamp},v1={sign(body, secret, stamp)}\t".encode() + body + b"\n")
        out.flush()
        os.fsync(out.fileno())
    return path
