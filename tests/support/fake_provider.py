"""A provider with the same protocol as the SDK gateway, for tests that look at one side only."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from checkout_service.stripe.gateway import Obj, Provider, ProviderError

_ids = itertools.count(1)


class FakeProvider(Provider):
    def __init__(self) -> None:
        self.customers: dict[str, Obj] = {}
        self.sessions: dict[str, Obj] = {}
        self.by_key: dict[str, Obj] = {}
        self.products: dict[str, Obj] = {}
        self.prices: dict[str, Obj] = {}
        self.subscriptions: dict[str, list[Obj]] = {}  # by customer
        self.events: list[Obj] = []
        self.calls: list[str] = []
        self.down = False

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise ProviderError("connection refused")

    async def create_customer(self, account_id: str) -> str:
        self._check("create_customer")
        key = f"customer-{account_id}"
        if key not in self.by_key:
            customer: Obj = {"id": f"cus_{next(_ids)}", "metadata": {"account_id": account_id}}
            self.customers[customer["id"]] = self.by_key[key] = customer
        return str(self.by_key[key]["id"])

    async def retrieve_customer(self, customer_id: str) -> Obj:
        self._check("retrieve_customer")
        return self.customers[customer_id]

    async def create_checkout_session(self, params: Obj, idempotency_key: str) -> Obj:
        self._check("create_checkout_session")
        if idempotency_key not in self.by_key:
            session_id = f"cs_test_{next(_ids)}"
            session = {"id": session_id, "url": f"https://checkout.test/{session_id}", "expires_at": 1_900_000_000,
                       **params}
            self.sessions[session_id] = self.by_key[idempotency_key] = session
        return self.by_key[idempotency_key]

    async def expire_checkout_session(self, session_id: str) -> Obj:
        self._check("expire_checkout_session")
        self.sessions[session_id]["status"] = "expired"
        return self.sessions[session_id]

    async def retrieve_invoice_payments(self, invoice_id: str) -> Obj:
        return await self.retrieve_invoice(invoice_id)

    async def cancel_subscription(self, subscription_id: str, idempotency_key: str) -> Obj:
        self._check("cancel_subscription")
        return {"id": subscription_id, "status": "canceled"}

    async def create_refund(self, params: Obj, idempotency_key: str) -> Obj:
        self._check("create_refund")
        if idempotency_key not in self.by_key:
            self.by_key[idempotency_key] = {"id": f"re_{next(_ids)}", "status": "succeeded", **params}
        return self.by_key[idempotency_key]

    async def create_portal_session(self, customer_id: str, return_url: str) -> str:
        self._check("create_portal_session")
        return f"https://portal.test/{customer_id}?return_url={return_url}"

    async def retrieve_product(self, product_id: str) -> Obj:
        self._check("retrieve_product")
        if product_id not in self.products:
            raise ProviderError(f"No such product: {product_id}", 404, "resource_missing")
        return self.products[product_id]

    async def retrieve_subscription(self, subscription_id: str) -> Obj:
        self._check("retrieve_subscription")
        raise ProviderError(f"No such subscription: {subscription_id}", 404, "resource_missing")

    async def retrieve_checkout_session(self, session_id: str) -> Obj:
        self._check("retrieve_checkout_session")
        return self.sessions[session_id]

    async def retrieve_invoice(self, invoice_id: str) -> Obj:
        self._check("retrieve_invoice")
        raise ProviderError(f"No such invoice: {invoice_id}", 404, "resource_missing")

    async def create_product(self, params: Obj) -> Obj:
        self._check("create_product")
        self.products[params["id"]] = {"object": "product", "updated": 1, **params}
        return self.products[params["id"]]

    async def update_product(self, product_id: str, params: Obj) -> Obj:
        self._check("update_product")
        product: dict[str, Any] = self.products[product_id]
        metadata = {**product.get("metadata", {}), **params.pop("metadata", {})}
        product.update(params, metadata={k: v for k, v in metadata.items() if v != ""})
        return product

    async def prices_by_lookup_keys(self, lookup_keys: Sequence[str]) -> list[Obj]:
        self._check("prices_by_lookup_keys")
        return [p for p in self.prices.values() if p.get("lookup_key") in lookup_keys]

    async def create_price(self, params: Obj) -> Obj:
        self._check("create_price")
        if params.pop("transfer_lookup_key", False):
            for price in self.prices.values():
                if price.get("lookup_key") == params["lookup_key"]:
                    price["lookup_key"] = None
        price = {"id": f"price_{next(_ids)}", "object": "price", "created": 1, **params}
        self.prices[price["id"]] = price
        return price

    async def update_price(self, price_id: str, params: Obj) -> Obj:
        self._check("update_price")
        price: dict[str, Any] = self.prices[price_id]
        metadata = {**price.get("metadata", {}), **params.pop("metadata", {})}
        price.update(params, metadata={k: v for k, v in metadata.items() if v != ""})
        return price

    async def list_subscriptions(self, customer_id: str, starting_after: str | None) -> Obj:
        self._check("list_subscriptions")
        return {"object": "list", "data": self.subscriptions.get(customer_id, []), "has_more": False}

    async def list_events(self, created_gte: int | None, created_lt: int | None, starting_after: str | None
                          ) -> Obj:
        self._check("list_events")
        found = [e for e in self.events if (created_gte is None or e["created"] >= created_gte)
                 and (created_lt is None or e["created"] < created_lt)]
        return {"object": "list", "data": found, "has_more": False}

    async def preview_invoice(self, params: Obj) -> Obj:
        self._check("preview_invoice")
        raise ProviderError("No upcoming invoices for customer", 404, "invoice_upcoming_none")
