from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog_rules.metadata import (
    MetadataError,
    bundle_without_plan,
    explain_price,
    group_of_items,
    merge_grants,
    parse_grants,
    resolve_price,
    resolve_prices,
)
from catalog_rules.model import (
    Cadence,
    CatalogConfig,
    GateBundle,
    GrantProgram,
    GrantSpec,
    Group,
    Plan,
    PlanKind,
    Price,
    Product,
    ResolvedPrice,
    Source,
)

AT = datetime(2025, 1, 1, tzinfo=UTC)

CONFIG = CatalogConfig(
    groups={"core": Group("core", stackable=False), "addons": Group("addons", stackable=True)},
    plans={"pro": Plan("pro", 20), "pro_plus": Plan("pro_plus", 30), "seats": Plan("seats", 5, PlanKind.ADDON)},
    grant_programs={
        "ai_credits": GrantProgram("ai_credits", Cadence.PER_PERIOD, "credit"),
        "seats": GrantProgram("seats", Cadence.WHILE_ACTIVE, "seat"),
    },
    gate_bundles={"pro": GateBundle("pro", ("export",)), "pro_plus": GateBundle("pro_plus", ("export", "api"))},
)


def product(metadata: dict[str, str] | None = None, **fields: object) -> Product:
    values: dict[str, object] = {
        "product_id": "pro", "name": "Pro", "active": True, "provider_updated_at": AT,
        "metadata": {"subscription_group": "core"} if metadata is None else metadata,
    }
    return Product(**{**values, **fields})  # type: ignore[arg-type]


def price(metadata: dict[str, str] | None = None, **fields: object) -> Price:
    values: dict[str, object] = {
        "price_id": "price_1", "product_id": "pro", "lookup_key": "pro_monthly", "active": True,
        "unit_amount": 2000, "currency": "usd", "interval": "month", "interval_count": 1,
        "provider_updated_at": AT, "metadata": metadata or {},
    }
    return Price(**{**values, **fields})  # type: ignore[arg-type]


def grant(code: str, amount: int, source: Source, scale: bool = True) -> GrantSpec:
    return GrantSpec(grant_program_code=code, amount=amount, scale_by_quantity=scale, source=source)


def grants_json(*entries: tuple[str, int]) -> str:
    return json.dumps([{"grant_program_code": code, "amount": amount} for code, amount in entries])


# --- parse_grants ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[]", ()),
        ("{}", ()),
        ('[{"grant_program_code": "seats", "amount": 1}]', (grant("seats", 1, Source.PRICE),)),
        (
            '[{"grant_program_code": "seats", "amount": 0, "scale_by_quantity": false}]',
            (grant("seats", 0, Source.PRICE, scale=False),),
        ),
        ('{"seats": {"amount": 2, "scale_by_quantity": false}}', (grant("seats", 2, Source.PRICE, scale=False),)),
        ('{"seats": {"amount": 2}}', (grant("seats", 2, Source.PRICE),)),
        ('{"seats": 3}', (grant("seats", 3, Source.PRICE),)),
        (
            '[{"grant_program_code": "seats", "amount": 1}, {"grant_program_code": "ai_credits", "amount": 9}]',
            (grant("ai_credits", 9, Source.PRICE), grant("seats", 1, Source.PRICE)),
        ),
        ('{"seats": 1, "ai_credits": 9}', (grant("ai_credits", 9, Source.PRICE), grant("seats", 1, Source.PRICE))),
    ],
    ids=["empty array", "empty object", "array entry", "array entry without scaling", "object entry",
         "object entry scaling by default", "object bare amount", "array sorted by code", "object sorted by code"],
)
def test_grants_are_read_from_the_array_and_the_object_forms(text: str, expected: tuple[GrantSpec, ...]) -> None:
    assert parse_grants(text, Source.PRICE) == expected


