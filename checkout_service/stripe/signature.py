"""Verifying the `Stripe-Signature` header on the raw body, before anything is parsed.

The header is `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.payload">[,v1=...]`; any listed v1 that
matches any of our secrets (several during rotation) within the tolerance accepts the body.

The header is read exactly as the provider's own library (`stripe.WebhookSignature.verify_header`)
reads it, and tests/unit/test_signature_equivalence.py holds the two to the same verdicts. Ours
stays because it costs half as much per webhook (`python -m bench signature` measures both) and
differs only where that library is loose or fails:
- `t` must be plain ASCII digits (the library's `int()` also takes "+5", " 5", "1_0" and other
  scripts' digits);
- a timestamp too far in the future is refused as well as one too far in the past;
- the MAC is over the raw bytes, so a body that is not UTF-8 is answered (the library raises
  UnicodeDecodeError), and so is a non-ASCII v1 value (its comparison raises TypeError)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

# A unix time in plain ASCII digits. `str.isdigit` also accepts "²" and other scripts' digits, which
# `int()` refuses or reads; and a number of hundreds of digits overflows the tolerance arithmetic.
# Eighteen digits reach far past any real timestamp and stay well inside a float.
TIMESTAMP = re.compile(r"[0-9]{1,18}")
KEYS = ("t", "v1")


class SignatureError(ValueError):
    """The body is not signed by the provider with a current secret; the message says why."""


def parse_header(header: str) -> tuple[int, list[bytes]]:
    """The timestamp and the v1 signatures. Items are split on `,`, each `key=value` with the value
    ending at a further `=`; the first `t` item is the timestamp and every `v1` item a signature; a
    `t` or `v1` item with no `=` spoils the whole header."""
    timestamps: list[str] = []
    signatures: list[bytes] = []
    for item in header.split(","):
        key, sep, rest = item.partition("=")
        if key in KEYS and not sep:
            raise SignatureError(f"the Stripe-Signature header has a {key} without a value")
        value = rest.partition("=")[0]
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value.encode("utf-8", "surrogatepass"))
    if not timestamps or not TIMESTAMP.fullmatch(timestamps[0]):
        raise SignatureError("the Stripe-Signature header has no timestamp of plain unix seconds")
    if not signatures:
        raise SignatureError("the Stripe-Signature header has no v1 signature")
    return int(timestamps[0]), signatures


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
        expected = hmac.digest(secret.encode(), signed, "sha256").hex().encode()  # one call into OpenSSL
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return timestamp
    raise SignatureError("no signature matches a configured webhook secret")
