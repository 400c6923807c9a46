"""Whether an account may buy a price, and whether a selection of prices makes one checkout: each
problem named, with the item it is about."""

from __future__ import annotations

from dataclasses import replace

import pytest

from entitlement_service.domain.model import Mode
from entitlement_service.domain.purchasability import choice_for, validate_selection
from tests.unit.builders import CONFIG, PRICES, price, product, resolved

# Selections refer to prices by id or by lookup key, as a checkout request does.
FOUND = {**PRICES, **{r.price.lookup_key: r for r in PRICES.values() if r.price.lookup_key}}
INVALID = resolved(price("price_gold", "gold"), product("gold", plan="gold"))
INACTIVE = replace(PRICES["price_starter"], price=replace(PRICES["price_starter"].price, active=False))
OWNS_CORE = {"core": ("sub_9",)}


def problems(items: list[tuple[str, int]], owned: dict[str, tuple[str, ...]] | None = None,
             found: dict[str, object] | None = None) -> list[tuple[str, int]]:
    result = validate_selection(items, found or FOUND, CONFIG, owned or {})  # type: ignore[arg-type]
    assert result.ok is not result.problems
    return [(p.code, p.item_index) for p in result.problems]


@pytest.mark.parametrize(("items", "owned", "expected"), [
    ([("price_pro", 1)], None, []),
    ([("pro", 2)], None, []),
    ([], None, [("empty", -1)]),
    ([("price_nope", 1)], None, [("unknown_price", 0)]),
    ([("price_pro", 0)], None, [("bad_quantity", 0)]),
    ([("price_pro", 1), ("pro", 1)], None, [("duplicate_price", 1)]),
    ([("price_pro", 1)], OWNS_CORE, [("group_conflict", 0)]),
    ([("price_seats", 1)], {"addons": ("sub_9",)}, []),
    ([("price_pack", 1)], {"addons": ("sub_9",)}, []),
    ([("price_pro", 1), ("price_seats", 1)], None, [("mixed_groups", -1)]),
    ([("price_pro", 1), ("price_storage", 1)], None, []),
], ids=["one price", "by lookup key, several seats", "nothing selected", "unknown price", "quantity zero",
        "the same price twice", "recurring price in an occupied non-stackable group", "stackable group",
        "one-time price beside an owned group", "two groups in one checkout", "two prices of one group"])
def test_a_selection_is_refused_with_every_problem_named_by_item(
    items: list[tuple[str, int]], owned: dict[str, tuple[str, ...]] | None, expected: list[tuple[str, int]]
) -> None:
    assert problems(items, owned) == expected


def test_recurring_and_one_time_prices_cannot_share_a_checkout() -> None:
    pack_in_core = resolved(price("price_core_pack", "core_pack", interval=None), product("core_pack"))
    assert problems([("price_pro", 1), ("price_core_pack", 1)],
                    found={**FOUND, "price_core_pack": pack_in_core}) == [("mixed_modes", -1)]


@pytest.mark.parametrize(("items", "group", "mode"), [
    ([("price_pro", 1)], "core", Mode.SUBSCRIPTION),
    ([("price_pack", 3)], "addons", Mode.PAYMENT),
    ([("price_pro", 1), ("price_seats", 1)], None, Mode.SUBSCRIPTION),
    ([], None, None),
], ids=["a subscription", "a one-time purchase", "no one group", "nothing"])
def test_a_selection_names_the_one_group_it_buys_into_and_its_mode(
    items: list[tuple[str, int]], group: str | None, mode: Mode | None
) -> None:
    result = validate_selection(items, FOUND, CONFIG, {})
    assert (result.subscription_group, result.mode) == (group, mode)


def test_a_group_conflict_names_the_subscriptions_holding_the_group_and_points_to_the_portal() -> None:
    result = validate_selection([("price_starter", 1)], FOUND, CONFIG, {"core": ("sub_8", "sub_9")})
    assert result.conflicting_subscription_ids == ("sub_8", "sub_9")
    choice = choice_for(FOUND["price_starter"], CONFIG, {"core": ("sub_8", "sub_9")})
    assert choice.requires_portal and "through the portal" in choice.message


@pytest.mark.parametrize(("entry", "problem"), [
    (INVALID, "invalid_catalog_entry"), (INACTIVE, "inactive"), (PRICES["price_pro"], None),
], ids=["invalid catalog entry", "inactive price", "purchasable"])
def test_an_invalid_or_inactive_price_cannot_be_bought(entry: object, problem: str | None) -> None:
    choice = choice_for(entry, CONFIG, {})  # type: ignore[arg-type]
    assert (choice.purchasable, choice.problem) == (problem is None, problem)


GROUPLESS_PACK = resolved(price("price_free_pack", "free_pack", interval=None), product("free_pack", group=None))


@pytest.mark.parametrize(("items", "group"), [
    ([("price_free_pack", 2)], None),
    ([("price_free_pack", 1), ("price_pack", 1)], None),
], ids=["a one-time price without a group", "beside a one-time price with one"])
def test_a_one_time_price_without_a_group_is_bought_in_a_payment_checkout_with_no_group(
    items: list[tuple[str, int]], group: str | None
) -> None:
    assert GROUPLESS_PACK.valid and GROUPLESS_PACK.subscription_group is None
    result = validate_selection(items, {**FOUND, "price_free_pack": GROUPLESS_PACK}, CONFIG, OWNS_CORE)
    assert (result.ok, result.problems, result.subscription_group, result.mode) == (True, (), group, Mode.PAYMENT)


def test_one_time_prices_naming_two_groups_still_span_them() -> None:
    core_pack = resolved(price("price_core_pack", "core_pack", interval=None), product("core_pack"))
    found = {**FOUND, "price_core_pack": core_pack, "price_free_pack": GROUPLESS_PACK}
    assert problems([("price_core_pack", 1), ("price_pack", 1), ("price_free_pack", 1)],
                    found=found) == [("mixed_groups", -1)]
