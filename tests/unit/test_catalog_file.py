from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from catalog_rules.file import CatalogFileError, PriceSpec, parse_catalog
from catalog_rules.metadata import resolve_prices
from catalog_rules.model import Cadence, ChangePolicy, ConflictPolicy, GrantSpec, PlanKind, Source
from checkout_service.cli import read_catalog
from tests.support.provider import catalog_snapshots, example_catalog

AT = datetime(2025, 1, 1, tzinfo=UTC)

CONFIG = """
[groups.core]
stackable = false
[plans.pro]
priority = 20
[grant_programs.ai_credits]
cadence = "per_period"
unit = "credit"
[gate_bundles.pro]
gates = ["export"]
"""

PRO = """
[[products]]
id = "pro"
name = "Pro"
[products.metadata]
subscription_group = "core"
billing_plan_code = "pro"
"gating.bundle" = "pro"

[[products.prices]]
lookup_key = "pro_monthly"
unit_amount = 2000
currency = "usd"
interval = "month"
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(CatalogFileError) as raised:
        parse_catalog(text)
    assert str(raised.value) == "\n".join(raised.value.errors)
    return list(raised.value.errors)


def example_ids() -> dict[str, str]:
    catalog = example_catalog()
    return {spec.lookup_key: f"price_{spec.lookup_key}" for product in catalog.products for spec in product.prices}


# --- the shipped example --------------------------------------------------------------------------


def test_the_shipped_example_parses_and_every_price_resolves_valid() -> None:
    catalog = example_catalog()
    products, prices = catalog_snapshots(catalog, example_ids(), AT)
    resolved = resolve_prices(prices, {product.product_id: product for product in products}, catalog.config)
    assert len(resolved) == 5
    assert all(entry.valid and entry.purchasable for entry in resolved.values()), [
        entry.invalid_reason for entry in resolved.values()
    ]


def test_the_shipped_example_declares_the_documented_catalog() -> None:
    catalog = example_catalog()
    config = catalog.config
    assert {code: group.stackable for code, group in config.groups.items()} == {
        "core": False, "addons": True,
    }
    assert {code: (plan.priority, plan.kind) for code, plan in config.plans.items()} == {
        "starter": (10, PlanKind.BASE), "pro": (20, PlanKind.BASE), "team_seats": (5, PlanKind.ADDON),
    }
    assert {code: program.cadence for code, program in config.grant_programs.items()} == {
        "ai_credits": Cadence.PER_PERIOD, "seats": Cadence.WHILE_ACTIVE, "credit_pack": Cadence.ONE_TIME,
    }
    assert config.gate_bundles["pro"].gates == ("export", "api_access", "priority_support")
    assert [product.product_id for product in catalog.products] == ["starter", "pro", "team_seats", "credit_pack_500"]


@pytest.mark.parametrize(
    ("lookup_key", "group", "plan", "bundle", "grants", "interval", "amount"),
    [
        ("starter_monthly", "core", "starter", "starter", (), "month", 900),
        ("pro_monthly", "core", "pro", "pro", (GrantSpec("ai_credits", 1200, False, Source.PRICE),), "month", 2000),
        ("pro_yearly", "core", "pro", "pro", (GrantSpec("ai_credits", 15000, False, Source.PRICE),), "year", 20000),
        ("team_seats_monthly", "addons", "team_seats", None, (GrantSpec("seats", 1, True, Source.PRODUCT),),
         "month", 500),
        ("credit_pack_500", None, None, None, (GrantSpec("credit_pack", 500, True, Source.PRODUCT),), None, 1000),
    ],
)
def test_each_example_price_resolves_as_documented(
    lookup_key: str, group: str | None, plan: str | None, bundle: str | None, grants: tuple[GrantSpec, ...],
    interval: str | None, amount: int,
) -> None:
    catalog = example_catalog()
    products, prices = catalog_snapshots(catalog, example_ids(), AT)
    resolved = resolve_prices(prices, {product.product_id: product for product in products}, catalog.config)
    entry = resolved[f"price_{lookup_key}"]
    assert (entry.subscription_group, entry.billing_plan_code, entry.gate_bundle) == (group, plan, bundle)
    assert entry.grants == grants
    assert (entry.price.interval, entry.price.unit_amount, entry.price.currency) == (interval, amount, "usd")


# --- parsing --------------------------------------------------------------------------------------


def test_optional_keys_take_their_defaults() -> None:
    catalog = parse_catalog(CONFIG + PRO + '[[products.prices]]\nlookup_key = "pro_once"\nunit_amount = 0\n'
                            'currency = "eur"\n')
    assert catalog.config.plans["pro"].kind is PlanKind.BASE
    product = catalog.products[0]
    assert product.active
    assert product.prices == (
        PriceSpec("pro_monthly", 2000, "usd", "month", 1, True, {}),
        PriceSpec("pro_once", 0, "eur", None, None, True, {}),
    )


def test_a_catalog_without_products_is_only_configuration() -> None:
    catalog = parse_catalog(CONFIG)
    assert catalog.products == ()
    assert set(catalog.config.groups) == {"core"}


# --- validation: one error, named -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (CONFIG + PRO + "[typo]\n", "unknown top-level key 'typo' (expected groups, plans, grant_programs, "
                                   "gate_bundles, products)"),
        ("[groups.core]\nstackable = 'no'\n", "groups.core: stackable must be true or false, not a string ('no')"),
        ("[groups.core]\n", "groups.core: stackable is missing"),
        ("[groups.core]\nstackable = true\nstackabel = false\n",
         "groups.core: unknown key 'stackabel' (expected conflict_policy, stackable)"),
        ("groups = 1\n", "groups must be a table keyed by code, not an integer (1)"),
        ("[plans.pro]\npriority = '20'\n", "plans.pro: priority must be an integer, not a string ('20')"),
        ("[plans.pro]\npriority = true\n", "plans.pro: priority must be an integer, not a boolean (true)"),
        ("[plans.pro]\npriority = 1.5\n", "plans.pro: priority must be an integer, not a float (1.5)"),
        ("[plans.pro]\nkind = 'base'\n", "plans.pro: priority is missing"),
        ("[plans.pro]\npriority = 1\nkind = 'main'\n", "plans.pro: kind must be one of base, addon, not 'main'"),
        ("[grant_programs.c]\ncadence = 'monthly'\nunit = 'credit'\n",
         "grant_programs.c: cadence must be one of per_period, while_active, one_time, not 'monthly'"),
        ("[grant_programs.c]\ncadence = 'one_time'\nunit = ''\n",
         "grant_programs.c: unit must be a non-empty string, not a string ('')"),
        ("[grant_programs.c]\ncadence = 'one_time'\n", "grant_programs.c: unit is missing"),
        ("[grant_programs.c]\ncadence = 'per_period'\nunit = 'credit'\non_change = 'prorate'\n",
         "grant_programs.c: on_change must be one of none, difference, not 'prorate'"),
        ("[grant_programs.c]\ncadence = 'one_time'\nunit = 'credit'\non_change = 'difference'\n",
         "grant_programs.c: on_change applies to per_period programs only, not one_time"),
        ("[gate_bundles.pro]\ngates = 'export'\n", "gate_bundles.pro: gates must be a list of non-empty strings"),
        ("[gate_bundles.pro]\ngates = ['export', 1]\n", "gate_bundles.pro: gates must be a list of non-empty strings"),
        ("[gate_bundles.pro]\n", "gate_bundles.pro: gates is missing"),
        ("[groups]\ncore = 1\n", "groups.core: must be a table, not an integer (1)"),
        ("[[products]]\n[[products]]\nid = 'pro'\nname = 'Pro'\nprices = [1]\n",
         "products[0]: id is missing\nproducts[0]: name is missing\n"
         "products[1] (id 'pro') prices[0]: must be a table, not an integer (1)"),
    ],
    ids=["unknown top-level key", "stackable not a boolean", "stackable missing", "typo in a group key",
         "groups not a table", "priority a string", "priority a boolean", "priority a float", "priority missing",
         "unknown plan kind", "unknown cadence", "empty unit", "unit missing", "unknown change policy",
         "a change policy on a one-time program", "gates a string",
         "gates not all strings", "gates missing", "group not a table", "empty product and price not a table"],
)
def test_a_bad_configuration_entry_is_refused_by_name(text: str, error: str) -> None:
    assert "\n".join(errors_of(text)) == error


@pytest.mark.parametrize(("line", "policy"), [("", ChangePolicy.NONE), ("on_change = 'none'\n", ChangePolicy.NONE),
                                              ("on_change = 'difference'\n", ChangePolicy.DIFFERENCE)],
                         ids=["unset: none", "none", "difference"])
def test_a_per_period_program_says_what_a_mid_period_change_funds(line: str, policy: ChangePolicy) -> None:
    config = parse_catalog(f"[grant_programs.c]\ncadence = 'per_period'\nunit = 'credit'\n{line}").config
    assert config.grant_programs["c"].on_change is policy


def pro_with(product_lines: str = "", price_lines: str = "", product_metadata: str = "",
             price_metadata: str = "") -> str:
    return (
        CONFIG
        + f"""
