"""The provider, through the official `stripe` SDK. The rest of the service sees the `Provider`
protocol and plain dicts in the provider's shapes; tests may pass a fake with the same protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import stripe

Obj = dict[str, Any]


class ProviderError(Exception):
    """The provider refused or failed a call; `status` is its HTTP status when it answered, and
    `retry_after_s` its `Retry-After` header (whole seconds) when it sent one."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.retry_after_s = status, code, retry_after_s


class Provider(Protocol):
    async def create_customer(self, account_id: str) -> str: ...
    async def retrieve_customer(self, customer_id: str) -> Obj: ...
    async def create_checkout_session(self, params: Obj, idempotency_key: str) -> Obj: ...
    async def create_portal_session(self, customer_id: str, return_url: str) -> str: ...
    async def expire_checkout_session(self, session_id: str) -> Obj: ...
    async def cancel_subscription(self, subscription_id: str, idempotency_key: str) -> Obj: ...
    async def create_refund(self, params: Obj, idempotency_key: str) -> Obj: ...
    async def retrieve_product(self, product_id: str) -> Obj: ...
    async def retrieve_subscription(self, subscription_id: str) -> Obj: ...
    async def retrieve_checkout_session(self, session_id: str) -> Obj: ...
    async def retrieve_invoice(self, invoice_id: str) -> Obj: ...
    async def retrieve_invoice_payments(self, invoice_id: str) -> Obj: ...
    async def create_product(self, params: Obj) -> Obj: ...
    async def update_product(self, product_id: str, params: Obj) -> Obj: ...
    async def prices_by_lookup_keys(self, lookup_keys: Sequence[str]) -> list[Obj]: ...
    async def create_price(self, params: Obj) -> Obj: ...
    async def update_price(self, price_id: str, params: Obj) -> Obj: ...
    async def list_subscriptions(self, customer_id: str, starting_after: str | None) -> Obj: ...
    async def list_events(self, created_gte: int | None, created_lt: int | None, starting_after: str | None
                          ) -> Obj: ...
    async def preview_invoice(self, params: Obj) -> Obj: ...


def _plain(obj: Any) -> Obj:
    return obj.to_dict(recursive=True, for_json=True) if hasattr(obj, "to_dict") else dict(obj)


def _retry_after(headers: Any) -> int | None:
    """A `Retry-After` header in whole seconds (at least 1); None when absent or an HTTP date."""
    items = headers.items() if hasattr(headers, "items") else ()
    value = next((str(v).strip() for k, v in items if str(k).lower() == "retry-after"), "")
    if value.isascii() and value.isdigit() and len(value) <= 6:
        return max(int(value), 1)
    return None


