"""Typed reading of request parameters, with Stripe's errors for missing, mistyped and unknown ones.

A handler reads every parameter it understands, names the ones it accepts and ignores, then calls
`finish()`: anything left over is `parameter_unknown`, as real Stripe answers, so a client that
misspells a parameter fails here and not first in production."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from provider_sim.errors import invalid, missing, unknown_param

INTEGER = re.compile(r"^-?\d+$")
METADATA_KEY_MAX, METADATA_VALUE_MAX, METADATA_KEYS_MAX = 40, 500, 50


@dataclass(frozen=True)
class MetadataPatch:
    """`metadata[k]=v` sets, `metadata[k]=` removes, `metadata=` clears everything."""

    clear: bool
    values: dict[str, str | None]

    def apply(self, current: Mapping[str, str]) -> dict[str, str]:
        merged = {} if self.clear else dict(current)
        for key, value in self.values.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged


def _describe(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


class Params:
    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        self._data = data
        self._prefix = prefix
        self._seen: set[str] = set()
        self._children: list[Params] = []

    def name(self, key: str) -> str:
        return f"{self._prefix}[{key}]" if self._prefix else key

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str, *, required: bool = False) -> Any:
        self._seen.add(key)
        value = self._data.get(key)
        if required and (value is None or value == ""):
            raise missing(self.name(key))
        return value

    def ignore(self, *keys: str) -> None:
        """Parameters Stripe accepts that make no difference here."""
        self._seen.update(keys)

    def finish(self) -> None:
        for key in self._data:
            if key not in self._seen:
                raise unknown_param(self.name(key))
        for child in self._children:
            child.finish()

    def text(self, key: str, *, required: bool = False, unset: bool = False) -> str | None:
        """A string; `unset=True` lets an empty string through (Stripe's way of clearing a field)."""
        value = self.raw(key, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid(self.name(key), f"Invalid string: {_describe(value)}")
        if value == "" and not unset:
            raise invalid(self.name(key), f"You passed an empty string for '{self.name(key)}'. We assume empty "
                          "values are an attempt to unset a parameter; however "
                          f"'{self.name(key)}' cannot be unset.", "parameter_invalid_empty")
        return value

    def integer(self, key: str, *, required: bool = False, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str) or not INTEGER.match(str(value)):
            raise invalid(self.name(key), f"Invalid integer: {_describe(value)}", "parameter_invalid_integer")
        number = int(value)
        if minimum is not None and number < minimum:
            raise invalid(self.name(key), f"This value must be greater than or equal to {minimum}.")
        if maximum is not None and number > maximum:
            raise invalid(self.name(key), f"This value must be less than or equal to {maximum}.")
        return number

    def boolean(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None:
            return None
        if value is True or value is False:
            return bool(value)
        if value in ("true", "false"):
            return bool(value == "true")
        raise invalid(self.name(key), f"Invalid boolean: {_describe(value)}")

    def choice(self, key: str, options: Iterable[str], *, required: bool = False) -> str | None:
        value = self.text(key, required=required)
        allowed = list(options)
        if value is not None and value not in allowed:
            raise invalid(self.name(key), f"Invalid {self.name(key)}: must be one of {', '.join(allowed)}")
        return value

    def _sequence(self, key: str, *, required: bool) -> list[Any] | None:
        value = self.raw(key, required=required)
        if value is None or value == "":
            return None if value is None else []
        if isinstance(value, list):
            return value
        if isinstance(value, dict) and all(k.isdigit() for k in value):
            return [value[k] for k in sorted(value, key=int)]
        raise invalid(self.name(key), f"Invalid array: {self.name(key)}")

    def texts(self, key: str, *, required: bool = False) -> list[str] | None:
        values = self._sequence(key, required=required)
        if values is None:
            return None
        for index, value in enumerate(values):
            if not isinstance(value, str) or not value:
                raise invalid(f"{self.name(key)}[{index}]", f"Invalid string: {_describe(value)}")
        return values

    def child(self, key: str, *, required: bool = False) -> Params | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise invalid(self.name(key), f"Invalid hash: {self.name(key)}")
        found = Params(value, self.name(key))
        self._children.append(found)
        return found

    def children(self, key: str, *, required: bool = False) -> list[Params] | None:
        values = self._sequence(key, required=required)
        if values is None:
            return None
        found = []
        for index, value in enumerate(values):
            if not isinstance(value, dict):
                raise invalid(f"{self.name(key)}[{index}]", f"Invalid hash: {self.name(key)}[{index}]")
            found.append(Params(value, f"{self.name(key)}[{index}]"))
        self._children.extend(found)
        return found

    def metadata(self, key: str = "metadata") -> MetadataPatch | None:
        value = self.raw(key)
        if value is None:
            return None
        if value == "":
            return MetadataPatch(clear=True, values={})
        if not isinstance(value, dict):
            raise invalid(self.name(key), f"Invalid hash: {self.name(key)}")
        values: dict[str, str | None] = {}
        for name, item in value.items():
            param = f"{self.name(key)}[{name}]"
            if isinstance(item, int | float) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                raise invalid(param, f"Invalid string: {_describe(item)}")
            if len(name) > METADATA_KEY_MAX:
                raise invalid(param, f"Metadata keys can have up to {METADATA_KEY_MAX} characters; {name!r} has more.")
            if len(item) > METADATA_VALUE_MAX:
                raise invalid(param, f"Metadata values can have up to {METADATA_VALUE_MAX} characters.")
            values[name] = item or None
        if len(values) > METADATA_KEYS_MAX:
            raise invalid(self.name(key), f"Metadata can have up to {METADATA_KEYS_MAX} keys.")
        return MetadataPatch(clear=False, values=values)

    def expand(self) -> list[str]:
        return self.texts("expand") or []

