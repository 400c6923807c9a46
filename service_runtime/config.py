"""Reading settings from the environment: every bad value fails at start-up naming its variable."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


class ConfigError(ValueError):
    """A missing or malformed environment variable."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Env:
    """Typed access to an environment mapping; errors name the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str | None = None) -> str:
        value = self._environ.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(f"{name} is required but not set")
        return default

    def optional(self, name: str) -> str | None:
        return self._environ.get(name, "").strip() or None

    def number(self, name: str, default: float, *, minimum: float = 0) -> float:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
        return value

    def address(self, name: str, default: str) -> Address:
        return parse_address(name, self.text(name, default))

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def choices(self, name: str, default: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        """A comma-separated list of allowed values, each once, in the order given."""
        raw = self.text(name, default)
        values = tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))
        unknown = [v for v in values if v not in allowed]
        if not values or unknown:
            raise ConfigError(f"{name} must list values among {', '.join(allowed)}, got {raw!r}")
        return values


def parse_address(name: str, raw: str) -> Address:
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{name} must be host:port, got {raw!r}")
    return Address(host.strip("[]"), int(port_text))


# Marks a settings field whose value must never be shown: `field(metadata=SECRET)`. A URL field
# marked `URL_WITH_PASSWORD` is shown with its password replaced.
SECRET: Mapping[str, str] = {"redact": "secret"}
URL_WITH_PASSWORD: Mapping[str, str] = {"redact": "url"}
HIDDEN = "***"
_HIDE = rf"\g<1>{HIDDEN}"
_QUERY_PASSWORD = re.compile(r"((?:^|[?&\s])[^=&?\s]*password=)[^&#\s]*", re.IGNORECASE)


def redacted_url(url: str) -> str:
    """`url` with the password of its user part and any `password=` parameter replaced by `***`.
    The user part ends at the last `@` before the query, since a password may hold an unescaped
    `@` or `/`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _QUERY_PASSWORD.sub(_HIDE, url)
    query_at = rest.find("?") if "?" in rest else len(rest)
    userinfo, at, after = rest[:query_at].rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:{HIDDEN}@{after}{rest[query_at:]}"
    return f"{scheme}://{_QUERY_PASSWORD.sub(_HIDE, rest)}"


def redacted_repr(settings: Any) -> str:
    """A settings dataclass's repr with its SECRET fields hidden and its URL_WITH_PASSWORD fields
    shown without their passwords: settings get printed while debugging and logged on start-up."""
    shown = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        kind = f.metadata.get("redact")
        if kind == "secret":
            text = repr(tuple(HIDDEN for _ in value)) if isinstance(value, tuple) else repr(HIDDEN)
        elif kind == "url" and isinstance(value, str):
            text = repr(redacted_url(value))
        else:
            text = repr(value)
        shown.append(f"{f.name}={text}")
    return f"{type(settings).__name__}({', '.join(shown)})"