def test_parsed_grants_carry_the_source_they_were_read_for() -> None:
    assert parse_grants('{"seats": 1}', Source.PRODUCT) == (grant("seats", 1, Source.PRODUCT),)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[{", "grants is not valid JSON: "),
        ("", "grants is not valid JSON: "),
        ("1" * 5000, "grants is not valid JSON: "),
        ('"seats"', 'grants must be a JSON array or object, not "seats"'),
        ("null", "grants must be a JSON array or object, not null"),
        ("[1]", "grants[0] must be a JSON object, not 1"),
        ('[{"amount": 1}]', "grants[0]: grant_program_code is missing"),
        ('[{"grant_program_code": "", "amount": 1}]',
         'grants[0]: grant_program_code must be a non-empty string, not ""'),
        ('[{"grant_program_code": 7, "amount": 1}]', "grants[0]: grant_program_code must be a non-empty string, not 7"),
        ('[{"grant_program_code": "seats"}]', "grants[0] ('seats'): amount is missing"),
        ('[{"grant_program_code": "seats", "amount": -1}]', "grants[0] ('seats'): amount must not be negative, not -1"),
        ('[{"grant_program_code": "seats", "amount": true}]',
         "grants[0] ('seats'): amount must be an integer, not true"),
        ('[{"grant_program_code": "seats", "amount": 1.5}]', "grants[0] ('seats'): amount must be an integer, not 1.5"),
        ('[{"grant_program_code": "seats", "amount": 1.0}]', "grants[0] ('seats'): amount must be an integer, not 1.0"),
        ('[{"grant_program_code": "seats", "amount": "5"}]',
         "grants[0] ('seats'): amount must be an integer, not \"5\""),
        (
            '[{"grant_program_code": "seats", "amount": 1, "scale_by_quantity": "yes"}]',
            "grants[0] ('seats'): scale_by_quantity must be true or false, not \"yes\"",
        ),
        (
            '[{"grant_program_code": "seats", "amount": 1, "scale_by_quantity": 1}]',
            "grants[0] ('seats'): scale_by_quantity must be true or false, not 1",
        ),
        (
            '[{"grant_program_code": "seats", "amount": 1, "scale": false}]',
            "grants[0]: unknown key 'scale' (expected amount, grant_program_code, scale_by_quantity)",
        ),
        (
            '[{"grant_program_code": "seats", "amount": 1}, {"grant_program_code": "seats", "amount": 2}]',
            "grants: grant program 'seats' appears more than once",
        ),
        ('{"seats": 1, "seats": 2}', "grants: key 'seats' appears more than once in one JSON object"),
        ('{"": 1}', "grants: a grant program code is empty"),
        ('{"seats": -3}', "grants['seats']: amount must not be negative, not -3"),
        ('{"seats": false}', "grants['seats']: amount must be an integer, not false"),
        ('{"seats": [1]}', "grants['seats']: amount must be an integer, not an array"),
        ('{"seats": {"scale_by_quantity": true}}', "grants['seats']: amount is missing"),
        (
            '{"seats": {"amount": 1, "grant_program_code": "seats"}}',
            "grants['seats']: unknown key 'grant_program_code' (expected amount, scale_by_quantity)",
        ),
    ],
)
def test_malformed_grants_are_refused_with_a_readable_reason(text: str, reason: str) -> None:
    with pytest.raises(MetadataError) as raised:
        parse_grants(text, Source.PRICE)
    assert str(raised.value).startswith(reason)


def test_metadata_errors_are_value_errors() -> None:
    assert issubclass(MetadataError, ValueError)


