"""Database rows to domain values and back: the one place that knows both shapes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from catalog_rules.model import (
    Cadence,
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
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.timeline import AssignmentRow, BindingRow
from entitlement_service.domain.windows import Window

Row = Mapping[str, Any]


def to_range(window: Window) -> asyncpg.Range:
    return asyncpg.Range(window.start, window.end, lower_inc=True, upper_inc=False)


def to_window(value: asyncpg.Range) -> Window:
    return Window(value.lower, value.upper)


def group(row: Row) -> Group:
    return Group(row["code"], row["stackable"])


def plan(row: Row) -> Plan:
    return Plan(row["code"], row["priority"], PlanKind(row["kind"]))


def grant_program(row: Row) -> GrantProgram:
    return GrantProgram(row["code"], Cadence(row["cadence"]), row["unit"])


def gate_bundle(row: Row) -> GateBundle:
    return GateBundle(row["code"], tuple(row["gates"]))


def product(row: Row) -> Product:
    return Product(row["product_id"], row["name"], row["active"], dict(row["metadata"]),
                   row["provider_updated_at"], row["deleted"])


def price(row: Row) -> Price:
    return Price(row["price_id"], row["product_id"], row["lookup_key"], row["active"], row["unit_amount"],
                 row["currency"], row["interval"], row["interval_count"], dict(row["metadata"]),
                 row["provider_updated_at"], row["deleted"])


def grants_json(grants: tuple[GrantSpec, ...]) -> list[dict[str, Any]]:
    return [{"grant_program_code": g.grant_program_code, "amount": g.amount,
             "scale_by_quantity": g.scale_by_quantity, "source": g.source.value} for g in grants]


def resolved_price(row: Row) -> ResolvedPrice:
    grants = tuple(GrantSpec(g["grant_program_code"], g["amount"], g["scale_by_quantity"], Source(g["source"]))
                   for g in row["grant_bindings"])
    return ResolvedPrice(price(row), row["product_name"] or "", row["subscription_group"], row["billing_plan_code"],
                         row["gate_bundle"], grants, row["valid"], row["invalid_reason"],
                         bool(row["product_active"]))


def placed_assignment(row: Row) -> PlacedAssignment:
    window = to_window(row["effective"])
    assignment = AssignmentRow(row["subscription_id"], row["subscription_group"], row["price_id"],
                               row["billing_plan_code"], row["priority"], row["gate_bundle"], row["started_at"], window)
    return PlacedAssignment(assignment, window, row["conflict_with_subscription_id"])


def placed_binding(row: Row) -> PlacedBinding:
    window = to_window(row["effective"])
    binding = BindingRow(row["subscription_id"], row["subscription_group"], row["price_id"], row["product_id"],
                         row["grant_program_code"], row["amount"], row["scale_by_quantity"], row["quantity"],
                         Source(row["source"]), window)
    return PlacedBinding(binding, window, row["conflict_with_subscription_id"])
