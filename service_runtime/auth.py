"""Bearer-token authentication with roles, shared by both services' transports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from service_runtime.config import ConfigError


class Role(StrEnum):
    PRODUCT = "product"
    CHECKOUT = "checkout"
    SUPPORT = "support"
    OPERATOR = "operator"


@dataclass(frozen=True)
class ServiceTokens:
    """The `SERVICE_TOKENS` table: which role each token carries. Its repr names the roles only."""

    by_token: Mapping[str, Role] = field(repr=False)

    @classmethod
    def parse(cls, raw: str, name: str = "SERVICE_TOKENS") -> ServiceTokens:
        """Every error names an entry by its position, never by its text: a malformed entry may be
        a token with its role forgotten, and start-up errors reach logs and terminals."""
        by_token: dict[str, Role] = {}
        entries = [part.strip() for part in raw.split(",")]
        for position, entry in enumerate(filter(None, entries), start=1):
            role_text, sep, token = entry.partition(":")
            role_text, token = role_text.strip(), token.strip()
            if not sep or not token:
                raise ConfigError(f"{name} entry {position} is not role:token")
            try:
                role = Role(role_text)
            except ValueError:
                roles = ", ".join(r.value for r in Role)
                raise ConfigError(f"{name} entry {position} has an unknown role; roles: {roles}") from None
            if len(token) < 16:
                raise ConfigError(f"{name} entry {position}: the {role.value} token must be at least 16 characters")
            held = by_token.setdefault(token, role)
            if held is not role:  # one role would silently win: a caller's access must not hinge on order
                raise ConfigError(f"{name} entry {position} gives the {held.value} token to {role.value} too; "
                                  "each token may carry one role")
        if not by_token:
            raise ConfigError(f"{name} must list at least one role:token")
        return cls(by_token)

    def __repr__(self) -> str:
        roles = sorted(r.value for r in set(self.by_token.values()))
        return f"ServiceTokens(roles={roles}, tokens={len(self.by_token)})"

    def role_of(self, token: str) -> Role | None:
        # A dict lookup compares characters only after the keyed (per-process random) string hashes
        # match, so its timing reveals nothing about how much of a real token was guessed; hashing
        # each presented token with SHA-256 first would buy nothing more and cost every call.
        return self.by_token.get(token)

    def token_for(self, role: Role) -> str | None:
        return next((token for token, r in self.by_token.items() if r is role), None)


class AuthError(Exception):
    """Raised with `unauthenticated` True for a missing/unknown token, else for a wrong role."""

    def __init__(self, message: str, *, unauthenticated: bool) -> None:
        super().__init__(message)
        self.unauthenticated = unauthenticated


def authorize(tokens: ServiceTokens, header: str | None, allowed: frozenset[Role]) -> Role:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer token", unauthenticated=True)
    role = tokens.role_of(token.strip())
    if role is None:
        raise AuthError("unknown token", unauthenticated=True)
    if role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise AuthError(f"role {role.value} may not call this; allowed: {names}", unauthenticated=False)
    return role
