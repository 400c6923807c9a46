import hashlib

import pytest

from checkout_service.cli import operator_token
from checkout_service.settings import Settings as CheckoutSettings
from entitlement_service.settings import Settings as EntitlementSettings
from service_runtime.auth import Role
from service_runtime.config import Address, ConfigError, redacted_url
from tests.support.tokens import SERVICE_TOKENS, TOKENS

CHECKOUT_ENV = {
    "SERVICE_TOKENS": SERVICE_TOKENS,
    "STRIPE_API_KEY": "sk_test_123",
    "STRIPE_WEBHOOK_SECRETS": "whsec_old, whsec_new",
}


def test_entitlement_defaults_follow_the_contract() -> None:
    settings = EntitlementSettings.from_env({"SERVICE_TOKENS": SERVICE_TOKENS})
    assert settings.grpc_addr == Address("127.0.0.1", 50051)
    assert settings.metrics_addr == Address("127.0.0.1", 9464)


def test_checkout_defaults_follow_the_contract() -> None:
    settings = CheckoutSettings.from_env(CHECKOUT_ENV)
    assert settings.grpc_addr == Address("127.0.0.1", 50052)
    assert settings.http_addr == Address("127.0.0.1", 8080)
    assert settings.entitlement_target == "127.0.0.1:50051"
    assert settings.stripe_webhook_secrets == ("whsec_old", "whsec_new")
    assert settings.stripe_webhook_tolerance_s == 300
    assert settings.stripe_sync_mode == "payload"
    assert settings.stripe_api_base is None


def test_checkout_presents_the_checkout_roles_token() -> None:
    settings = CheckoutSettings.from_env(CHECKOUT_ENV)
    assert settings.service_tokens.role_of(settings.entitlement_token) is not None
    assert settings.service_tokens.role_of(settings.entitlement_token).value == "checkout"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "SERVICE_TOKENS"),
        ({"SERVICE_TOKENS": "admin:abcdefghijklmnopqrstu"}, "SERVICE_TOKENS"),
        ({"SERVICE_TOKENS": "product"}, "SERVICE_TOKENS"),
        ({"SERVICE_TOKENS": "product:short"}, "SERVICE_TOKENS"),
        ({"SERVICE_TOKENS": SERVICE_TOKENS, "ENTITLEMENT_GRPC_ADDR": "50051"}, "ENTITLEMENT_GRPC_ADDR"),
        ({"SERVICE_TOKENS": SERVICE_TOKENS, "ENTITLEMENT_METRICS_ADDR": "host:port"}, "ENTITLEMENT_METRICS_ADDR"),
        ({"SERVICE_TOKENS": SERVICE_TOKENS, "SHUTDOWN_GRACE_S": "soon"}, "SHUTDOWN_GRACE_S"),
        ({"SERVICE_TOKENS": SERVICE_TOKENS, "LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ],
)
def test_a_missing_or_malformed_entitlement_setting_is_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        EntitlementSettings.from_env(env)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"STRIPE_API_KEY": ""}, "STRIPE_API_KEY"),
        ({"STRIPE_WEBHOOK_SECRETS": " , "}, "STRIPE_WEBHOOK_SECRETS"),
        ({"STRIPE_SYNC_MODE": "push"}, "STRIPE_SYNC_MODE"),
        ({"STRIPE_WEBHOOK_TOLERANCE_S": "0"}, "STRIPE_WEBHOOK_TOLERANCE_S"),
        ({"CHECKOUT_HTTP_ADDR": "localhost:99999"}, "CHECKOUT_HTTP_ADDR"),
        ({"SERVICE_TOKENS": "product:abcdefghijklmnopqrstu"}, "checkout"),
    ],
)
def test_a_missing_or_malformed_checkout_setting_is_refused_by_name(change: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        CheckoutSettings.from_env(CHECKOUT_ENV | change)


def test_an_ipv6_listen_address_is_accepted() -> None:
    settings = EntitlementSettings.from_env({"SERVICE_TOKENS": SERVICE_TOKENS, "ENTITLEMENT_GRPC_ADDR": "[::1]:7000"})
    assert settings.grpc_addr == Address("::1", 7000)


def test_the_checkout_settings_repr_shows_no_secret() -> None:
    settings = CheckoutSettings.from_env(CHECKOUT_ENV | {"STRIPE_API_KEY": "sk_test_key_that_must_not_show"})
    shown = repr(settings) + str(settings)
    hidden = ["sk_test_key_that_must_not_show", "whsec_old", "whsec_new", *TOKENS.values()]
    assert [s for s in hidden if s in shown] == []
    assert "127.0.0.1" in shown and "stripe_webhook_tolerance_s=300" in shown  # still useful to read


def test_the_entitlement_settings_repr_shows_no_token_and_no_database_password() -> None:
    url = "postgresql://app:pa55-w0rd@db.internal:5432/selfserve"
    settings = EntitlementSettings.from_env({"SERVICE_TOKENS": SERVICE_TOKENS, "DATABASE_URL": url})
    shown = repr(settings) + str(settings)
    assert "pa55-w0rd" not in shown and [t for t in TOKENS.values() if t in shown] == []
    assert "postgresql://app:***@db.internal:5432/selfserve" in shown
    assert settings.database_url == url  # the service still connects with the real one


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://postgres@127.0.0.1:5432/selfserve", "postgresql://postgres@127.0.0.1:5432/selfserve"),
    ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
    ("postgresql://u:secret@h/db?password=other", "postgresql://u:***@h/db?password=***"),
    ("postgresql:///selfserve?host=/tmp&password=other", "postgresql:///selfserve?host=/tmp&password=***"),
    ("postgresql://u:a@b@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:a/b@h/db", "postgresql://u:***@h/db"),
])
def test_a_database_url_is_shown_with_its_password_replaced(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_checkout_can_hold_digests_only_and_present_its_own_token_from_entitlement_token() -> None:
    digests = ",".join(f"{role.value}:sha256:{hashlib.sha256(token.encode()).hexdigest()}"
                       for role, token in TOKENS.items())
    settings = CheckoutSettings.from_env(CHECKOUT_ENV | {"SERVICE_TOKENS": digests,
                                                         "ENTITLEMENT_TOKEN": TOKENS[Role.CHECKOUT]})
    assert settings.entitlement_token == TOKENS[Role.CHECKOUT]
    assert TOKENS[Role.CHECKOUT] not in repr(settings)
    with pytest.raises(ConfigError, match="ENTITLEMENT_TOKEN"):
        CheckoutSettings.from_env(CHECKOUT_ENV | {"SERVICE_TOKENS": digests})


def test_catalog_apply_presents_the_operator_token_never_the_checkout_services_own() -> None:
    plain = CheckoutSettings.from_env(CHECKOUT_ENV)
    assert operator_token(plain, {}) == TOKENS[Role.OPERATOR]
    given = "an-operator-token-0123456789"
    assert operator_token(plain, {"ENTITLEMENT_TOKEN": given}) == given
    digests_only = CheckoutSettings.from_env(CHECKOUT_ENV | {
        "SERVICE_TOKENS": f"checkout:sha256:{hashlib.sha256(TOKENS[Role.CHECKOUT].encode()).hexdigest()}",
        "ENTITLEMENT_TOKEN": TOKENS[Role.CHECKOUT]})
    assert operator_token(digests_only, {"ENTITLEMENT_TOKEN": TOKENS[Role.OPERATOR]}) == TOKENS[Role.OPERATOR]
    with pytest.raises(ConfigError, match="operator's token"):
        operator_token(digests_only, {})