[[products]]
id = "starter"
name = "Starter"
[products.metadata]
subscription_group = "core"

[[products]]
id = "pro"
name = "Pro"
{product_lines}
[products.metadata]
subscription_group = "core"
{product_metadata}

[[products.prices]]
lookup_key = "pro_monthly"
unit_amount = 2000
currency = "usd"
interval = "month"
{price_lines}
[products.prices.metadata]
{price_metadata}
"""
    )


P = "products[1] (id 'pro')"
M = f"{P} price 'pro_monthly'"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (pro_with(price_metadata='subscription_group = "core2"'),
         f"{M}: subscription_group 'core2' is not a known group"),
        (pro_with(product_metadata='billing_plan_code = "gold"'), f"{P}: billing_plan_code 'gold' is not a known plan"),
        (pro_with(price_metadata='billing_plan_code = "gold"'), f"{M}: billing_plan_code 'gold' is not a known plan"),
        (pro_with(price_metadata='"gating.bundle" = "max"'), f"{M}: gating.bundle 'max' is not a known gate bundle"),
        (pro_with(product_metadata="grants = '{\"gold\": 1}'"),
         f"{P}: grant program 'gold' is not a known grant program"),
        (pro_with(price_metadata="grants = '{\"gold\": 1}'"),
         f"{M}: grant program 'gold' is not a known grant program"),
        (pro_with(price_metadata="grants = '{\"ai_credits\": -5}'"),
         f"{M}: grants['ai_credits']: amount must not be negative, not -5"),
        (pro_with(price_metadata="grants = '[{'"), f"{M}: grants is not valid JSON: "),
        (pro_with(price_metadata="grants = 5"),
         f"{M}: metadata 'grants' must be a string (Stripe metadata values are strings), not an integer (5)"),
        (pro_with(product_metadata="billing_plan_code = 20"),
         f"{P}: metadata 'billing_plan_code' must be a string (Stripe metadata values are strings), "
         "not an integer (20)"),
        (pro_with(price_metadata='billing_plan = "pro"'),
         f"{M}: metadata: unknown key 'billing_plan' (expected subscription_group, billing_plan_code, grants, "
         "gating.bundle)"),
        (pro_with(price_metadata='gating.bundle = "pro"'),
         f"{M}: metadata: unknown key 'gating' (expected subscription_group, billing_plan_code, grants, "
         'gating.bundle); quote a key with a dot: "gating.bundle" = ...'),
        (pro_with(price_metadata='"gating.bundle" = ""'),
         f"{M}: metadata 'gating.bundle' is empty (Stripe deletes a metadata key set to an empty string)"),
        (pro_with(price_metadata=f"grants = '{{\"ai_credits\": {'1' * 600}}}'"),
         f"{M}: metadata 'grants' is 616 characters; Stripe allows 500"),
        (pro_with(product_lines="colour = 'blue'"), f"{P}: unknown key 'colour' (expected active, id, metadata, "
                                                    "name, prices)"),
        (pro_with(product_lines="active = 'yes'"), f"{P}: active must be true or false, not a string ('yes')"),
        (pro_with(price_lines="unit_amount_decimal = '20.00'"),
         f"{M}: unknown key 'unit_amount_decimal' (expected active, currency, interval, interval_count, "
         "lookup_key, metadata, unit_amount)"),
        (pro_with(price_lines="active = 1"), f"{M}: active must be true or false, not an integer (1)"),
        (pro_with(price_lines="interval_count = 0"), f"{M}: interval_count must be at least 1, not 0"),
        (pro_with(price_lines="interval_count = '3'"), f"{M}: interval_count must be an integer, not a string ('3')"),
    ],
    ids=["unknown group on a price", "unknown plan on a product", "unknown plan on a price",
         "unknown bundle on a price", "unknown program on a product", "unknown program on a price",
         "negative grant amount", "grants not JSON", "metadata value an integer", "product metadata an integer",
         "unknown metadata key", "unquoted dotted metadata key", "empty metadata value",
         "metadata value too long for Stripe",
         "unknown product key", "product active not a boolean", "unknown price key", "price active not a boolean",
         "interval_count zero", "interval_count a string"],
)
def test_a_bad_product_or_price_is_refused_naming_the_entry(text: str, error: str) -> None:
    found = errors_of(text)
    assert len(found) == 1, found
    assert found[0].startswith(error)


PRICE_FIELDS = {
    "lookup_key": 'lookup_key = "x"',
    "unit_amount": "unit_amount = 100",
    "currency": 'currency = "usd"',
}


def one_price(**lines: str) -> str:
    fields = {**PRICE_FIELDS, **lines}
    body = "\n".join(line for line in fields.values() if line)
    return CONFIG + f'[[products]]\nid = "pro"\nname = "Pro"\n[products.metadata]\nsubscription_group = "core"\n' \
                    f"[[products.prices]]\n{body}\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (one_price(unit_amount="unit_amount = -1"), "products[0] (id 'pro') price 'x': unit_amount must be at least 0, "
                                                    "not -1"),
        (one_price(unit_amount="unit_amount = 9.99"), "products[0] (id 'pro') price 'x': unit_amount must be an "
                                                      "integer, not a float (9.99)"),
        (one_price(unit_amount=""), "products[0] (id 'pro') price 'x': unit_amount is missing"),
        (one_price(currency='currency = "USD"'), "products[0] (id 'pro') price 'x': currency must be three lowercase "
                                                 "letters (an ISO 4217 code), not 'USD'"),
        (one_price(currency='currency = "us"'), "products[0] (id 'pro') price 'x': currency must be three lowercase "
                                                "letters (an ISO 4217 code), not 'us'"),
        (one_price(currency='currency = "usd1"'), "products[0] (id 'pro') price 'x': currency must be three "
                                                  "lowercase letters (an ISO 4217 code), not 'usd1'"),
        (one_price(currency=""), "products[0] (id 'pro') price 'x': currency is missing"),
        (one_price(interval='interval = "monthly"'), "products[0] (id 'pro') price 'x': interval must be one of day, "
                                                     "week, month, year, not 'monthly'"),
        (one_price(count="interval_count = 3"), "products[0] (id 'pro') price 'x': interval_count needs an interval "
                                                "(a one-time price has neither)"),
        (one_price(lookup_key=""), "products[0] (id 'pro') prices[0]: lookup_key is missing"),
        (one_price(lookup_key='lookup_key = ""'), "products[0] (id 'pro') prices[0]: lookup_key must be a non-empty "
                                                  "string, not a string ('')"),
    ],
    ids=["negative amount", "fractional amount", "amount missing", "upper-case currency", "short currency",
         "long currency", "currency missing", "unknown interval", "interval_count without interval",
         "lookup_key missing", "lookup_key empty"],
)
def test_a_bad_price_field_is_refused_naming_the_price(text: str, error: str) -> None:
    assert errors_of(text) == [error]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (CONFIG + '[[products]]\nname = "Pro"\n', "products[0]: id is missing"),
        (CONFIG + '[[products]]\nid = "pro"\n', "products[0] (id 'pro'): name is missing"),
        ("products = 1\n" + CONFIG, "products must be an array of tables ([[products]]), not an integer (1)"),
        (CONFIG + '[[products]]\nid = "pro"\nname = "Pro"\nprices = 3\n',
         "products[0] (id 'pro'): prices must be an array of tables ([[products.prices]]), not an integer (3)"),
        (CONFIG + '[[products]]\nid = "pro"\nname = "Pro"\n[products.metadata]\nsubscription_group = "core"\n'
                  '[[products.prices]]\nlookup_key = "x"\nunit_amount = 1\ncurrency = "usd"\n'
                  '[products.prices.metadata]\nsubscription_group = "core2"\n'
                  '[[products]]\nid = "solo"\nname = "Solo"\n[[products.prices]]\nlookup_key = "y"\nunit_amount = 1\n'
                  'currency = "usd"\ninterval = "month"\n',
         "products[0] (id 'pro') price 'x': subscription_group 'core2' is not a known group\n"
         "products[1] (id 'solo') price 'y': no subscription_group on the price or its product"),
        (CONFIG + PRO + PRO.replace("lookup_key = \"pro_monthly\"", "lookup_key = \"pro_yearly\""),
         "products[1] (id 'pro'): id 'pro' is already used by products[0] (id 'pro')"),
        (CONFIG + PRO + PRO.replace('id = "pro"', 'id = "pro2"'),
         "products[1] (id 'pro2') price 'pro_monthly': lookup_key 'pro_monthly' is already used by "
         "products[0] (id 'pro') price 'pro_monthly'"),
    ],
    ids=["product id missing", "product name missing", "products not an array", "prices not an array",
         "price with no group anywhere", "duplicate product id", "duplicate lookup key across products"],
)
def test_product_level_mistakes_are_refused_by_name(text: str, error: str) -> None:
    assert "\n".join(errors_of(text)) == error


def test_a_product_reference_is_checked_even_where_every_price_overrides_it() -> None:
    text = pro_with(product_metadata='billing_plan_code = "gold"', price_metadata='billing_plan_code = "pro"')
    assert errors_of(text) == [f"{P}: billing_plan_code 'gold' is not a known plan"]


def test_a_bad_product_reference_is_reported_once_not_once_per_price() -> None:
    text = pro_with(product_metadata='"gating.bundle" = "max"') + (
        '[[products.prices]]\nlookup_key = "pro_yearly"\nunit_amount = 1\ncurrency = "usd"\ninterval = "year"\n'
    )
    assert errors_of(text) == [f"{P}: gating.bundle 'max' is not a known gate bundle"]


def test_a_bad_configuration_entry_does_not_also_fail_every_reference_to_it() -> None:
    text = CONFIG.replace("stackable = false", "stackable = 'no'") + PRO
    assert errors_of(text) == ["groups.core: stackable must be true or false, not a string ('no')"]


def test_every_error_in_the_file_is_reported_in_file_order() -> None:
    text = (
        "[groups.core]\nstackable = 1\n"
        "[plans.pro]\npriority = 'high'\n"
        + PRO.replace('unit_amount = 2000', 'unit_amount = -1').replace('currency = "usd"', 'currency = "USD"')
        + '[products.prices.metadata]\nbilling_plan_code = "gold"\n'
        + "[extra]\n"
    )
    assert errors_of(text) == [
        "groups.core: stackable must be true or false, not an integer (1)",
        "plans.pro: priority must be an integer, not a string ('high')",
        "products[0] (id 'pro'): gating.bundle 'pro' is not a known gate bundle",
        "products[0] (id 'pro') price 'pro_monthly': unit_amount must be at least 0, not -1",
        "products[0] (id 'pro') price 'pro_monthly': currency must be three lowercase letters (an ISO 4217 code), "
        "not 'USD'",
        "products[0] (id 'pro') price 'pro_monthly': billing_plan_code 'gold' is not a known plan",
        "unknown top-level key 'extra' (expected groups, plans, grant_programs, gate_bundles, products)",
    ]


def test_a_toml_syntax_error_is_reported_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text("[groups.core\nstackable = false\n")
    with pytest.raises(CatalogFileError) as raised:
        read_catalog(path)
    assert str(raised.value).startswith(f"{path}: not valid TOML: ")


def test_validation_errors_from_a_file_start_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text("[groups.core]\n[plans.pro]\n")
    with pytest.raises(CatalogFileError) as raised:
        read_catalog(path)
    assert raised.value.errors == (
        f"{path}: groups.core: stackable is missing",
        f"{path}: plans.pro: priority is missing",
    )


def test_a_missing_file_is_reported_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(CatalogFileError, match=r"absent\.toml: cannot read the catalog"):
        read_catalog(path)


# --- catalog_snapshots ------------------------------------------------------------------------------


def test_snapshots_carry_the_provider_ids_of_their_lookup_keys() -> None:
    catalog = parse_catalog(CONFIG + PRO)
    products, prices = catalog_snapshots(catalog, {"pro_monthly": "price_123", "unused": "price_9"}, AT)
    assert [(p.product_id, p.name, p.active, p.provider_updated_at) for p in products] == [("pro", "Pro", True, AT)]
    assert products[0].metadata == {"subscription_group": "core", "billing_plan_code": "pro", "gating.bundle": "pro"}
    assert [(p.price_id, p.product_id, p.lookup_key, p.unit_amount, p.interval, p.interval_count) for p in prices] == [
        ("price_123", "pro", "pro_monthly", 2000, "month", 1)
    ]
    assert prices[0].provider_updated_at == AT


def test_snapshots_refuse_a_lookup_key_without_a_provider_id() -> None:
    catalog = parse_catalog(CONFIG + PRO)
    with pytest.raises(KeyError, match="pro_monthly"):
        catalog_snapshots(catalog, {"pro_yearly": "price_1"}, AT)


def test_snapshots_do_not_share_metadata_with_the_file() -> None:
    catalog = parse_catalog(CONFIG + PRO)
    products, _ = catalog_snapshots(catalog, {"pro_monthly": "price_123"}, AT)
    products[0].metadata["subscription_group"] = "changed"
    assert catalog.products[0].metadata["subscription_group"] == "core"


# --- one-time prices and gate bundles -------------------------------------------------------------

PACK = """
[grant_programs.pack]
cadence = "one_time"
unit = "credit"