# --- merge_grants ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_product", "from_price", "expected"),
    [
        ((), (), ()),
        ((grant("seats", 1, Source.PRODUCT),), (), (grant("seats", 1, Source.PRODUCT),)),
        ((), (grant("seats", 1, Source.PRICE),), (grant("seats", 1, Source.PRICE),)),
        (
            (grant("ai_credits", 1000, Source.PRODUCT, scale=False),),
            (grant("ai_credits", 1200, Source.PRICE),),
            (grant("ai_credits", 1200, Source.PRICE),),
        ),
        (
            (grant("ai_credits", 1000, Source.PRODUCT), grant("seats", 1, Source.PRODUCT)),
            (grant("ai_credits", 0, Source.PRICE),),
            (grant("ai_credits", 0, Source.PRICE), grant("seats", 1, Source.PRODUCT)),
        ),
    ],
    ids=["nothing", "product only", "price only", "price replaces product", "replace one, keep the other"],
)
def test_price_grants_replace_product_grants_for_the_same_program(
    from_product: tuple[GrantSpec, ...], from_price: tuple[GrantSpec, ...], expected: tuple[GrantSpec, ...]
) -> None:
    assert merge_grants(from_product, from_price) == expected


codes = st.sampled_from(["ai_credits", "seats", "storage", "api_calls"])


def specs(source: Source) -> st.SearchStrategy[tuple[GrantSpec, ...]]:
    entry = st.builds(GrantSpec, codes, st.integers(min_value=0, max_value=10**6), st.booleans(), st.just(source))
    unique = st.lists(entry, unique_by=lambda spec: spec.grant_program_code)
    return unique.map(lambda found: tuple(sorted(found, key=lambda spec: spec.grant_program_code)))


@given(from_product=specs(Source.PRODUCT), from_price=specs(Source.PRICE))
def test_merging_keeps_one_binding_per_program_and_the_price_always_wins(
    from_product: tuple[GrantSpec, ...], from_price: tuple[GrantSpec, ...]
) -> None:
    merged = merge_grants(from_product, from_price)
    merged_codes = [spec.grant_program_code for spec in merged]
    assert merged_codes == sorted(set(merged_codes))
    assert set(merged_codes) == {spec.grant_program_code for spec in (*from_product, *from_price)}
    price_by_code = {spec.grant_program_code: spec for spec in from_price}
    for spec in merged:
        assert spec == price_by_code.get(spec.grant_program_code, spec)
        assert spec in (from_price if spec.grant_program_code in price_by_code else from_product)


# --- resolve_price --------------------------------------------------------------------------------


def test_product_and_price_granting_the_same_program_resolve_to_the_price_with_provenance_kept() -> None:
    resolved = resolve_price(
        price({"grants": grants_json(("ai_credits", 1200))}),
        product({"subscription_group": "core", "grants": grants_json(("ai_credits", 1000), ("seats", 1))}),
        CONFIG,
    )
    assert resolved.valid, resolved.invalid_reason
    assert resolved.grants == (grant("ai_credits", 1200, Source.PRICE), grant("seats", 1, Source.PRODUCT))


@pytest.mark.parametrize(
    ("product_metadata", "price_metadata", "expected"),
    [
        ({"grants": '{"seats": 1}'}, {}, (grant("seats", 1, Source.PRODUCT),)),
        ({}, {"grants": '{"seats": 1}'}, (grant("seats", 1, Source.PRICE),)),
        ({}, {}, ()),
    ],
    ids=["product only", "price only", "none"],
)
def test_grants_from_one_side_only_are_kept_with_their_source(
    product_metadata: dict[str, str], price_metadata: dict[str, str], expected: tuple[GrantSpec, ...]
) -> None:
    resolved = resolve_price(price(price_metadata), product({"subscription_group": "core", **product_metadata}), CONFIG)
    assert resolved.valid
    assert resolved.grants == expected


