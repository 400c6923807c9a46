"""The budget settings: defaults as documented, bad values refused by name."""

from __future__ import annotations

import pytest

from checkout_service.settings import Settings as CheckoutSettings
from entitlement_service.settings import Settings as EntitlementSettings
from service_runtime.config import ConfigError
from tests.support.tokens import SERVICE_TOKENS

CHECKOUT_ENV = {"SERVICE_TOKENS": SERVICE_TOKENS, "STRIPE_API_KEY": "sk_test_123", "STRIPE_WEBHOOK_SECRETS": "whsec_1"}


def test_checkout_budgets_default_to_the_documented_values() -> None:
    settings = CheckoutSettings.from_env(CHECKOUT_ENV)
    assert (settings.stripe_timeout_s, settings.stripe_max_retries, settings.stripe_deadline_s) == (10, 2, 20)
    assert (settings.http_max_in_flight, settings.grpc_max_in_flight) == (256, 256)


def test_the_entitlement_grpc_cap_defaults_to_the_documented_value() -> None:
    assert EntitlementSettings.from_env({"SERVICE_TOKENS": SERVICE_TOKENS}).grpc_max_in_flight == 4096


def test_checkout_budgets_are_read_from_the_environment() -> None:
    settings = CheckoutSettings.from_env({
        **CHECKOUT_ENV, "STRIPE_TIMEOUT_S": "2.5", "STRIPE_MAX_RETRIES": "0", "STRIPE_DEADLINE_S": "4",
        "CHECKOUT_HTTP_MAX_IN_FLIGHT": "64", "CHECKOUT_GRPC_MAX_IN_FLIGHT": "32"})
    assert (settings.stripe_timeout_s, settings.stripe_max_retries, settings.stripe_deadline_s) == (2.5, 0, 4)
    assert (settings.http_max_in_flight, settings.grpc_max_in_flight) == (64, 32)


@pytest.mark.parametrize(("name", "value"), [
    ("STRIPE_TIMEOUT_S", "0"), ("STRIPE_TIMEOUT_S", "soon"), ("STRIPE_MAX_RETRIES", "-1"),
    ("STRIPE_DEADLINE_S", "0"), ("CHECKOUT_HTTP_MAX_IN_FLIGHT", "0"), ("CHECKOUT_GRPC_MAX_IN_FLIGHT", "many"),
])
def test_a_bad_checkout_budget_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        CheckoutSettings.from_env({**CHECKOUT_ENV, name: value})


def test_a_bad_entitlement_grpc_cap_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="ENTITLEMENT_GRPC_MAX_IN_FLIGHT"):
        EntitlementSettings.from_env({"SERVICE_TOKENS": SERVICE_TOKENS, "ENTITLEMENT_GRPC_MAX_IN_FLIGHT": "0"})
