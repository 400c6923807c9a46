"""Issuing grants: once per paid billing period or paid one-time checkout, never twice.

Each issue carries a key built from the provider object that paid for it and the binding, and
the database keeps keys unique, so a duplicate or replayed event cannot issue again."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from catalog_rules.model import Cadence, GrantProgram, ResolvedPrice, Source
from entitlement_service.domain.account import PlacedBinding
from entitlement_service.domain.model import Mode
from entitlement_service.domain.provider import CheckoutSessionSnapshot, InvoiceSnapshot
from entitlement_service.domain.windows import Window


@dataclass(frozen=True)
class Issue:
    issue_key: str
    grant_program_code: str
    cadence: Cadence
    unit: str
    amount: int
    source: Source
    price_id: str
    issued_at: datetime
    subscription_id: str | None = None
    invoice_id: str | None = None
    checkout_session_id: str | None = None
    period: Window | None = None


def scaled(amount: int, scale_by_quantity: bool, quantity: int) -> int:
    return amount * quantity if scale_by_quantity else amount


def invoice_issues(
    invoice: InvoiceSnapshot, bindings: Iterable[PlacedBinding], programs: Mapping[str, GrantProgram]
) -> list[Issue]:
    """`per_period` grants for each paid line, from the binding that holds over the line's period
    (a binding lost to another subscription grants nothing); `one_time` grants of a subscription
    price once per subscription, on its first paid invoice."""
    if not invoice.paid or invoice.subscription_id is None:
        return []
    issued_at = invoice.paid_at or invoice.at
    issues: dict[str, Issue] = {}
    for line in invoice.lines:
        period = Window(line.period_start, line.period_end if line.period_end > line.period_start else None)
        for placed in sorted(bindings, key=lambda p: p.window.start):
            row = placed.row
            program = programs.get(row.grant_program_code)
            if (program is None or placed.conflict or row.subscription_id != invoice.subscription_id
                    or row.price_id != line.price_id or not placed.window.overlaps(period)):
                continue
            if program.cadence is Cadence.PER_PERIOD:
                key = f"{invoice.invoice_id}:{row.price_id}:{program.code}"
            elif program.cadence is Cadence.ONE_TIME:
                key = f"{invoice.subscription_id}:{row.price_id}:{program.code}"
            else:
                continue
            issues.setdefault(key, Issue(
                key, program.code, program.cadence, program.unit,
                scaled(row.amount, row.scale_by_quantity, line.quantity), row.source, row.price_id, issued_at,
                subscription_id=invoice.subscription_id, invoice_id=invoice.invoice_id,
                period=period if program.cadence is Cadence.PER_PERIOD else None,
            ))
    return list(issues.values())


def checkout_issues(
    session: CheckoutSessionSnapshot, prices: Mapping[str, ResolvedPrice], programs: Mapping[str, GrantProgram]
) -> list[Issue]:
    """`one_time` grants of a paid one-time checkout, once per session and price. A subscription
    checkout funds through its invoices instead."""
    if not session.paid or session.mode is not Mode.PAYMENT:
        return []
    issues = []
    for line in session.line_items:
        resolved = prices.get(line.price.price_id)
        if resolved is None or not resolved.valid:
            continue
        for grant in resolved.grants:
            program = programs.get(grant.grant_program_code)
            if program is None or program.cadence is not Cadence.ONE_TIME:
                continue
            issues.append(Issue(
                f"{session.checkout_session_id}:{line.price.price_id}:{program.code}", program.code, program.cadence,
                program.unit, scaled(grant.amount, grant.scale_by_quantity, line.quantity), grant.source,
                line.price.price_id, session.at, checkout_session_id=session.checkout_session_id,
            ))
    return issues