@pytest.mark.parametrize(
    ("product_metadata", "price_metadata", "field", "expected"),
    [
        ({"subscription_group": "core"}, {"subscription_group": "addons"}, "subscription_group", "addons"),
        ({"subscription_group": "core"}, {}, "subscription_group", "core"),
        ({}, {"subscription_group": "core"}, "subscription_group", "core"),
        ({"billing_plan_code": "pro"}, {"billing_plan_code": "pro_plus"}, "billing_plan_code", "pro_plus"),
        ({"billing_plan_code": "pro"}, {}, "billing_plan_code", "pro"),
        ({}, {}, "billing_plan_code", None),
        ({"gating.bundle": "pro"}, {"gating.bundle": "pro_plus"}, "gate_bundle", "pro_plus"),
        ({"gating.bundle": "pro"}, {}, "gate_bundle", "pro"),
        ({"gating.bundle": "pro"}, {"gating.bundle": ""}, "gate_bundle", "pro"),
    ],
    ids=["price group", "product group", "group on the price only", "price plan", "product plan", "no plan",
         "price bundle", "product bundle", "an empty value is absent"],
)
def test_price_values_override_product_values(
    product_metadata: dict[str, str], price_metadata: dict[str, str], field: str, expected: str | None
) -> None:
    resolved = resolve_price(price(price_metadata), product({"subscription_group": "core", **product_metadata}),
                             CONFIG)
    assert resolved.valid, resolved.invalid_reason
    assert getattr(resolved, field) == expected


@pytest.mark.parametrize(
    ("product_metadata", "price_metadata", "reason"),
    [
        ({"subscription_group": "nope"}, {}, "product pro: subscription_group 'nope' is not a known group"),
        ({}, {"subscription_group": "nope"}, "price price_1: subscription_group 'nope' is not a known group"),
        ({}, {}, "price price_1: no subscription_group on the price or its product"),
        ({"subscription_group": "core", "billing_plan_code": "x"}, {},
         "product pro: billing_plan_code 'x' is not a known plan"),
        ({"subscription_group": "core"}, {"billing_plan_code": "x"},
         "price price_1: billing_plan_code 'x' is not a known plan"),
        ({"subscription_group": "core"}, {"gating.bundle": "x"},
         "price price_1: gating.bundle 'x' is not a known gate bundle"),
        ({"subscription_group": "core", "gating.bundle": "x"}, {},
         "product pro: gating.bundle 'x' is not a known gate bundle"),
        ({"subscription_group": "core"}, {"grants": '{"gold": 1}'},
         "price price_1: grant program 'gold' is not a known grant program"),
        ({"subscription_group": "core", "grants": '{"gold": 1}'}, {},
         "product pro: grant program 'gold' is not a known grant program"),
        ({"subscription_group": "core"}, {"grants": "[{"},
         "price price_1: grants is not valid JSON: "),
        ({"subscription_group": "core", "grants": '{"seats": -1}'}, {},
         "product pro: grants['seats']: amount must not be negative, not -1"),
    ],
    ids=["unknown group on the product", "unknown group on the price", "no group", "unknown plan on the product",
         "unknown plan on the price", "unknown bundle on the price", "unknown bundle on the product",
         "unknown program on the price", "unknown program on the product", "bad JSON on the price",
         "negative amount on the product"],
)
def test_bad_metadata_makes_the_price_invalid_naming_the_entry_and_the_problem(
    product_metadata: dict[str, str], price_metadata: dict[str, str], reason: str
) -> None:
    resolved = resolve_price(price(price_metadata), product(product_metadata), CONFIG)
    assert not resolved.valid
    assert not resolved.purchasable
    assert resolved.invalid_reason is not None
    assert resolved.invalid_reason.startswith(reason)


