"""A small catalog and purchases built through the real HTTP API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.provider_sim.harness import SimServer


@dataclass(frozen=True)
class Catalog:
    product: str
    monthly: str
    yearly: str
    team_monthly: str
    credits: str


def ok(sim: SimServer, method: str, path: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    answer = sim.request(method, path, params, **kwargs)
    assert answer.status == 200, (method, path, answer.status, answer.body)
    return answer.json()


def price(sim: SimServer, product: str, amount: int, lookup_key: str, interval: str | None = "month") -> str:
    params: dict[str, Any] = {"product": product, "currency": "usd", "unit_amount": amount, "lookup_key": lookup_key,
                              "metadata": {"grants": '[{"grant_program_code": "ai_credits", "amount": 10}]'}}
    if interval:
        params["recurring"] = {"interval": interval}
    return str(ok(sim, "POST", "/v1/prices", params)["id"])


def make_catalog(sim: SimServer) -> Catalog:
    ok(sim, "POST", "/v1/products", {"id": "pro", "name": "Pro", "metadata": {"billing_plan_code": "pro"}})
    ok(sim, "POST", "/v1/products", {"id": "team", "name": "Team"})
    ok(sim, "POST", "/v1/products", {"id": "credits", "name": "Credit pack"})
    return Catalog(product="pro", monthly=price(sim, "pro", 2000, "pro_monthly"),
                   yearly=price(sim, "pro", 20000, "pro_yearly", "year"),
                   team_monthly=price(sim, "team", 5000, "team_monthly"),
                   credits=price(sim, "credits", 900, "credit_pack_500", None))


def checkout(sim: SimServer, price_id: str, *, mode: str = "subscription", quantity: int = 1,
             **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": mode, "line_items": [{"price": price_id, "quantity": quantity}],
        "success_url": "https://app.example/return?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example/cancel", "client_reference_id": "pur_1",
        "metadata": {"account_id": "acct_1", "purchase_id": "pur_1"}, **extra,
    }
    if mode == "subscription":
        params.setdefault("subscription_data", {"metadata": {"account_id": "acct_1", "purchase_id": "pur_1"}})
    found: dict[str, Any] = ok(sim, "POST", "/v1/checkout/sessions", params)
    return found


def events(sim: SimServer, **params: Any) -> list[dict[str, Any]]:
    """Every event, oldest first (the API lists newest first)."""
    found: list[dict[str, Any]] = ok(sim, "GET", "/v1/events", {"limit": 100, **params})["data"]
    return list(reversed(found))


def types(found: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in found]
