"""Small builders for the entitlement domain's values, with defaults that describe one ordinary
account: a Pro subscription in the non-stackable `core` group, bought at T0, billed monthly.

Times are `T0` plus an offset (`days(3)`, `hours(1.5)`, `seconds(1)`), so a test reads as a
timeline. Each builder takes keyword overrides for the one thing a test is about."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from catalog_rules.metadata import resolve_price
from catalog_rules.model import (
    Cadence,
    CatalogConfig,
    GateBundle,
    GrantProgram,
    Group,
    Plan,
    PlanKind,
    Price,
    Product,
    ResolvedPrice,
    Source,
)
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.model import Mode, Status
from entitlement_service.domain.provider import (
    CheckoutSessionSnapshot,
    InvoiceLine,
    InvoiceSnapshot,
    ItemSnapshot,
    LineItem,
    SubscriptionSnapshot,
)
from entitlement_service.domain.timeline import AssignmentRow, BindingRow
from entitlement_service.domain.windows import Window

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD = timedelta(days=31)


def days(n: float) -> datetime:
    return T0 + timedelta(days=n)


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


# --- catalog ------------------------------------------------------------------------------------

CONFIG = CatalogConfig(
    groups={"core": Group("core", stackable=False), "addons": Group("addons", stackable=True)},
    plans={
        "starter": Plan("starter", 10),
        "pro": Plan("pro", 20),
        "seats": Plan("seats", 5, PlanKind.ADDON),
    },
    grant_programs={
        "ai_credits": GrantProgram("ai_credits", Cadence.PER_PERIOD, "credit"),
        "seats": GrantProgram("seats", Cadence.WHILE_ACTIVE, "seat"),
        "bonus": GrantProgram("bonus", Cadence.ONE_TIME, "credit"),
        "storage": GrantProgram("storage", Cadence.WHILE_ACTIVE, "gb"),
    },
    gate_bundles={
        "starter": GateBundle("starter", ("export",)),
        "pro": GateBundle("pro", ("export", "api_access")),
    },
)
PROGRAMS = CONFIG.grant_programs
BUNDLES = CONFIG.gate_bundles


def grants(*entries: tuple[str, int] | tuple[str, int, bool]) -> str:
    """The `grants` metadata text: (program, amount) or (program, amount, scale_by_quantity)."""
    out = []
    for code, amount, *scale in entries:
        entry: dict[str, object] = {"grant_program_code": code, "amount": amount}
        if scale:
            entry["scale_by_quantity"] = scale[0]
        out.append(entry)
    return json.dumps(out)


def product(
    product_id: str = "pro",
    *,
    group: str | None = "core",
    plan: str | None = None,
    bundle: str | None = None,
    grant_text: str | None = None,
    name: str | None = None,
) -> Product:
    metadata = {
        key: value
        for key, value in (
            ("subscription_group", group), ("billing_plan_code", plan), ("gating.bundle", bundle),
            ("grants", grant_text),
        )
        if value is not None
    }
    return Product(product_id, name or product_id.title(), active=True, metadata=metadata, provider_updated_at=T0)


def price(
    price_id: str = "price_pro",
    product_id: str = "pro",
    *,
    interval: str | None = "month",
    metadata: Mapping[str, str] | None = None,
    unit_amount: int = 2000,
) -> Price:
    return Price(
        price_id=price_id, product_id=product_id, lookup_key=price_id.removeprefix("price_"), active=True,
        unit_amount=unit_amount, currency="usd", interval=interval, interval_count=1 if interval else None,
        metadata=dict(metadata or {}), provider_updated_at=T0,
    )


def resolved(price_: Price, product_: Product, config: CatalogConfig = CONFIG) -> ResolvedPrice:
    return resolve_price(price_, product_, config)


def catalog(*entries: ResolvedPrice) -> dict[str, ResolvedPrice]:
    return {entry.price_id: entry for entry in entries}


STARTER = resolved(
    price("price_starter", "starter", unit_amount=900),
    product("starter", plan="starter", bundle="starter", grant_text=grants(("ai_credits", 100))),
)
PRO = resolved(
    price("price_pro", "pro"),
    product("pro", plan="pro", bundle="pro", grant_text=grants(("ai_credits", 1000))),
)
# A yearly Pro price with a welcome bonus granted once per subscription.
PRO_BONUS = resolved(
    price("price_pro_bonus", "pro", interval="year", metadata={"grants": grants(("bonus", 500, False))}),
    product("pro", plan="pro", bundle="pro", grant_text=grants(("ai_credits", 1000))),
)
SEATS = resolved(
    price("price_seats", "seats", unit_amount=500),
    product("seats", group="addons", plan="seats", grant_text=grants(("seats", 1))),
)
# Extra storage: a second item a core subscription may carry next to its plan; it names no plan.
STORAGE = resolved(
    price("price_storage", "storage", unit_amount=300),
    product("storage", grant_text=grants(("storage", 10))),
)
# A one-time credit pack, bought in payment mode.
PACK = resolved(
    price("price_pack", "pack", interval=None, unit_amount=1500),
    product("pack", group="addons", grant_text=grants(("bonus", 250))),
)
PRICES = catalog(STARTER, PRO, PRO_BONUS, STORAGE, SEATS, PACK)


# --- provider snapshots -------------------------------------------------------------------------


def item(
    price_id: str = "price_pro",
    quantity: int = 1,
    *,
    period_start: datetime = T0,
    period_end: datetime | None = None,
    prices: Mapping[str, ResolvedPrice] = PRICES,
) -> ItemSnapshot:
    """An item of a known catalog price, or of a bare price the catalog has never heard of."""
    known = prices.get(price_id)
    item_price = known.price if known is not None else price(price_id, "unknown")
    return ItemSnapshot(
        item_id=f"si_{price_id}", price=item_price, quantity=quantity,
        current_period_start=period_start, current_period_end=period_end or period_start + PERIOD,
    )


def snapshot(
    *items: ItemSnapshot,
    sub: str = "sub_1",
    status: Status = Status.ACTIVE,
    at: datetime = T0,
    event_id: str | None = None,
    start_date: datetime | None = T0,
    cancel_at: datetime | None = None,
    cancel_at_period_end: bool = False,
    canceled_at: datetime | None = None,
    ended_at: datetime | None = None,
    trial_end: datetime | None = None,
) -> SubscriptionSnapshot:
    """A subscription as of provider time `at`; one Pro item unless items are given. The default
    event id is unique per (subscription, instant, status); pass one when a tie is the point."""
    return SubscriptionSnapshot(
        subscription_id=sub, provider_customer_id="cus_1", status=status, at=at,
        event_id=event_id or f"evt_{sub}_{int((at - T0).total_seconds())}_{status.value}",
        items=items or (item(),), start_date=start_date, trial_end=trial_end, cancel_at=cancel_at,
        cancel_at_period_end=cancel_at_period_end, canceled_at=canceled_at, ended_at=ended_at,
    )


def invoice_line(
    price_id: str = "price_pro", quantity: int = 1, *, start: datetime = T0, end: datetime | None = None
) -> InvoiceLine:
    return InvoiceLine(price_id, quantity, start, end or start + PERIOD)


def invoice(
    *lines: InvoiceLine,
    invoice_id: str = "in_1",
    sub: str | None = "sub_1",
    paid: bool = True,
    at: datetime = T0,
    billing_reason: str = "subscription_create",
) -> InvoiceSnapshot:
    return InvoiceSnapshot(
        invoice_id=invoice_id, subscription_id=sub, provider_customer_id="cus_1", paid=paid,
        billing_reason=billing_reason, lines=lines or (invoice_line(),), at=at, paid_at=at if paid else None,
    )


def line_item(
    price_id: str = "price_pack", quantity: int = 1, prices: Mapping[str, ResolvedPrice] = PRICES
) -> LineItem:
    known = prices.get(price_id)
    return LineItem(known.price if known is not None else price(price_id, "unknown", interval=None), quantity)


def checkout_session(
    *lines: LineItem,
    session_id: str = "cs_1",
    mode: Mode = Mode.PAYMENT,
    status: str = "complete",
    payment_status: str = "paid",
    subscription_id: str | None = None,
    at: datetime = T0,
) -> CheckoutSessionSnapshot:
    return CheckoutSessionSnapshot(
        checkout_session_id=session_id, purchase_id="pur_1", provider_customer_id="cus_1", mode=mode,
        status=status, payment_status=payment_status, subscription_id=subscription_id,
        line_items=lines or (line_item(),), at=at,
    )


# --- derived rows, for rules that start after derivation ----------------------------------------


def assignment(
    plan: str = "pro",
    *,
    sub: str = "sub_1",
    priority: int | None = None,
    bundle: str | None = None,
    started_at: datetime = T0,
    window: Window | None = None,
    conflict_with: str | None = None,
    group: str = "core",
) -> PlacedAssignment:
    """A placed plan assignment; priority from CONFIG and bundle = plan code unless given
    (pass bundle="" for a plan that names no bundle)."""
    row = AssignmentRow(
        subscription_id=sub, subscription_group=group, price_id=f"price_{plan}", billing_plan_code=plan,
        priority=CONFIG.plans[plan].priority if priority is None else priority,
        gate_bundle=plan if bundle is None else (bundle or None), started_at=started_at,
        window=window or Window(started_at),
    )
    return PlacedAssignment(row, row.window, conflict_with)


def binding(
    program: str = "ai_credits",
    amount: int = 1000,
    *,
    sub: str = "sub_1",
    price_id: str = "price_pro",
    quantity: int = 1,
    scale_by_quantity: bool = True,
    window: Window | None = None,
    conflict_with: str | None = None,
    source: Source = Source.PRODUCT,
) -> PlacedBinding:
    row = BindingRow(
        subscription_id=sub, subscription_group="core", price_id=price_id, product_id="pro",
        grant_program_code=program, amount=amount, scale_by_quantity=scale_by_quantity, quantity=quantity,
        source=source, window=window or Window(T0),
    )
    return PlacedBinding(row, row.window, conflict_with)