@pytest.mark.parametrize(
    ("product_metadata", "price_metadata", "reason"),
    [
        ({"grants": "[{"}, {"grants": "{"}, "product pro: grants is not valid JSON"),
        ({"grants": "[{"}, {"subscription_group": "nope"}, "product pro: grants is not valid JSON"),
        ({}, {"grants": "[{", "subscription_group": "nope"}, "price price_1: grants is not valid JSON"),
        ({}, {"subscription_group": "nope", "billing_plan_code": "x"}, "price price_1: subscription_group 'nope'"),
        ({}, {"billing_plan_code": "x", "gating.bundle": "x"}, "price price_1: no subscription_group"),
        ({"subscription_group": "core"}, {"gating.bundle": "x", "grants": '{"gold": 1}'},
         "price price_1: gating.bundle 'x'"),
    ],
    ids=["product before price", "product before references", "price before references", "group before plan",
         "missing group before plan", "bundle before programs"],
)
def test_the_first_problem_is_reported_in_a_fixed_order(
    product_metadata: dict[str, str], price_metadata: dict[str, str], reason: str
) -> None:
    resolved = resolve_price(price(price_metadata), product(product_metadata), CONFIG)
    assert resolved.invalid_reason is not None
    assert resolved.invalid_reason.startswith(reason)


def test_every_problem_is_explained_and_the_first_is_the_reason() -> None:
    resolved, problems = explain_price(
        price({"subscription_group": "nope", "grants": '{"gold": 1}'}), product({"grants": "[{"}), CONFIG
    )
    assert [(p.entry, p.entry_id) for p in problems] == [
        (Source.PRODUCT, "pro"), (Source.PRICE, "price_1"), (Source.PRICE, "price_1"),
    ]
    assert resolved.invalid_reason == str(problems[0])


def test_an_invalid_price_still_shows_everything_that_resolved() -> None:
    resolved = resolve_price(
        price({"billing_plan_code": "x", "grants": '{"gold": 1, "seats": 2}'}),
        product({"subscription_group": "core", "gating.bundle": "pro"}),
        CONFIG,
    )
    assert not resolved.valid
    assert resolved.subscription_group == "core"
    assert resolved.billing_plan_code is None
    assert resolved.gate_bundle == "pro"
    assert resolved.grants == (grant("seats", 2, Source.PRICE),)
    assert resolved.product_name == "Pro"


def test_a_price_whose_product_is_missing_is_invalid_and_resolves_what_the_price_says() -> None:
    resolved = resolve_price(price({"subscription_group": "core"}, product_id="prod_x"), None, CONFIG)
    assert resolved.invalid_reason == "price price_1: product prod_x is not in the catalog"
    assert resolved.subscription_group == "core"
    assert not resolved.product_active
    assert resolved.product_name == ""


def test_a_price_resolved_against_another_products_record_is_invalid() -> None:
    resolved = resolve_price(price(product_id="other"), product(), CONFIG)
    assert resolved.invalid_reason == "price price_1: belongs to product other, not pro"


@pytest.mark.parametrize(
    ("active", "deleted", "price_active", "product_active", "purchasable"),
    [
        (True, False, True, True, True),
        (False, False, True, False, False),
        (True, True, True, False, False),
        (True, False, False, True, False),
    ],
    ids=["active", "inactive product", "deleted product", "inactive price"],
)
def test_an_inactive_or_deleted_product_stays_valid_but_is_not_purchasable(
    active: bool, deleted: bool, price_active: bool, product_active: bool, purchasable: bool
) -> None:
    resolved = resolve_price(price(active=price_active), product(active=active, deleted=deleted), CONFIG)
    assert resolved.valid
    assert resolved.product_active is product_active
    assert resolved.purchasable is purchasable


def test_bad_data_never_raises() -> None:
    for text in ["[{", "1" * 5000, "[" * 100_000, "nan", '{"a": NaN}', "\x00"]:
        resolved = resolve_price(price({"subscription_group": "core", "grants": text}), product(), CONFIG)
        assert not resolved.valid


def test_prices_are_resolved_against_their_own_products() -> None:
    prices = [price(price_id="price_1"), price({"subscription_group": "core"}, price_id="price_2", product_id="gone")]
    resolved = resolve_prices(prices, {"pro": product()}, CONFIG)
    assert sorted(resolved) == ["price_1", "price_2"]
    assert resolved["price_1"].valid
    assert resolved["price_2"].invalid_reason == "price price_2: product gone is not in the catalog"


# --- group_of_items -------------------------------------------------------------------------------


