"""The catalog file: TOML text in, a validated catalog out (the format is in docs/contract.md).

Every problem in the file is found before anything is applied, so a file applies whole or not at
all; each problem is one line naming its entry, in file order.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import TypeVar

from catalog_rules.metadata import BILLING_PLAN_CODE, METADATA_KEYS, bundle_without_plan, explain_price
from catalog_rules.model import (
    Cadence,
    CatalogConfig,
    ChangePolicy,
    ConflictPolicy,
    GateBundle,
    GrantProgram,
    Group,
    Plan,
    PlanKind,
    Price,
    Product,
    Source,
)

INTERVALS = ("day", "week", "month", "year")
# Stripe refuses longer metadata values; finding out here keeps a half-applied catalog impossible.
STRIPE_METADATA_VALUE_MAX = 500
# What the provider's and the services' integers hold: a plan's priority and a price's
# interval_count are 32-bit, an amount 64-bit. TOML's own integers are 64-bit, tomllib's unbounded.
INT32 = (-(2**31), 2**31 - 1)
INT64_MAX = 2**63 - 1
NUL = "\x00"

_SECTION_KEYS: dict[str, frozenset[str]] = {
    "groups": frozenset({"stackable", "conflict_policy"}),
    "plans": frozenset({"priority", "kind"}),
    "grant_programs": frozenset({"cadence", "unit", "on_change"}),
    "gate_bundles": frozenset({"gates"}),
}
_TOP_KEYS = (*_SECTION_KEYS, "products")
_PRODUCT_KEYS = frozenset({"id", "name", "active", "metadata", "prices"})
_PRICE_KEYS = frozenset({"lookup_key", "unit_amount", "currency", "interval", "interval_count", "active", "metadata"})
# Validation builds provider-shaped values; their timestamp is never read.
_CHECKED_AT = datetime(1970, 1, 1, tzinfo=UTC)

_T = TypeVar("_T")


@dataclass(frozen=True)
class PriceSpec:
    lookup_key: str
    unit_amount: int
    currency: str
    interval: str | None
    interval_count: int | None
    active: bool
    metadata: dict[str, str]

    def as_price(self, price_id: str, product_id: str, at: datetime) -> Price:
        """The price as the provider holds it once applied, under the id the provider gave it."""
        return Price(price_id=price_id, product_id=product_id, lookup_key=self.lookup_key, active=self.active,
                     unit_amount=self.unit_amount, currency=self.currency, interval=self.interval,
                     interval_count=self.interval_count, metadata=dict(self.metadata), provider_updated_at=at)


@dataclass(frozen=True)
class ProductSpec:
    product_id: str
    name: str
    active: bool
    metadata: dict[str, str]
    prices: tuple[PriceSpec, ...]

    def as_product(self, at: datetime) -> Product:
        """The product as the provider holds it once applied."""
        return Product(product_id=self.product_id, name=self.name, active=self.active,
                       metadata=dict(self.metadata), provider_updated_at=at)


@dataclass(frozen=True)
class CatalogFile:
    config: CatalogConfig
    products: tuple[ProductSpec, ...]


class CatalogFileError(ValueError):
    """The catalog file cannot be used; `errors` holds one line per problem, in file order."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


