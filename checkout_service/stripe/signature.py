"""Verifying the `Stripe-Signature` header on the raw body, before anything is parsed.

The header is `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.payload">[,v1=...]`; any listed v1 that
matches any of our secrets (several during rotation) within the tolerance accepts the body."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

# A unix time in plain ASCII digits. `str.isdigit` also accepts "²" and other scripts' digits, which
# `int()` refuses or reads; and a number of hundreds of digits overflows the tolerance arithmetic.
# Eighteen digits reach far past any real timestamp and stay well inside a float.
TIMESTAMP = re.compile(r"[0-9]{1,18}")


class SignatureError(ValueError):
    """The body is not signed by the provider with a current secret; the message says why."""


def parse_header(header: str) -> tuple[int, list[bytes]]:
    """The timestamp and the v1 signatures; a `t` that is not a plain unix time counts as none."""
    timestamp: int | None = None
    signatures: list[bytes] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value.encode())
    if timestamp is None:
        raise SignatureError("the Stripe-Signature header has no timestamp")
    if not signatures:
        raise SignatureError("the Stripe-Signature header has no v1 signature")
    return timestamp, signatures


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256)
    return mac.hexdigest()


def verify(payload: bytes, header: str | None, secrets: Sequence[str], tolerance_s: float, now: float) -> int:
    """Returns the signed timestamp; raises SignatureError unless a v1 signature matches one of
    `secrets` and the timestamp is within `tolerance_s` of `now` (either side)."""
    if not header:
        raise SignatureError("the Stripe-Signature header is missing")
    timestamp, signatures = parse_header(header)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"the signature timestamp is outside the {tolerance_s:.0f} s tolerance")
    signed = str(timestamp).encode() + b"." + payload
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return timestamp
    raise SignatureError("no signature matches a configured webhook secret")