def resolved_in(group: str | None) -> ResolvedPrice:
    metadata = {"subscription_group": group} if group else {}
    return resolve_price(price(metadata), product(metadata), CONFIG)


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["core"], "core"),
        (["core", "core"], "core"),
        (["core", "addons"], None),
        ([], None),
        ([None], None),
        (["core", None], None),
    ],
    ids=["one item", "items sharing a group", "items spanning groups", "no items", "an item without a group",
         "a grouped and an ungrouped item"],
)
def test_a_subscription_has_a_group_only_when_all_its_items_share_it(
    groups: list[str | None], expected: str | None
) -> None:
    assert group_of_items([resolved_in(group) for group in groups]) == expected


# --- one-time prices and gate bundles -------------------------------------------------------------


def one_time(metadata: dict[str, str] | None = None) -> Price:
    return price(metadata, interval=None, interval_count=None, lookup_key="pack")


@pytest.mark.parametrize(
    ("product_metadata", "price_metadata", "group"),
    [({}, {}, None), ({"subscription_group": "addons"}, {}, "addons"), ({}, {"subscription_group": "core"}, "core")],
    ids=["no group anywhere", "group on the product", "group on the price"],
)
def test_a_one_time_price_is_valid_with_or_without_a_group(
    product_metadata: dict[str, str], price_metadata: dict[str, str], group: str | None
) -> None:
    resolved, problems = explain_price(one_time(price_metadata), product(product_metadata), CONFIG)
    assert problems == ()
    assert resolved.valid and resolved.purchasable
    assert resolved.subscription_group == group


def test_a_recurring_price_still_needs_a_group_where_the_same_one_time_price_does_not() -> None:
    grants = {"grants": '{"seats": 1}'}
    recurring = resolve_price(price(grants), product({}), CONFIG)
    once = resolve_price(one_time(grants), product({}), CONFIG)
    assert recurring.invalid_reason == "price price_1: no subscription_group on the price or its product"
    assert once.valid and once.grants == (grant("seats", 1, Source.PRICE),)


def test_a_one_time_price_naming_an_unknown_group_is_still_invalid() -> None:
    resolved = resolve_price(one_time({"subscription_group": "nope"}), product({}), CONFIG)
    assert resolved.invalid_reason == "price price_1: subscription_group 'nope' is not a known group"


def test_one_time_items_without_a_group_have_no_group_together() -> None:
    items = [resolve_price(one_time(), product({}), CONFIG), resolve_price(one_time(), product({}), CONFIG)]
    assert all(item.valid for item in items)
    assert group_of_items(items) is None


@pytest.mark.parametrize(
    ("product_metadata", "price_metadata", "unused"),
    [
        ({"gating.bundle": "pro"}, {}, "pro"),
        ({}, {"gating.bundle": "pro_plus"}, "pro_plus"),
        ({"gating.bundle": "pro", "billing_plan_code": "pro"}, {}, None),
        ({"gating.bundle": "pro"}, {"billing_plan_code": "pro"}, None),
        ({"billing_plan_code": "pro"}, {}, None),
        ({}, {}, None),
    ],
    ids=["bundle on the product, no plan", "bundle on the price, no plan", "bundle and plan on the product",
         "bundle on the product, plan on the price", "plan without bundle", "neither"],
)
def test_a_gate_bundle_without_a_plan_is_named_as_granting_nothing(
    product_metadata: dict[str, str], price_metadata: dict[str, str], unused: str | None
) -> None:
    resolved = resolve_price(one_time(price_metadata), product({"subscription_group": "core", **product_metadata}),
                             CONFIG)
    reason = bundle_without_plan(resolved)
    if unused is None:
        assert reason is None
    else:
        assert reason == (f"gating.bundle {unused!r} needs a billing_plan_code on the price or its product: a gate "
                          "bundle grants its gates only through a plan; set billing_plan_code or remove gating.bundle")
