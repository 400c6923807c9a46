"""Request bodies the Stripe way: form-encoded with nested keys (`items[0][price]=…`, `expand[]=…`),
or JSON objects for the control endpoints.

Decoding yields nested dicts of strings only; whether `{"0": …, "1": …}` is an array or a hash
with numeric keys (metadata may have those) is decided by the parameter reader, which knows."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from provider_sim.errors import StripeError


class FormError(StripeError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(400, message, param=param)


def split_key(key: str) -> list[str]:
    """`a[b][0][]` → `["a", "b", "0", ""]`; a malformed key is a FormError."""
    base, bracket, rest = key.partition("[")
    if not base:
        raise FormError(f"Invalid parameter name: {key!r}")
    parts = [base]
    while bracket:
        inner, closed, rest = rest.partition("]")
        if not closed or "[" in inner:
            raise FormError(f"Invalid parameter name: {key!r}")
        parts.append(inner)
        if not rest:
            break
        if not rest.startswith("["):
            raise FormError(f"Invalid parameter name: {key!r}")
        rest = rest[1:]
    return parts


def _append_index(node: dict[str, Any], rest: list[str]) -> str:
    """The index `[]` stands for: a new element, unless the last one can still take this key
    (so `items[][price]=a&items[][quantity]=1` builds one element, as Rails and Stripe do)."""
    if rest and node:
        last = node.get(str(len(node) - 1))
        if isinstance(last, dict) and rest[0] not in last:
            return str(len(node) - 1)
    return str(len(node))


def _insert(node: dict[str, Any], path: list[str], value: str, key: str) -> None:
    head, rest = path[0], path[1:]
    if head == "":
        head = _append_index(node, rest)
    if not rest:
        if isinstance(node.get(head), dict):
            raise FormError(f"Invalid hash: {key} is given both as a value and as a hash", key)
        node[head] = value
        return
    child = node.setdefault(head, {})
    if not isinstance(child, dict):
        raise FormError(f"Invalid hash: {key} is given both as a value and as a hash", key)
    _insert(child, rest, value, key)


def decode_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in pairs:
        _insert(root, split_key(key), value, key)
    return root


def decode_form(text: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(f"The request body could not be decoded: {exc}") from None
    return decode_pairs(pairs)


def decode_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        found = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(f"Invalid JSON body: {exc}") from None
    if not isinstance(found, dict):
        raise FormError("The JSON body must be an object")
    return found


def decode_body(raw: bytes, content_type: str) -> dict[str, Any]:
    if content_type == "application/json":
        return decode_json(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("The request body is not valid UTF-8") from None
    return decode_form(text)


def merge(query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Query-string parameters with the body's on top (the SDK sends GET and DELETE parameters in
    the query, POST parameters in the body)."""
    return {**query, **body}
