import hashlib
import hmac

import pytest
import stripe

from checkout_service.stripe.signature import SignatureError, sign, verify

BODY = b'{"id": "evt_1", "object": "event"}'
NOW = 1_790_000_000


def header(secret: str = "whsec_new", at: int = NOW, body: bytes = BODY) -> str:
    return f"t={at},v1={sign(body, secret, at)}"


def test_our_signature_is_the_providers_signature() -> None:
    expected = hmac.new(b"whsec_new", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header() == f"t={NOW},v1={expected}"
    assert stripe.WebhookSignature.verify_header(BODY.decode(), header(), "whsec_new", tolerance=None)


@pytest.mark.parametrize("secrets", [("whsec_new",), ("whsec_old", "whsec_new"), ("whsec_new", "whsec_old")])
def test_any_configured_secret_may_match_during_rotation(secrets: tuple[str, ...]) -> None:
    assert verify(BODY, header(), secrets, 300, NOW) == NOW


def test_one_of_several_signatures_in_the_header_may_match() -> None:
    both = f"t={NOW},v1={'0' * 64},v1={sign(BODY, 'whsec_new', NOW)}"
    assert verify(BODY, both, ("whsec_new",), 300, NOW) == NOW


@pytest.mark.parametrize(("value", "why"), [
    (None, "missing"),
    ("", "missing"),
    ("v1=abc", "no timestamp"),
    (f"t={NOW}", "no v1 signature"),
    (header(secret="whsec_other"), "no signature matches"),
    (header(body=b'{"id": "evt_2"}'), "no signature matches"),
    (header(at=NOW - 301), "outside the 300 s tolerance"),
    (header(at=NOW + 301), "outside the 300 s tolerance"),
])
def test_a_body_not_signed_with_a_current_secret_is_refused_with_the_reason(value: str | None, why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        verify(BODY, value, ("whsec_new",), 300, NOW)


def test_a_timestamp_exactly_at_the_tolerance_is_accepted() -> None:
    assert verify(BODY, header(at=NOW - 300), ("whsec_new",), 300, NOW) == NOW - 300


@pytest.mark.parametrize("value", [
    "t=" + "9" * 400 + ",v1=00",  # beyond a float: the tolerance arithmetic would overflow
    "t=" + "1" * 19 + ",v1=00",  # beyond any unix time this service will see
    "t=\u00b2,v1=00",  # a digit to str.isdigit, not to int()
    "t=\u0661\u0662,v1=00",  # Arabic-Indic digits: int() reads them, the provider never sends them
    "t=-5,v1=00",
    "t=+5,v1=00",
    "t= 5,v1=00",
    "t=,v1=00",
])
def test_a_timestamp_that_is_not_plain_ascii_digits_of_sane_length_is_refused_as_malformed(value: str) -> None:
    with pytest.raises(SignatureError, match="no timestamp"):
        verify(BODY, value, ("whsec_new",), 300, NOW)
