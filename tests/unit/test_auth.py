import pytest

from service_runtime.auth import AuthError, Role, authorize
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
