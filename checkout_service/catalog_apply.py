"""`python -m checkout_service catalog apply FILE`: the catalog file to the provider and to the
entitlement service. The whole file is validated first; a second run changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from catalog_rules.file import CatalogFile, PriceSpec, ProductSpec
from catalog_rules.model import Cadence, CatalogConfig, ChangePolicy, ConflictPolicy, PlanKind
from checkout_service.stripe import normalize as norm
from checkout_service.stripe.gateway import Obj, Provider, ProviderError
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc

# The provider filters prices by at most this many lookup keys per call.
LOOKUP_KEYS_PER_CALL = 10

CADENCES = {Cadence.PER_PERIOD: pb.GRANT_CADENCE_PER_PERIOD, Cadence.WHILE_ACTIVE: pb.GRANT_CADENCE_WHILE_ACTIVE,
            Cadence.ONE_TIME: pb.GRANT_CADENCE_ONE_TIME}
KINDS = {PlanKind.BASE: pb.PLAN_KIND_BASE, PlanKind.ADDON: pb.PLAN_KIND_ADDON}
CHANGE_POLICIES = {ChangePolicy.NONE: pb.CHANGE_POLICY_NONE, ChangePolicy.DIFFERENCE: pb.CHANGE_POLICY_DIFFERENCE}
CONFLICT_POLICIES = {ConflictPolicy.FLAG: pb.CONFLICT_POLICY_FLAG,
                     ConflictPolicy.CANCEL_AND_REFUND: pb.CONFLICT_POLICY_CANCEL_AND_REFUND}


def config_message(config: CatalogConfig) -> pb.CatalogConfig:
    """The declarative half of a catalog file as UpsertCatalog takes it."""
    return pb.CatalogConfig(
        groups=[pb.SubscriptionGroup(code=g.code, stackable=g.stackable,
                                     conflict_policy=CONFLICT_POLICIES[g.conflict_policy])
                for g in config.groups.values()],
        plans=[pb.Plan(code=p.code, priority=p.priority, kind=KINDS[p.kind]) for p in config.plans.values()],
        grant_programs=[pb.GrantProgram(code=g.code, cadence=CADENCES[g.cadence], unit=g.unit,
                                        on_change=CHANGE_POLICIES[g.on_change])
                        for g in config.grant_programs.values()],
        gate_bundles=[pb.GateBundle(code=b.code, gates=list(b.gates)) for b in config.gate_bundles.values()],
    )


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    dry_run: bool = False

    def line(self) -> str:
        if self.dry_run:
            return (f"provider (dry run, nothing changed): would create {len(self.created)}, update "
                    f"{len(self.updated)}, leave {len(self.unchanged)} unchanged")
        return (f"provider: {len(self.created)} created, {len(self.updated)} updated, "
                f"{len(self.unchanged)} unchanged")


def _metadata_change(current: dict[str, str], wanted: dict[str, str]) -> dict[str, str] | None:
    """The provider merges metadata: keys to drop are sent empty."""
    if current == wanted:
        return None
    return {**{k: "" for k in current if k not in wanted}, **wanted}


async def _product(provider: Provider, spec: ProductSpec, report: Report) -> Obj:
    """The product as the provider holds it once applied (in a dry run: as it would)."""
    try:
        found = await provider.retrieve_product(spec.product_id)
    except ProviderError as exc:
        if exc.status != 404:
            raise
        report.created.append(f"product {spec.product_id}")
        wanted: Obj = {"id": spec.product_id, "name": spec.name, "active": spec.active, "metadata": spec.metadata}
        return wanted if report.dry_run else await provider.create_product(wanted)
    changes: dict[str, Any] = {}
    if found.get("name") != spec.name:
        changes["name"] = spec.name
    if bool(found.get("active")) != spec.active:
        changes["active"] = spec.active
    metadata = _metadata_change(dict(found.get("metadata") or {}), spec.metadata)
    if metadata is not None:
        changes["metadata"] = metadata
    if not changes:
        report.unchanged.append(f"product {spec.product_id}")
        return found
    report.updated.append(f"product {spec.product_id}")
    if report.dry_run:
        return {**found, "name": spec.name, "active": spec.active, "metadata": spec.metadata}
    return await provider.update_product(spec.product_id, changes)


def _same_terms(found: Obj, spec: PriceSpec, product_id: str) -> bool:
    recurring = found.get("recurring") or {}
    return (norm.ref(found.get("product")) == product_id and found.get("unit_amount") == spec.unit_amount
            and found.get("currency") == spec.currency and recurring.get("interval") == spec.interval
            and (recurring.get("interval_count") if spec.interval else None) == spec.interval_count)


def _new_price(spec: PriceSpec, product_id: str, transfer: bool) -> Obj:
    params: Obj = {"product": product_id, "unit_amount": spec.unit_amount, "currency": spec.currency,
                   "lookup_key": spec.lookup_key, "metadata": spec.metadata, "active": spec.active}
    if spec.interval:
        params["recurring"] = {"interval": spec.interval, "interval_count": spec.interval_count or 1}
    if transfer:
        params["transfer_lookup_key"] = True
    return params


async def _price(provider: Provider, spec: PriceSpec, product_id: str, found: Obj | None,
                 report: Report) -> Obj | None:
    """Prices are matched by lookup key. Amount, currency and interval cannot change at the
    provider: a new price takes the lookup key over and the old one is archived. Returns the price
    as the provider holds it once applied; in a dry run, as it would, or None for a price the
    provider would create (it has no id yet)."""
    label = f"price {spec.lookup_key}"
    if found is None:
        report.created.append(label)
        return None if report.dry_run else await provider.create_price(_new_price(spec, product_id, transfer=False))
    if not _same_terms(found, spec, product_id):
        report.created.append(f"{label} (new terms; {found['id']} archived)")
        if report.dry_run:
            return None
        created = await provider.create_price(_new_price(spec, product_id, transfer=True))
        await provider.update_price(str(found["id"]), {"active": False})
        return created
    changes: dict[str, Any] = {}
    metadata = _metadata_change(dict(found.get("metadata") or {}), spec.metadata)
    if metadata is not None:
        changes["metadata"] = metadata
    if bool(found.get("active")) != spec.active:
        changes["active"] = spec.active
    if not changes:
        report.unchanged.append(label)
        return found
    report.updated.append(label)
    if report.dry_run:
        return {**found, "metadata": spec.metadata, "active": spec.active}
    return await provider.update_price(str(found["id"]), changes)


async def _existing_prices(provider: Provider, file: CatalogFile) -> dict[str, Obj]:
    keys = [p.lookup_key for product in file.products for p in product.prices]
    found: dict[str, Obj] = {}
    for i in range(0, len(keys), LOOKUP_KEYS_PER_CALL):
        for price in await provider.prices_by_lookup_keys(keys[i:i + LOOKUP_KEYS_PER_CALL]):
            found[str(price.get("lookup_key"))] = price
    return found


async def apply(file: CatalogFile, provider: Provider, entitlement: entitlement_pb2_grpc.EntitlementServiceStub,
                now: Callable[[], datetime] = lambda: datetime.now(UTC), dry_run: bool = False
                ) -> tuple[Report, pb.UpsertCatalogResponse]:
    """Applies the file to the provider, then to the entitlement service. A dry run changes
    nothing at either: it reports what the provider would be asked to change, and asks the
    entitlement service what the entries it can already know (products, and prices the provider
    holds) would change and how many accounts that touches."""
    report = Report(dry_run=dry_run)
    existing = await _existing_prices(provider, file)
    products: list[Obj] = []
    prices: list[Obj] = []
    for spec in file.products:
        products.append(await _product(provider, spec, report))
        for price_spec in spec.prices:
            applied = await _price(provider, price_spec, spec.product_id, existing.get(price_spec.lookup_key), report)
            if applied is not None:
                prices.append(applied)
    stamp = int(now().timestamp())
    request = pb.UpsertCatalogRequest(config=config_message(file.config),
                                      products=[norm.product(p, stamp) for p in products],
                                      prices=[norm.price(p, {}, stamp) for p in prices], dry_run=dry_run)
    return report, await entitlement.UpsertCatalog(request, timeout=30)
