"""The catalog's vocabulary, shared by both services: groups, plans, grant programs, gate
bundles, provider products and prices, and a price resolved against its product. Frozen values,
no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# The largest quantity and the largest grant amount kept: a grant scaled by its quantity is then at
# most 10^18, which fits the 64-bit integers of the wire format and the database.
MAX_QUANTITY = 1_000_000_000
MAX_GRANT_AMOUNT = 1_000_000_000


class Cadence(StrEnum):
    PER_PERIOD = "per_period"
    WHILE_ACTIVE = "while_active"
    ONE_TIME = "one_time"


class ChangePolicy(StrEnum):
    """What a `per_period` program issues when a subscription changes in the middle of a paid
    period: nothing (the next period funds the new plan), or the positive difference an upgrade
    makes, once for that period."""

    NONE = "none"
    DIFFERENCE = "difference"


class ConflictPolicy(StrEnum):
    """What is done when two live subscriptions meet in one non-stackable group anyway: a
    mismatch for support (`flag`), or the losing subscription canceled at the provider and its
    payment refunded, once (`cancel_and_refund`)."""

    FLAG = "flag"
    CANCEL_AND_REFUND = "cancel_and_refund"


class PlanKind(StrEnum):
    BASE = "base"
    ADDON = "addon"


class Source(StrEnum):
    """Where a grant binding came from."""

    PRICE = "price"
    PRODUCT = "product"


@dataclass(frozen=True)
class Group:
    code: str
    stackable: bool
    conflict_policy: ConflictPolicy = ConflictPolicy.FLAG


@dataclass(frozen=True)
class Plan:
    code: str
    priority: int
    kind: PlanKind = PlanKind.BASE


@dataclass(frozen=True)
class GrantProgram:
    code: str
    cadence: Cadence
    unit: str
    on_change: ChangePolicy = ChangePolicy.NONE


@dataclass(frozen=True)
class GateBundle:
    code: str
    gates: tuple[str, ...]


@dataclass(frozen=True)
class CatalogConfig:
    """The declarative half of the catalog: what metadata codes may refer to."""

    groups: dict[str, Group] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    grant_programs: dict[str, GrantProgram] = field(default_factory=dict)
    gate_bundles: dict[str, GateBundle] = field(default_factory=dict)


@dataclass(frozen=True)
class Product:
    """A provider product as the provider holds it."""

    product_id: str
    name: str
    active: bool
    metadata: dict[str, str]
    provider_updated_at: datetime
    deleted: bool = False


@dataclass(frozen=True)
class Price:
    """A provider price as the provider holds it. `interval` is None for a one-time price."""

    price_id: str
    product_id: str
    lookup_key: str | None
    active: bool
    unit_amount: int | None
    currency: str
    interval: str | None
    interval_count: int | None
    metadata: dict[str, str]
    provider_updated_at: datetime
    deleted: bool = False

    @property
    def recurring(self) -> bool:
        return self.interval is not None


@dataclass(frozen=True)
class GrantSpec:
    """A grant binding as catalog metadata declares it, with its provenance."""

    grant_program_code: str
    amount: int
    scale_by_quantity: bool
    source: Source


@dataclass(frozen=True)
class ResolvedPrice:
    """A price with its product's metadata merged in: everything a purchase of it implies.
    An invalid entry keeps its reason and is never purchasable."""

    price: Price
    product_name: str
    subscription_group: str | None
    billing_plan_code: str | None
    gate_bundle: str | None
    grants: tuple[GrantSpec, ...]
    valid: bool
    invalid_reason: str | None
    product_active: bool = True

    @property
    def price_id(self) -> str:
        return self.price.price_id

    @property
    def purchasable(self) -> bool:
        return self.valid and self.price.active and not self.price.deleted and self.product_active