class StripeGateway:
    """`Provider` over `stripe.StripeClient` with its asynchronous aiohttp transport. `api_base`
    points it at the simulator; unset, it talks to real Stripe.

    Each request may take `timeout_s` (the SDK's own default is 80 s). The SDK tries a request
    again up to `max_retries` times after a connection error, a timeout, a 409 or a 5xx answer,
    waiting 0.5 s doubling up to 5 s with jitter, and resends a POST under the same idempotency
    key (ours, or one it makes), so a retried create never creates twice. `deadline_s` bounds the
    whole call, retries included: past it the call fails like an unreachable provider."""

    def __init__(self, api_key: str, api_base: str | None, *, timeout_s: float, max_retries: int,
                 deadline_s: float) -> None:
        self._http = stripe.AIOHTTPClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base} if api_base else None,
            http_client=self._http, max_network_retries=max_retries,
        )
        self._v1 = self._client.v1
        self._deadline_s = deadline_s

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Obj:
        try:
            async with asyncio.timeout(self._deadline_s):
                return _plain(await method(*args, **kwargs))
        except TimeoutError as exc:
            # No status: callers take it as the provider being unreachable (UNAVAILABLE, HTTP 503).
            raise ProviderError(f"no answer within {self._deadline_s:g} s") from exc
        except stripe.StripeError as exc:
            code = getattr(exc, "code", None)
            raise ProviderError(exc.user_message or str(exc), exc.http_status, code,
                                _retry_after(exc.headers)) from exc

    async def create_customer(self, account_id: str) -> str:
        # One customer per account, even when two first purchases race: the key makes the provider
        # answer both with the same customer.
        found = await self._call(self._v1.customers.create_async, params={"metadata": {"account_id": account_id}},
                                 options={"idempotency_key": f"customer-{account_id}"})
        return str(found["id"])

    async def retrieve_customer(self, customer_id: str) -> Obj:
        return await self._call(self._v1.customers.retrieve_async, customer_id)

    async def create_checkout_session(self, params: Obj, idempotency_key: str) -> Obj:
        return await self._call(self._v1.checkout.sessions.create_async, params=params,
                                options={"idempotency_key": idempotency_key})

    async def expire_checkout_session(self, session_id: str) -> Obj:
        return await self._call(self._v1.checkout.sessions.expire_async, session_id)

    async def cancel_subscription(self, subscription_id: str, idempotency_key: str) -> Obj:
        return await self._call(self._v1.subscriptions.cancel_async, subscription_id,
                                options={"idempotency_key": idempotency_key})

    async def create_refund(self, params: Obj, idempotency_key: str) -> Obj:
        """`params` names the payment: `payment_intent` or `charge`."""
        return await self._call(self._v1.refunds.create_async, params=params,
                                options={"idempotency_key": idempotency_key})

    async def create_portal_session(self, customer_id: str, return_url: str) -> str:
        found = await self._call(self._v1.billing_portal.sessions.create_async,
                                 params={"customer": customer_id, "return_url": return_url})
        return str(found["url"])

    async def retrieve_product(self, product_id: str) -> Obj:
        return await self._call(self._v1.products.retrieve_async, product_id)

    async def retrieve_subscription(self, subscription_id: str) -> Obj:
        return await self._call(self._v1.subscriptions.retrieve_async, subscription_id,
                                params={"expand": ["items.data.price.product"]})

    async def retrieve_checkout_session(self, session_id: str) -> Obj:
        return await self._call(self._v1.checkout.sessions.retrieve_async, session_id,
                                params={"expand": ["line_items.data.price.product"]})

    async def retrieve_invoice(self, invoice_id: str) -> Obj:
        return await self._call(self._v1.invoices.retrieve_async, invoice_id)

    async def retrieve_invoice_payments(self, invoice_id: str) -> Obj:
        """The invoice with its `payments` expanded (the current API names its payment intents there)."""
        return await self._call(self._v1.invoices.retrieve_async, invoice_id, params={"expand": ["payments"]})

    async def create_product(self, params: Obj) -> Obj:
        return await self._call(self._v1.products.create_async, params=params)

    async def update_product(self, product_id: str, params: Obj) -> Obj:
        return await self._call(self._v1.products.update_async, product_id, params=params)

    async def prices_by_lookup_keys(self, lookup_keys: Sequence[str]) -> list[Obj]:
        found = await self._call(self._v1.prices.list_async, params={"lookup_keys": list(lookup_keys), "limit": 100})
        return list(found.get("data", []))

    async def create_price(self, params: Obj) -> Obj:
        return await self._call(self._v1.prices.create_async, params=params)

    async def update_price(self, price_id: str, params: Obj) -> Obj:
        return await self._call(self._v1.prices.update_async, price_id, params=params)

    async def list_subscriptions(self, customer_id: str, starting_after: str | None) -> Obj:
        params: Obj = {"customer": customer_id, "status": "all", "limit": 100,
                       "expand": ["data.items.data.price.product"]}
        if starting_after:
            params["starting_after"] = starting_after
        return await self._call(self._v1.subscriptions.list_async, params=params)

    async def list_events(self, created_gte: int | None, created_lt: int | None, starting_after: str | None
                          ) -> Obj:
        params: Obj = {"limit": 100}
        created = {op: at for op, at in (("gte", created_gte), ("lt", created_lt)) if at is not None}
        if created:
            params["created"] = created
        if starting_after:
            params["starting_after"] = starting_after
        return await self._call(self._v1.events.list_async, params=params)

    async def preview_invoice(self, params: Obj) -> Obj:
        """The provider's invoice preview (`invoices.create_preview`): what a new subscription or a
        change to one (`subscription_details`) would invoice. Writes nothing at the provider."""
        return await self._call(self._v1.invoices.create_preview_async, params=params)
