"""Service tokens for tests: one per role."""

from service_runtime.auth import Role, ServiceTokens

TOKENS = {role: f"{role.value}-token-for-tests-0123456789" for role in Role}
SERVICE_TOKENS = ",".join(f"{role.value}:{token}" for role, token in TOKENS.items())


def bearer(role: Role) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {TOKENS[role]}"),)


def service_tokens() -> ServiceTokens:
    return ServiceTokens.parse(SERVICE_TOKENS)
