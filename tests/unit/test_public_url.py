"""Where paying customers' browsers are sent back to: required when the HTTP server listens on
every address, since its listen address is then no address a browser can reach."""

from __future__ import annotations

import pytest

from checkout_service.settings import Settings
from service_runtime.config import ConfigError
from tests.support.tokens import SERVICE_TOKENS

ENV = {"SERVICE_TOKENS": SERVICE_TOKENS, "STRIPE_API_KEY": "sk_test_123", "STRIPE_WEBHOOK_SECRETS": "whsec_1"}


@pytest.mark.parametrize("address", ["0.0.0.0:8080", "[::]:8080"])
def test_a_wildcard_http_address_needs_a_public_url(address: str) -> None:
    with pytest.raises(ConfigError, match="CHECKOUT_PUBLIC_URL is required"):
        Settings.from_env({**ENV, "CHECKOUT_HTTP_ADDR": address})
    given = Settings.from_env({**ENV, "CHECKOUT_HTTP_ADDR": address, "CHECKOUT_PUBLIC_URL": "https://pay.example/"})
    assert given.public_url == "https://pay.example"


def test_a_specific_http_address_is_its_own_public_url_by_default() -> None:
    assert Settings.from_env({**ENV, "CHECKOUT_HTTP_ADDR": "127.0.0.1:8080"}).public_url is None
