"""Our Stripe-Signature check against the provider's own library, on generated and mutated headers:
the same verdict wherever that library gives one, and the differences the module documents.

The library reads the clock itself, so timestamps here are placed relative to the real time, and
never within a few seconds of the tolerance's edge."""

from __future__ import annotations

import time
from dataclasses import dataclass

import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkout_service.stripe.signature import TIMESTAMP, SignatureError, sign, verify

TOLERANCE_S = 300
POOL = ("whsec_old", "whsec_new", "whsec_elsewhere")
EXAMPLES = 2000


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    failed: bool = False  # the library raised something other than its verification error


def library(body: bytes, header: str, secrets: tuple[str, ...]) -> Verdict:
    """`verify_header` once per configured secret, as a caller of the library would use it."""
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(body, header, secret, tolerance=TOLERANCE_S)
        except stripe.SignatureVerificationError:
            continue
        except (UnicodeDecodeError, TypeError):
            return Verdict(accepted=False, failed=True)
        return Verdict(accepted=True)
    return Verdict(accepted=False)


def ours(body: bytes, header: str, secrets: tuple[str, ...]) -> bool:
    try:
        verify(body, header, secrets, TOLERANCE_S, time.time())
    except SignatureError:
        return False
    return True


def first_timestamp(header: str) -> str | None:
    return next((item.partition("=")[2].partition("=")[0] for item in header.split(",")
                 if item.partition("=")[0] == "t"), None)


# Seconds from now, kept clear of the tolerance's edges on either side.
offsets = st.integers(-3 * TOLERANCE_S, 3 * TOLERANCE_S).filter(lambda s: abs(abs(s) - TOLERANCE_S) > 10)
odd_timestamps = st.sampled_from(["", " {t}", "+{t}", "0{t}", "{t}.0", "\u0661\u0662", "\u00b2", "-{t}", "1_{t}",
                                  "9" * 30, "{t} ", "{t}=extra"])


@st.composite
def signed_requests(draw: st.DrawFn) -> tuple[bytes, str, tuple[str, ...]]:
    body = draw(st.one_of(
        st.text(max_size=200).map(str.encode),
        st.binary(max_size=200),
        st.just(b'{"id": "evt_1", "object": "event", "type": "invoice.paid"}'),
    ))
    at = int(time.time()) + draw(offsets)
    items: list[str] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["t", "odd t", "v1 good", "v1 foreign", "v1 junk", "v0", "bare", "noise"]))
        if kind == "t":
            items.append(f"t={at}")
        elif kind == "odd t":
            items.append("t=" + draw(odd_timestamps).format(t=at))
        elif kind == "v1 good":
            items.append(f"v1={sign(body, draw(st.sampled_from(POOL)), at)}" + draw(st.sampled_from(["", "=x"])))
        elif kind == "v1 foreign":
            items.append(f"v1={sign(body, draw(st.sampled_from(POOL)), at + draw(st.integers(-5, 5)))}")
        elif kind == "v1 junk":
            items.append("v1=" + draw(st.text(max_size=70)))
        elif kind == "v0":
            items.append(f"v0={sign(body, draw(st.sampled_from(POOL)), at)}")
        elif kind == "bare":
            items.append(draw(st.sampled_from(["t", "v1", " t=1", "v1 ", "=", ""])))
        else:
            items.append(draw(st.text(max_size=20)))
    header = ",".join(draw(st.permutations(items)))
    secrets = tuple(draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=3, unique=True)))
    return body, header, secrets


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signed_requests())
def test_our_verdict_is_the_librarys_but_for_the_documented_differences(
        request: tuple[bytes, str, tuple[str, ...]]) -> None:
    body, header, secrets = request
    accepted = ours(body, header, secrets)  # raises nothing but SignatureError, whatever it is given
    theirs = library(body, header, secrets)
    if theirs.failed:
        return  # the library cannot answer; ours answered by the MAC over the raw bytes
    stamp = first_timestamp(header) or ""
    plain = TIMESTAMP.fullmatch(stamp) is not None
    in_future = plain and int(stamp) > time.time() + TOLERANCE_S
    assert accepted == (theirs.accepted and plain and not in_future), (header, theirs)


@settings(max_examples=EXAMPLES // 4, deadline=None)
@given(st.text(max_size=300), st.binary(max_size=100))
def test_any_header_text_is_refused_cleanly_or_accepted_as_the_library_would(header: str, body: bytes) -> None:
    accepted = ours(body, header, POOL)
    assert not accepted or library(body, header, POOL).accepted
