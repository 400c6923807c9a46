"""Stripe's form encoding decoded back to what the SDK meant, and typed parameter reading."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stripe._encode import _api_encode

from provider_sim.billing import add_interval, next_boundary
from provider_sim.errors import StripeError
from provider_sim.forms import FormError, decode_form, split_key
from provider_sim.params import MetadataPatch, Params


@pytest.mark.parametrize(("key", "parts"), [
    ("mode", ["mode"]), ("items[0][price]", ["items", "0", "price"]), ("expand[]", ["expand", ""]),
    ("metadata[gating.bundle]", ["metadata", "gating.bundle"]), ("a[b][][c]", ["a", "b", "", "c"]),
])
def test_keys_split_into_their_path(key: str, parts: list[str]) -> None:
    assert split_key(key) == parts


@pytest.mark.parametrize("key", ["[a]", "a[b", "a[b]c", "a[b[c]]"])
def test_malformed_keys_are_400(key: str) -> None:
    with pytest.raises(FormError):
        split_key(key)


@pytest.mark.parametrize(("body", "decoded"), [
    ("items[0][price]=p&items[0][quantity]=2&items[1][price]=q",
     {"items": {"0": {"price": "p", "quantity": "2"}, "1": {"price": "q"}}}),
    ("expand[]=a&expand[]=b", {"expand": {"0": "a", "1": "b"}}),
    ("items[][price]=p&items[][quantity]=1&items[][price]=q", {"items": {"0": {"price": "p", "quantity": "1"},
                                                                        "1": {"price": "q"}}}),
    (urlencode(list(_api_encode({"active": False, "x": {"y": True}}))), {"active": "false", "x": {"y": "true"}}),
    ("metadata[k]=&name=A+B", {"metadata": {"k": ""}, "name": "A B"}),
    ("url=https%3A%2F%2Fx%2F%3Fs%3D%7BCHECKOUT_SESSION_ID%7D", {"url": "https://x/?s={CHECKOUT_SESSION_ID}"}),
])
def test_bodies_decode_into_nested_values(body: str, decoded: dict[str, Any]) -> None:
    assert decode_form(body) == decoded


@pytest.mark.parametrize("body", ["a=1&a[b]=2", "a[b]=2&a=1", "a=%ff"])
def test_conflicting_or_undecodable_bodies_are_400(body: str) -> None:
    with pytest.raises(StripeError) as raised:
        decode_form(body)
    assert raised.value.status == 400


NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=8)
# Booleans are left out: the SDK writes one inside an array as Python prints it ("False").
SCALARS = st.one_of(st.text(max_size=10), st.integers(-10**6, 10**6).map(str))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3), st.dictionaries(NAMES, inner, min_size=1, max_size=3)), max_leaves=10)


def as_form_tree(value: Any) -> Any:
    """What decoding yields: strings, and dicts for both hashes and arrays (indexes as keys)."""
    if isinstance(value, list):
        return {str(i): as_form_tree(v) for i, v in enumerate(value)}
    if isinstance(value, dict):
        return {k: as_form_tree(v) for k, v in value.items()}
    return value


@given(st.dictionaries(NAMES, VALUES, min_size=1, max_size=4))
def test_whatever_the_sdk_encodes_decodes_back(params: dict[str, Any]) -> None:
    assert decode_form(urlencode(list(_api_encode(params)))) == as_form_tree(params)


def test_params_read_types_and_reject_leftovers() -> None:
    params = Params({"quantity": "3", "flag": "true", "tags": {"1": "b", "0": "a"}, "extra": "x",
                     "items": {"0": {"price": "p", "bogus": "1"}}})
    assert params.integer("quantity", minimum=1) == 3 and params.boolean("flag") is True
    assert params.texts("tags") == ["a", "b"]
    [item] = params.children("items") or []
    assert item.text("price") == "p"
    with pytest.raises(StripeError) as leftover:
        params.finish()
    assert leftover.value.code == "parameter_unknown" and leftover.value.param == "extra"
    params.ignore("extra")
    with pytest.raises(StripeError) as nested:
        params.finish()
    assert nested.value.param == "items[0][bogus]"


@pytest.mark.parametrize(("data", "read", "code"), [
    ({"n": "1.5"}, lambda p: p.integer("n"), "parameter_invalid_integer"),
    ({"n": {"a": "1"}}, lambda p: p.integer("n"), "parameter_invalid_integer"),
    ({"b": "yes"}, lambda p: p.boolean("b"), None),
    ({"s": {"a": "1"}}, lambda p: p.text("s"), None),
    ({"s": ""}, lambda p: p.text("s"), "parameter_invalid_empty"),
    ({}, lambda p: p.text("s", required=True), "parameter_missing"),
    ({"m": {"k" * 41: "v"}}, lambda p: p.metadata("m"), None),
])
def test_mistyped_parameters_are_400(data: dict[str, Any], read: Any, code: str | None) -> None:
    with pytest.raises(StripeError) as raised:
        read(Params(data))
    assert (raised.value.status, raised.value.code) == (400, code)


def test_metadata_patches_set_remove_and_clear() -> None:
    patch = Params({"metadata": {"a": "1", "b": ""}}).metadata()
    assert patch == MetadataPatch(clear=False, values={"a": "1", "b": None})
    assert patch.apply({"b": "old", "c": "keep"}) == {"a": "1", "c": "keep"}
    cleared = Params({"metadata": ""}).metadata()
    assert cleared is not None and cleared.apply({"x": "y"}) == {}


JAN_31 = 1769817600  # 2026-01-31T00:00:00Z


@pytest.mark.parametrize(("interval", "count", "expected"), [
    ("month", 1, 1772236800),   # 2026-02-28: clamped to the month's end
    ("month", 2, 1774915200),   # 2026-03-31: the anchor day again
    ("year", 1, 1801353600),    # 2027-01-31
    ("week", 1, JAN_31 + 7 * 86400),
    ("day", 3, JAN_31 + 3 * 86400),
])
def test_intervals_are_added_as_stripe_bills_them(interval: str, count: int, expected: int) -> None:
    assert add_interval(JAN_31, interval, count) == expected


def test_period_boundaries_count_from_the_anchor_and_never_drift() -> None:
    feb = add_interval(JAN_31, "month", 1)
    assert next_boundary(JAN_31, feb, "month", 1) == add_interval(JAN_31, "month", 2)
    assert next_boundary(JAN_31, JAN_31, "month", 1) == feb