def parse_catalog(text: str) -> CatalogFile:
    """A catalog from TOML text. Keeps: a returned catalog has no unknown keys, no duplicate ids
    or lookup keys, and every price resolves valid; anything else raises CatalogFileError."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogFileError([f"not valid TOML: {exc}"]) from None
    errors: dict[str, list[str]] = {key: [] for key in document}
    for key in document:
        if key not in _TOP_KEYS:
            errors[key].append(f"unknown top-level key {key!r} (expected {', '.join(_TOP_KEYS)})")
    config = CatalogConfig(
        groups=_section(document, "groups", _group, errors),
        plans=_section(document, "plans", _plan, errors),
        grant_programs=_section(document, "grant_programs", _grant_program, errors),
        gate_bundles=_section(document, "gate_bundles", _gate_bundle, errors),
    )
    products = _products(document.get("products", []), config, errors.get("products", []))
    found = [line for key in document for line in errors[key]]
    if found:
        raise CatalogFileError(found)
    return CatalogFile(config=config, products=products)


class _Entry:
    """One TOML table under validation. Problems are recorded against its label rather than
    raised, so one pass reports them all; readers return a harmless stand-in for a bad value."""

    def __init__(self, raw: object, label: str, allowed: Collection[str], errors: list[str]) -> None:
        self.label = label
        self.errors = errors
        self.raw: Mapping[str, object] = raw if isinstance(raw, dict) else {}
        self.silenced = False
        if not isinstance(raw, dict):
            self.error(f"must be a table, not {_kind(raw)}")
            # Every key of a non-table is "missing"; saying so adds nothing.
            self.silenced = True
        for key in self.raw:
            if key not in allowed:
                self.error(f"unknown key {key!r} (expected {', '.join(sorted(allowed))})")

    def error(self, message: str) -> None:
        if not self.silenced:
            self.errors.append(f"{self.label}: {message}")

    def present(self, key: str, optional: bool) -> bool:
        if key not in self.raw and not optional:
            self.error(f"{key} is missing")
        return key in self.raw

    def string(self, key: str, choices: Collection[str] = (), optional: bool = False) -> str | None:
        value = self.raw.get(key)
        if not self.present(key, optional):
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(f"{key} must be a non-empty string, not {_kind(value)}")
        elif NUL in value:
            self.error(f"{key} must not contain a NUL character")
        elif choices and value not in choices:
            self.error(f"{key} must be one of {', '.join(choices)}, not {value!r}")
        else:
            return value
        return None

    def integer(self, key: str, minimum: int, maximum: int, optional: bool = False) -> int | None:
        value = self.raw.get(key)
        if not self.present(key, optional):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(f"{key} must be an integer, not {_kind(value)}")
        elif value < minimum:
            self.error(f"{key} must be at least {minimum}, not {value}")
        elif value > maximum:
            self.error(f"{key} must be at most {maximum}, not {value}")
        else:
            return value
        return None

    def boolean(self, key: str, default: bool | None) -> bool:
        value = self.raw.get(key, default)
        if not self.present(key, optional=default is not None):
            return False if default is None else default
        if not isinstance(value, bool):
            self.error(f"{key} must be true or false, not {_kind(value)}")
            return False
        return value

    def metadata(self) -> dict[str, str] | None:
        """The metadata table, or None when any of it is unusable."""
        raw = self.raw.get("metadata", {})
        if not isinstance(raw, dict):
            self.error(f"metadata must be a table, not {_kind(raw)}")
            return None
        count = len(self.errors)
        for key, value in raw.items():
            if key not in METADATA_KEYS:
                # An unquoted `gating.bundle = ...` is a nested table to TOML, not a dotted key.
                hint = '; quote a key with a dot: "gating.bundle" = ...' if isinstance(value, dict) else ""
                self.error(f"metadata: unknown key {key!r} (expected {', '.join(METADATA_KEYS)}){hint}")
            elif not isinstance(value, str):
                self.error(f"metadata {key!r} must be a string (Stripe metadata values are strings), "
                           f"not {_kind(value)}")
            elif not value.strip():
                self.error(f"metadata {key!r} is empty (Stripe deletes a metadata key set to an empty string)")
            elif NUL in value:
                self.error(f"metadata {key!r} must not contain a NUL character")
            elif len(value) > STRIPE_METADATA_VALUE_MAX:
                self.error(f"metadata {key!r} is {len(value)} characters; Stripe allows {STRIPE_METADATA_VALUE_MAX}")
        return dict(raw) if len(self.errors) == count else None


def _section(
    document: Mapping[str, object], key: str, read: Callable[[str, _Entry], _T], errors: dict[str, list[str]]
) -> dict[str, _T]:
    raw = document.get(key, {})
    if not isinstance(raw, dict):
        errors[key].append(f"{key} must be a table keyed by code, not {_kind(raw)}")
        return {}
    entries: dict[str, _T] = {}
    for code, body in raw.items():
        entry = _Entry(body, f"{key}.{code}", _SECTION_KEYS[key], errors[key])
        if not code.strip():
            entry.error("a code must not be empty")
        elif NUL in code:
            entry.error("a code must not contain a NUL character")
        entries[code] = read(code, entry)
    return entries


def _group(code: str, entry: _Entry) -> Group:
    stackable = entry.boolean("stackable", default=None)
    policy = entry.string("conflict_policy", choices=tuple(ConflictPolicy), optional=True)
    if policy is not None and stackable:
        entry.error("conflict_policy applies to non-stackable groups only")
    return Group(code=code, stackable=stackable, conflict_policy=ConflictPolicy(policy or ConflictPolicy.FLAG))


def _plan(code: str, entry: _Entry) -> Plan:
    priority = entry.integer("priority", *INT32)
    kind = entry.string("kind", choices=tuple(PlanKind), optional=True)
    return Plan(code=code, priority=priority or 0, kind=PlanKind(kind or PlanKind.BASE))


def _grant_program(code: str, entry: _Entry) -> GrantProgram:
    cadence = entry.string("cadence", choices=tuple(Cadence))
    unit = entry.string("unit")
    on_change = entry.string("on_change", choices=tuple(ChangePolicy), optional=True)
    if on_change is not None and cadence is not None and cadence != Cadence.PER_PERIOD:
        entry.error(f"on_change applies to per_period programs only, not {cadence}")
    return GrantProgram(code=code, cadence=Cadence(cadence or Cadence.ONE_TIME), unit=unit or "",
                        on_change=ChangePolicy(on_change or ChangePolicy.NONE))


def _gate_bundle(code: str, entry: _Entry) -> GateBundle:
    gates = entry.raw.get("gates")
    if gates is None:
        entry.error("gates is missing")
    elif not isinstance(gates, list) or not all(isinstance(g, str) and g.strip() for g in gates):
        entry.error("gates must be a list of non-empty strings")
    elif any(NUL in g for g in gates):
        entry.error("gates must not contain a NUL character")
    else:
        return GateBundle(code=code, gates=tuple(gates))
    return GateBundle(code=code, gates=())


def _products(raw: object, config: CatalogConfig, errors: list[str]) -> tuple[ProductSpec, ...]:
    if not isinstance(raw, list):
        errors.append(f"products must be an array of tables ([[products]]), not {_kind(raw)}")
        return ()
    ids: dict[str, str] = {}
    lookup_keys: dict[str, str] = {}
    products = []
    for index, body in enumerate(raw):
        product_id = body.get("id") if isinstance(body, dict) else None
        label = f"products[{index}]" + (f" (id {product_id!r})" if isinstance(product_id, str) and product_id else "")
        entry = _Entry(body, label, _PRODUCT_KEYS, errors)
        product = _product(entry, config, lookup_keys)
        if product.product_id and product.product_id in ids:
            entry.error(f"id {product.product_id!r} is already used by {ids[product.product_id]}")
        ids.setdefault(product.product_id, label)
        products.append(product)
    return tuple(products)


def _product(entry: _Entry, config: CatalogConfig, lookup_keys: dict[str, str]) -> ProductSpec:
    product_id = entry.string("id") or ""
    name = entry.string("name") or ""
    active = entry.boolean("active", default=True)
    metadata = entry.metadata()
    shell = ProductSpec(product_id=product_id, name=name, active=active, metadata=metadata or {}, prices=())
    if metadata is not None:
        # A product's own references are checked even where every price overrides them.
        probe = PriceSpec(lookup_key="", unit_amount=0, currency="usd", interval=None, interval_count=None,
                          active=True, metadata={})
        _check_references(entry, shell, probe, Source.PRODUCT, config)
    raw_prices = entry.raw.get("prices", [])
    if not isinstance(raw_prices, list):
        entry.error(f"prices must be an array of tables ([[products.prices]]), not {_kind(raw_prices)}")
        raw_prices = []
    prices = []
    for index, body in enumerate(raw_prices):
        lookup_key = body.get("lookup_key") if isinstance(body, dict) else None
        where = f"price {lookup_key!r}" if isinstance(lookup_key, str) and lookup_key else f"prices[{index}]"
        price_entry = _Entry(body, f"{entry.label} {where}", _PRICE_KEYS, entry.errors)
        price, price_metadata_usable = _price(price_entry, lookup_keys)
        if price_metadata_usable and metadata is not None:
            _check_references(price_entry, shell, price, Source.PRICE, config)
        prices.append(price)
    return ProductSpec(product_id=product_id, name=name, active=active, metadata=metadata or {}, prices=tuple(prices))


def _price(entry: _Entry, lookup_keys: dict[str, str]) -> tuple[PriceSpec, bool]:
    """The price, and whether its metadata is usable (references cannot be checked otherwise)."""
    lookup_key = entry.string("lookup_key")
    if lookup_key is not None:
        if lookup_key in lookup_keys:
            entry.error(f"lookup_key {lookup_key!r} is already used by {lookup_keys[lookup_key]}")
        lookup_keys.setdefault(lookup_key, entry.label)
    unit_amount = entry.integer("unit_amount", 0, INT64_MAX)
    currency = entry.string("currency")
    if currency is not None and not (len(currency) == 3 and currency.isascii() and currency.isalpha()
                                     and currency.islower()):
        entry.error(f"currency must be three lowercase letters (an ISO 4217 code), not {currency!r}")
    interval = entry.string("interval", choices=INTERVALS, optional=True)
    interval_count = entry.integer("interval_count", 1, INT32[1], optional=True)
    if "interval_count" in entry.raw and "interval" not in entry.raw:
        entry.error("interval_count needs an interval (a one-time price has neither)")
    if interval is not None and interval_count is None:
        interval_count = 1
    active = entry.boolean("active", default=True)
    metadata = entry.metadata()
    spec = PriceSpec(lookup_key=lookup_key or "", unit_amount=unit_amount or 0, currency=currency or "",
                     interval=interval, interval_count=interval_count, active=active, metadata=metadata or {})
    return spec, metadata is not None


def _check_references(
    entry: _Entry, product: ProductSpec, price: PriceSpec, blame: Source, config: CatalogConfig
) -> None:
    # The same rules the service applies to provider metadata, so the file cannot disagree with them.
    price_value = price.as_price(price.lookup_key, product.product_id, _CHECKED_AT)
    resolved, problems = explain_price(price_value, product.as_product(_CHECKED_AT), config)
    for problem in problems:
        if problem.entry is blame:
            entry.error(problem.message)
    # A plan that is named but unknown is reported above; the bundle rule is about no plan at all.
    plan_named = any(metadata.get(BILLING_PLAN_CODE) for metadata in (price.metadata, product.metadata))
    unused = bundle_without_plan(resolved) if blame is Source.PRICE and not plan_named else None
    if unused is not None:
        entry.error(unused)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    for types, name in ((int, "an integer"), (float, "a float"), (str, "a string")):
        if isinstance(value, types):
            return f"{name} ({value!r})"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return "an array" if isinstance(value, list) else "a table" if isinstance(value, dict) else type(value).__name__
