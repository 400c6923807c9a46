"""Webhook signatures exactly as Stripe makes them: `Stripe-Signature: t=<unix>,v1=<hex>` where
v1 is HMAC-SHA256 keyed with the endpoint secret over `"{t}.{body}"`."""

from __future__ import annotations

import hashlib
import hmac


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"
