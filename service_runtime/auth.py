"""Bearer-token authentication with roles, shared by both services' transports."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from service_runtime.config import ConfigError


class Role(StrEnum):
    PRODUCT = "product"
    CHECKOUT = "checkout"
    SUPPORT = "support"
    OPERATOR = "operator"


# A token given by its digest: `role:sha256:<64 hex digits>`, the SHA-256 of the token's UTF-8 bytes.
DIGEST_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class ServiceTokens:
    """The `SERVICE_TOKENS` table: which role each token carries, kept by the token's SHA-256 digest.

    An entry is `role:<token>` or `role:sha256:<hex digest of the token>`: a process that only
    checks tokens needs their digests alone, so it holds nothing it could present as another role.
    Its repr names the roles only."""

    by_digest: Mapping[bytes, Role] = field(repr=False)
    # The entries given as plain tokens, by role: what this process could present itself.
    plain: Mapping[Role, str] = field(repr=False)

    @classmethod
    def parse(cls, raw: str, name: str = "SERVICE_TOKENS") -> ServiceTokens:
        """Every error names an entry by its position, never by its text: a malformed entry may be
        a token with its role forgotten, and start-up errors reach logs and terminals."""
        by_digest: dict[bytes, Role] = {}
        plain: dict[Role, str] = {}
        entries = [part.strip() for part in raw.split(",")]
        for position, entry in enumerate(filter(None, entries), start=1):
            role_text, sep, token = entry.partition(":")
            role_text, token = role_text.strip(), token.strip()
            if not sep or not token:
                raise ConfigError(f"{name} entry {position} is not role:token or role:sha256:<hex digest>")
            try:
                role = Role(role_text)
            except ValueError:
                roles = ", ".join(r.value for r in Role)
                raise ConfigError(f"{name} entry {position} has an unknown role; roles: {roles}") from None
            if token.startswith(DIGEST_PREFIX):
                hex_digest = token.removeprefix(DIGEST_PREFIX).strip()
                if not _HEX_DIGEST.fullmatch(hex_digest):
                    raise ConfigError(f"{name} entry {position}: a {role.value} digest must be sha256: and "
                                      "64 hex digits")
                digest = bytes.fromhex(hex_digest)
            elif len(token) < 16:
                raise ConfigError(f"{name} entry {position}: the {role.value} token must be at least 16 characters")
            else:
                digest = token_digest(token)
                plain.setdefault(role, token)
            held = by_digest.setdefault(digest, role)
            if held is not role:  # one role would silently win: a caller's access must not hinge on order
                raise ConfigError(f"{name} entry {position} gives the {held.value} token to {role.value} too; "
                                  "each token may carry one role")
        if not by_digest:
            raise ConfigError(f"{name} must list at least one role:token")
        return cls(by_digest, plain)

    def __repr__(self) -> str:
        roles = sorted(r.value for r in set(self.by_digest.values()))
        return f"ServiceTokens(roles={roles}, tokens={len(self.by_digest)})"

    def role_of(self, token: str) -> Role | None:
        # Looked up by digest: what the lookup's timing could reveal is about the digest, not about
        # how much of a real token a caller has guessed.
        return self.by_digest.get(token_digest(token))

    def token_for(self, role: Role) -> str | None:
        """The role's token when it was listed in plain text (a digest cannot be presented)."""
        return self.plain.get(role)


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