[[products]]
id = "pack"
name = "Credit pack"
[products.metadata]
grants = '[{"grant_program_code": "pack", "amount": 500}]'
PRODUCT_METADATA

[[products.prices]]
lookup_key = "pack_500"
unit_amount = 1000
currency = "usd"
PRICE_LINES
"""


def pack(product_metadata: str = "", price_lines: str = "") -> str:
    return CONFIG + PACK.replace("PRODUCT_METADATA", product_metadata).replace("PRICE_LINES", price_lines)


def test_a_one_time_product_needs_no_group() -> None:
    catalog = parse_catalog(pack())
    products, prices = catalog_snapshots(catalog, {"pack_500": "price_pack"}, AT)
    resolved = resolve_prices(prices, {p.product_id: p for p in products}, catalog.config)["price_pack"]
    assert resolved.valid and resolved.subscription_group is None
    assert resolved.grants == (GrantSpec("pack", 500, True, Source.PRODUCT),)


def test_the_same_product_with_a_recurring_price_is_refused_for_want_of_a_group() -> None:
    text = pack(price_lines='interval = "month"')
    assert errors_of(text) == ["products[0] (id 'pack') price 'pack_500': no subscription_group on the price or its "
                               "product"]


FIX = ("needs a billing_plan_code on the price or its product: a gate bundle grants its gates only through a plan; "
       "set billing_plan_code or remove gating.bundle")


@pytest.mark.parametrize(
    ("product_metadata", "price_lines"),
    [('"gating.bundle" = "pro"', ""), ("", '[products.prices.metadata]\n"gating.bundle" = "pro"')],
    ids=["bundle on the product", "bundle on the price"],
)
def test_a_gate_bundle_on_an_entry_without_a_plan_is_refused_naming_the_price_and_the_fix(
    product_metadata: str, price_lines: str
) -> None:
    text = pack(product_metadata, price_lines)
    assert errors_of(text) == [f"products[0] (id 'pack') price 'pack_500': gating.bundle 'pro' {FIX}"]


def test_a_product_bundle_is_accepted_where_each_price_brings_the_plan() -> None:
    catalog = parse_catalog(pro_with(product_metadata='"gating.bundle" = "pro"',
                                     price_metadata='billing_plan_code = "pro"'))
    assert catalog.products[1].metadata["gating.bundle"] == "pro"


def test_a_bundle_with_an_unknown_plan_reports_the_plan_not_the_bundle() -> None:
    text = pro_with(product_metadata='"gating.bundle" = "pro"', price_metadata='billing_plan_code = "gold"')
    assert errors_of(text) == [f"{M}: billing_plan_code 'gold' is not a known plan"]


def test_a_groups_conflict_policy_is_read_and_defaults_to_flag() -> None:
    parsed = parse_catalog('[groups.core]\nstackable = false\nconflict_policy = "cancel_and_refund"\n'
                           '[groups.other]\nstackable = false\n')
    assert parsed.config.groups["core"].conflict_policy is ConflictPolicy.CANCEL_AND_REFUND
    assert parsed.config.groups["other"].conflict_policy is ConflictPolicy.FLAG
    with pytest.raises(CatalogFileError) as refused:
        parse_catalog('[groups.core]\nstackable = false\nconflict_policy = "ignore"\n')
    assert "conflict_policy" in str(refused.value)
