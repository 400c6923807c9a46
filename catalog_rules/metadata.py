"""Catalog metadata rules: how provider product and price metadata become a catalog entry.

The metadata keys are a contract (docs/contract.md). Their values are strings because Stripe
metadata values are strings; `grants` holds JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from catalog_rules.model import MAX_GRANT_AMOUNT, CatalogConfig, GrantSpec, Price, Product, ResolvedPrice, Source

SUBSCRIPTION_GROUP = "subscription_group"
BILLING_PLAN_CODE = "billing_plan_code"
GRANTS = "grants"
GATING_BUNDLE = "gating.bundle"
METADATA_KEYS = (SUBSCRIPTION_GROUP, BILLING_PLAN_CODE, GRANTS, GATING_BUNDLE)

_ARRAY_ENTRY_KEYS = frozenset({"grant_program_code", "amount", "scale_by_quantity"})
_OBJECT_ENTRY_KEYS = frozenset({"amount", "scale_by_quantity"})


class MetadataError(ValueError):
    """A metadata value cannot be read; the message names the value and the problem."""


@dataclass(frozen=True)
class MetadataProblem:
    """One reason a catalog entry is invalid, charged to the object whose metadata carries it."""

    entry: Source
    entry_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.entry.value} {self.entry_id}: {self.message}"


def parse_grants(text: str, source: Source) -> tuple[GrantSpec, ...]:
    """Read a `grants` value: a JSON array of entries or an object keyed by program code.

    Keeps: one spec per program code, every amount an integer >= 0, every flag a boolean, the
    result sorted by code. Anything else raises MetadataError; nothing is guessed or skipped.
    """
    try:
        document = json.loads(text, object_pairs_hook=_refuse_repeated_keys)
    except MetadataError:
        raise
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers too long to convert.
        raise MetadataError(f"grants is not valid JSON: {exc}") from None
    if isinstance(document, list):
        specs = [_array_entry(index, entry, source) for index, entry in enumerate(document)]
    elif isinstance(document, dict):
        specs = [_object_entry(code, value, source) for code, value in document.items()]
    else:
        raise MetadataError(f"grants must be a JSON array or object, not {_show(document)}")
    seen: set[str] = set()
    for spec in specs:
        if spec.grant_program_code in seen:
            raise MetadataError(f"grants: grant program {spec.grant_program_code!r} appears more than once")
        seen.add(spec.grant_program_code)
    return tuple(sorted(specs, key=lambda spec: spec.grant_program_code))


def merge_grants(product: tuple[GrantSpec, ...], price: tuple[GrantSpec, ...]) -> tuple[GrantSpec, ...]:
    """Product and price grants together.

    Keeps: one binding per program code; where both name a program the price's entry replaces the
    product's; each binding keeps its own source; the result sorted by code.
    """
    by_code = {grant.grant_program_code: grant for grant in product}
    by_code.update({grant.grant_program_code: grant for grant in price})
    return tuple(by_code[code] for code in sorted(by_code))


def resolve_price(price: Price, product: Product | None, config: CatalogConfig) -> ResolvedPrice:
    """The price with its product's metadata merged in. Never raises for bad data: an entry with
    problems is invalid and names its first problem (product, then price, then references)."""
    return explain_price(price, product, config)[0]


def resolve_prices(
    prices: Iterable[Price], products_by_id: Mapping[str, Product], config: CatalogConfig
) -> dict[str, ResolvedPrice]:
    """Each price resolved against its own product, keyed by price id."""
    return {price.price_id: resolve_price(price, products_by_id.get(price.product_id), config) for price in prices}


def explain_price(
    price: Price, product: Product | None, config: CatalogConfig
) -> tuple[ResolvedPrice, tuple[MetadataProblem, ...]]:
    """The resolved price and every problem found, in a fixed order: product, price, references.

    Keeps: price values override product values, except grants, which merge; a field holds a
    code only when the config knows it, so an invalid entry still shows all that did resolve; a
    recurring price needs a subscription_group (its subscription claims it), a one-time price may
    go without one (a one-time checkout holds no group).
    """
    problems = _ownership_problems(price, product)
    product_id = product.product_id if product is not None else price.product_id
    product_grants = _grants_of(product.metadata if product else {}, Source.PRODUCT, product_id, problems)
    price_grants = _grants_of(price.metadata, Source.PRICE, price.price_id, problems)
    layers = _layers(price, product)
    group = _reference(layers, SUBSCRIPTION_GROUP, config.groups, "group", problems)
    named = any(metadata.get(SUBSCRIPTION_GROUP) for _, _, metadata in layers)
    if group is None and price.recurring and not named:
        problems.append(
            MetadataProblem(Source.PRICE, price.price_id, "no subscription_group on the price or its product")
        )
    plan = _reference(layers, BILLING_PLAN_CODE, config.plans, "plan", problems)
    bundle = _reference(layers, GATING_BUNDLE, config.gate_bundles, "gate bundle", problems)
    grants = merge_grants(product_grants, price_grants)
    for grant in grants:
        if grant.grant_program_code not in config.grant_programs:
            entry_id = price.price_id if grant.source is Source.PRICE else product_id
            message = f"grant program {grant.grant_program_code!r} is not a known grant program"
            problems.append(MetadataProblem(grant.source, entry_id, message))
    resolved = ResolvedPrice(
        price=price,
        product_name=product.name if product is not None else "",
        subscription_group=group,
        billing_plan_code=plan,
        gate_bundle=bundle,
        grants=tuple(grant for grant in grants if grant.grant_program_code in config.grant_programs),
        valid=not problems,
        invalid_reason=str(problems[0]) if problems else None,
        product_active=product is not None and product.active and not product.deleted,
    )
    return resolved, tuple(problems)


def group_of_items(resolved: Iterable[ResolvedPrice]) -> str | None:
    """The subscription group every item shares; None when items span groups, any item has no
    group (a one-time price may have none), or there are no items. One provider subscription
    belongs to exactly one group."""
    groups = {item.subscription_group for item in resolved}
    if len(groups) != 1:
        return None
    return groups.pop()


def bundle_without_plan(resolved: ResolvedPrice) -> str | None:
    """Why an entry's gate bundle would grant nothing, or None. A gate bundle applies only as the
    bundle of the account's winning plan, so a `gating.bundle` on an entry without a
    `billing_plan_code` is never used; `catalog apply` refuses it rather than drop it unseen."""
    if resolved.gate_bundle is None or resolved.billing_plan_code is not None:
        return None
    return (f"gating.bundle {resolved.gate_bundle!r} needs a billing_plan_code on the price or its product: a "
            "gate bundle grants its gates only through a plan; set billing_plan_code or remove gating.bundle")


_Layer = tuple[Source, str, Mapping[str, str]]


def _layers(price: Price, product: Product | None) -> list[_Layer]:
    # Price first: for the single-valued keys the price's value replaces the product's.
    layers: list[_Layer] = [(Source.PRICE, price.price_id, price.metadata)]
    if product is not None:
        layers.append((Source.PRODUCT, product.product_id, product.metadata))
    return layers


def _reference(
    layers: list[_Layer], key: str, known: Mapping[str, object], noun: str, problems: list[MetadataProblem]
) -> str | None:
    for entry, entry_id, metadata in layers:
        # Stripe deletes a metadata key set to "", so an empty value means absent.
        code = metadata.get(key)
        if not code:
            continue
        if code in known:
            return code
        problems.append(MetadataProblem(entry, entry_id, f"{key} {code!r} is not a known {noun}"))
        return None
    return None


def _ownership_problems(price: Price, product: Product | None) -> list[MetadataProblem]:
    if product is None:
        return [MetadataProblem(Source.PRICE, price.price_id, f"product {price.product_id} is not in the catalog")]
    if product.product_id != price.product_id:
        message = f"belongs to product {price.product_id}, not {product.product_id}"
        return [MetadataProblem(Source.PRICE, price.price_id, message)]
    return []


def _grants_of(
    metadata: Mapping[str, str], source: Source, entry_id: str, problems: list[MetadataProblem]
) -> tuple[GrantSpec, ...]:
    text = metadata.get(GRANTS)
    if not text:
        return ()
    try:
        return parse_grants(text, source)
    except MetadataError as exc:
        problems.append(MetadataProblem(source, entry_id, str(exc)))
        return ()


def _refuse_repeated_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads would otherwise keep the last of two equal keys without a word.
    document: dict[str, object] = {}
    for key, value in pairs:
        if key in document:
            raise MetadataError(f"grants: key {key!r} appears more than once in one JSON object")
        document[key] = value
    return document


def _array_entry(index: int, entry: object, source: Source) -> GrantSpec:
    where = f"grants[{index}]"
    if not isinstance(entry, dict):
        raise MetadataError(f"{where} must be a JSON object, not {_show(entry)}")
    _refuse_unknown_keys(where, entry, _ARRAY_ENTRY_KEYS)
    if "grant_program_code" not in entry:
        raise MetadataError(f"{where}: grant_program_code is missing")
    code = entry["grant_program_code"]
    if not isinstance(code, str) or not code.strip():
        raise MetadataError(f"{where}: grant_program_code must be a non-empty string, not {_show(code)}")
    return _spec(f"{where} ({code!r})", code, entry, source)


def _object_entry(code: str, value: object, source: Source) -> GrantSpec:
    where = f"grants[{code!r}]"
    if not code.strip():
        raise MetadataError("grants: a grant program code is empty")
    if not isinstance(value, dict):
        return _spec(where, code, {"amount": value}, source)
    _refuse_unknown_keys(where, value, _OBJECT_ENTRY_KEYS)
    return _spec(where, code, value, source)


def _spec(where: str, code: str, entry: Mapping[str, object], source: Source) -> GrantSpec:
    if "amount" not in entry:
        raise MetadataError(f"{where}: amount is missing")
    amount = entry["amount"]
    # bool is a subclass of int, and `true` as an amount is a mistake, not 1.
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise MetadataError(f"{where}: amount must be an integer, not {_show(amount)}")
    if amount < 0:
        raise MetadataError(f"{where}: amount must not be negative, not {amount}")
    if amount > MAX_GRANT_AMOUNT:
        raise MetadataError(f"{where}: amount must be at most {MAX_GRANT_AMOUNT}, not {amount}")
    scale = entry.get("scale_by_quantity", True)
    if not isinstance(scale, bool):
        raise MetadataError(f"{where}: scale_by_quantity must be true or false, not {_show(scale)}")
    return GrantSpec(grant_program_code=code, amount=amount, scale_by_quantity=scale, source=source)


def _refuse_unknown_keys(where: str, entry: Mapping[str, object], allowed: frozenset[str]) -> None:
    unknown = [key for key in entry if key not in allowed]
    if unknown:
        expected = ", ".join(sorted(allowed))
        raise MetadataError(f"{where}: unknown key {unknown[0]!r} (expected {expected})")


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return json.dumps(value)
