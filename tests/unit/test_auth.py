import hashlib

import pytest

from service_runtime.auth import AuthError, Role, ServiceTokens, authorize
from service_runtime.config import ConfigError
from tests.support.tokens import TOKENS, service_tokens

ONLY_SUPPORT = frozenset({Role.SUPPORT})


@pytest.mark.parametrize(
    ("header", "unauthenticated"),
    [
        (None, True),
        ("", True),
        ("Bearer", True),
        ("Bearer ", True),
        ("Basic " + TOKENS[Role.SUPPORT], True),
        ("Bearer not-a-known-token-at-all", True),
        ("Bearer " + TOKENS[Role.PRODUCT], False),
    ],
)
def test_a_caller_without_an_allowed_token_is_refused(header: str | None, unauthenticated: bool) -> None:
    with pytest.raises(AuthError) as refused:
        authorize(service_tokens(), header, ONLY_SUPPORT)
    assert refused.value.unauthenticated is unauthenticated


def test_a_caller_with_an_allowed_role_passes_and_learns_its_role() -> None:
    assert authorize(service_tokens(), "Bearer " + TOKENS[Role.SUPPORT], ONLY_SUPPORT) is Role.SUPPORT
    assert authorize(service_tokens(), "bearer  " + TOKENS[Role.SUPPORT], ONLY_SUPPORT) is Role.SUPPORT


def test_a_method_missing_from_the_role_table_admits_nobody() -> None:
    with pytest.raises(AuthError) as refused:
        authorize(service_tokens(), "Bearer " + TOKENS[Role.OPERATOR], frozenset())
    assert refused.value.unauthenticated is False


def test_a_refusal_never_echoes_the_token() -> None:
    token = TOKENS[Role.PRODUCT]
    with pytest.raises(AuthError) as refused:
        authorize(service_tokens(), "Bearer " + token, ONLY_SUPPORT)
    assert token not in str(refused.value)


def test_an_entry_without_a_role_is_named_by_its_position_never_by_its_text() -> None:
    secret = "a-token-someone-pasted-without-its-role"
    with pytest.raises(ConfigError) as refused:
        ServiceTokens.parse(f"product:{TOKENS[Role.PRODUCT]},{secret}")
    assert "entry 2" in str(refused.value) and secret not in str(refused.value)
    assert secret[:5] not in str(refused.value)


@pytest.mark.parametrize("raw", ["admin:abcdefghijklmnopqrstu", "abcdefghijklmnopqrstu:product"])
def test_an_unknown_role_is_named_by_position_and_never_echoes_either_side(raw: str) -> None:
    with pytest.raises(ConfigError, match="entry 1 has an unknown role") as refused:
        ServiceTokens.parse(raw)
    assert "abcdefghijklmnopqrstu" not in str(refused.value)


def test_a_short_token_padded_with_spaces_is_still_too_short() -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        ServiceTokens.parse("product:x" + " " * 20)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        ServiceTokens.parse("product:" + " " * 20 + "x")


def test_a_token_listed_for_two_roles_is_refused_naming_both_roles_not_the_token() -> None:
    token = "shared-token-0123456789"
    with pytest.raises(ConfigError) as refused:
        ServiceTokens.parse(f"product:{token},operator: {token}")
    message = str(refused.value)
    assert "product" in message and "operator" in message and token not in message


def test_the_same_token_listed_twice_for_one_role_is_accepted() -> None:
    token = "same-token-0123456789"
    assert ServiceTokens.parse(f"product:{token},product:{token}").role_of(token) is Role.PRODUCT


def test_tokens_are_kept_without_the_spaces_around_them() -> None:
    token = "spaced-token-0123456789"
    assert ServiceTokens.parse(f" support :  {token}  ").role_of(token) is Role.SUPPORT


def test_the_token_table_never_shows_a_token_in_its_repr() -> None:
    tokens = service_tokens()
    assert not [t for t in TOKENS.values() if t in repr(tokens) or t in str(tokens)]


def digest_of(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_a_token_listed_by_its_digest_is_accepted_and_cannot_be_presented_by_this_process() -> None:
    tokens = ServiceTokens.parse(",".join(f"{role.value}:{digest_of(token)}" for role, token in TOKENS.items()))
    assert {role: tokens.role_of(token) for role, token in TOKENS.items()} == {role: role for role in Role}
    assert tokens.role_of(digest_of(TOKENS[Role.PRODUCT])) is None
    assert all(tokens.token_for(role) is None for role in Role)


def test_plain_and_digest_entries_mix_and_only_plain_ones_can_be_presented() -> None:
    upper_hex = hashlib.sha256(TOKENS[Role.OPERATOR].encode()).hexdigest().upper()
    tokens = ServiceTokens.parse(f"checkout:{TOKENS[Role.CHECKOUT]},operator:sha256:{upper_hex}")
    assert tokens.token_for(Role.CHECKOUT) == TOKENS[Role.CHECKOUT]
    assert tokens.token_for(Role.OPERATOR) is None
    assert tokens.role_of(TOKENS[Role.OPERATOR]) is Role.OPERATOR


@pytest.mark.parametrize("hex_digest", ["", "abc", "g" * 64, "a" * 65, "ab" * 31 + " x"])
def test_a_malformed_digest_is_refused_by_position_without_echoing_it(hex_digest: str) -> None:
    with pytest.raises(ConfigError, match="entry 2: a support digest must be") as refused:
        ServiceTokens.parse(f"product:{TOKENS[Role.PRODUCT]},support:sha256:{hex_digest}")
    assert not hex_digest or hex_digest not in str(refused.value)


def test_one_token_given_plain_for_one_role_and_by_digest_for_another_is_refused() -> None:
    token = TOKENS[Role.PRODUCT]
    with pytest.raises(ConfigError, match="gives the product token to operator too"):
        ServiceTokens.parse(f"product:{token},operator:{digest_of(token)}")


def test_a_presented_token_that_is_not_valid_unicode_is_simply_unknown() -> None:
    assert service_tokens().role_of("\ud800" * 20) is None
