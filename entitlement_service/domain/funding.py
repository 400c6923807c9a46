"""Issuing grants: what each paid period, paid one-time line and paid one-time checkout funds, and
never more.

The rule: a `per_period` grant is issued at most once per (subscription, grant program, billing
period), from the paid invoice line that pays for that period: its price's grants (as the
catalog resolves them), its quantity and its period, whatever else arrives. A proration line (the
part of a period charged or credited because the subscription changed mid-period) funds nothing,
unless the program's `on_change` is `difference`: then an upgrade paid mid-period tops the period
up to the new binding's amount, so that the period's total is the highest amount paid for in it,
however often the customer toggles; a downgrade issues nothing and takes nothing back. A
`one_time` grant is issued once per paid one-time line (per subscription and price for a recurring
price) and once per paid one-time checkout and price. A subscription funds nothing over a period
it lost its group to another subscription for, and nothing before it is known.

Each issue carries a key, and the database keeps keys unique and the period rule too (one
`period` row per subscription, program and period end), so a duplicate or replayed event cannot
issue again."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from catalog_rules.model import Cadence, ChangePolicy, GrantProgram, GrantSpec, ResolvedPrice, Source
from entitlement_service.domain.model import Mode
from entitlement_service.domain.precedence import Loss
from entitlement_service.domain.price_book import PriceBook
from entitlement_service.domain.provider import CheckoutSessionSnapshot, InvoiceLine, InvoiceSnapshot
from entitlement_service.domain.windows import Window

if TYPE_CHECKING:
    from entitlement_service.domain.records import IssuedGrantRecord

# Why an issue was made (stored with it).
PERIOD, DIFFERENCE, ONE_TIME, CHECKOUT = "period", "difference", "one_time", "checkout"


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
    basis: str = PERIOD
    funded_to: int | None = None  # a `difference` issue: the period's total once it is issued


def scaled(amount: int, scale_by_quantity: bool, quantity: int) -> int:
    return amount * quantity if scale_by_quantity else amount


# A billing period of one subscription and program, told apart by its end.
Slot = tuple[str, str, datetime | None]


def _lost_over(losses: Sequence[Loss], period: Window) -> bool:
    """True when the subscription lost its group over the whole period (at its start, for a period
    of no length)."""
    if period.end is not None and period.end <= period.start:
        return any(loss.window.contains(period.start) for loss in losses)
    covered = period.start
    for loss in sorted(losses, key=lambda lost: lost.window.start):
        if loss.window.start > covered:
            break
        if loss.window.end is None:
            return True
        covered = max(covered, loss.window.end)
        if period.end is not None and covered >= period.end:
            return True
    return False


@dataclass
class _Ledger:
    """What is issued so far: keys, and the total funding each period slot holds."""

    keys: set[str]
    totals: dict[Slot, int]

    @classmethod
    def of(cls, issued: Iterable[IssuedGrantRecord]) -> _Ledger:
        ledger = cls(set(), {})
        for row in issued:
            ledger.keys.add(row.issue_key)
            if row.cadence is Cadence.PER_PERIOD and row.subscription_id and row.period is not None:
                slot = (row.subscription_id, row.grant_program_code, row.period.end)
                ledger.totals[slot] = ledger.totals.get(slot, 0) + row.amount
        return ledger

    def take(self, issue: Issue, slot: Slot | None = None) -> Issue | None:
        if issue.issue_key in self.keys:
            return None
        self.keys.add(issue.issue_key)
        if slot is not None:
            self.totals[slot] = self.totals.get(slot, 0) + issue.amount
        return issue


def invoice_issues(
    invoices: Iterable[InvoiceSnapshot], prices: PriceBook | Mapping[str, ResolvedPrice],
    programs: Mapping[str, GrantProgram],
    known: Iterable[str], lost: Mapping[tuple[str, str], Sequence[Loss]], issued: Iterable[IssuedGrantRecord],
    since: datetime | None = None,
) -> list[Issue]:
    """The issues the paid invoices of the `known` subscriptions call for that `issued` does not
    hold yet (the module docstring states the rule), each line read with its price's resolution in
    force when the invoice was paid. Invoices are taken in the order they were paid; a period's
    total never exceeds the highest amount paid for in it, in any order.

    With `since`, lines whose period ended before it are left alone: an earlier derivation settled
    them, and `issued` need only hold what funds periods ending at or after `since`."""
    book = prices if isinstance(prices, PriceBook) else PriceBook.constant(prices)
    subscriptions = set(known)
    ledger = _Ledger.of(issued)
    found: list[Issue] = []
    paid = [i for i in invoices if i.paid and i.subscription_id in subscriptions]
    for invoice in sorted(paid, key=lambda i: (i.paid_at or i.at, i.invoice_id)):
        for line in invoice.lines:
            if since is not None and line.period_end < since:
                continue
            resolved = book.at(line.price_id, invoice.paid_at or invoice.at)
            if resolved is None or not resolved.valid:
                continue
            period = Window(line.period_start, line.period_end if line.period_end > line.period_start else None)
            if _lost_over(lost.get((invoice.subscription_id or "", resolved.subscription_group or ""), ()),
                          Window(line.period_start, line.period_end)):
                continue
            for grant in resolved.grants:
                program = programs.get(grant.grant_program_code)
                if program is not None:
                    issue = _line_issue(invoice, line, resolved, grant, program, period, ledger)
                    if issue is not None:
                        found.append(issue)
    return found


def _line_issue(invoice: InvoiceSnapshot, line: InvoiceLine, resolved: ResolvedPrice, grant: GrantSpec,
                program: GrantProgram, period: Window, ledger: _Ledger) -> Issue | None:
    sub = invoice.subscription_id or ""
    amount = scaled(grant.amount, grant.scale_by_quantity, line.quantity)

    def issue(key: str, amount: int, basis: str, period: Window | None = None, funded_to: int | None = None
              ) -> Issue:
        return Issue(key, program.code, program.cadence, program.unit, amount, grant.source, line.price_id,
                     invoice.paid_at or invoice.at, subscription_id=sub, invoice_id=invoice.invoice_id,
                     period=period, basis=basis, funded_to=funded_to)

    if program.cadence is Cadence.ONE_TIME:
        if line.proration:
            return None
        if resolved.price.recurring:
            return ledger.take(issue(f"{sub}:{line.price_id}:{program.code}", amount, ONE_TIME))
        return ledger.take(issue(f"{invoice.invoice_id}:{line.price_id}:{program.code}", amount, ONE_TIME))
    if program.cadence is not Cadence.PER_PERIOD or not resolved.price.recurring:
        return None
    slot = (sub, program.code, period.end)
    held = ledger.totals.get(slot, 0)
    stamp = period.end.isoformat() if period.end else period.start.isoformat()
    # The period's total only ever rises to the amount a line pays for (its level): whichever of
    # the period's lines arrives first, the total ends at the highest level that counts.
    if not line.proration:
        key = f"{sub}:{program.code}:{stamp}"
        if key in ledger.keys or (held and amount <= held):
            return None
        return ledger.take(issue(key, amount - held, PERIOD, period=period), slot)
    if program.on_change is not ChangePolicy.DIFFERENCE or (line.amount or 0) <= 0 or amount <= held:
        return None
    return ledger.take(issue(f"{sub}:{program.code}:{stamp}:to:{amount}", amount - held, DIFFERENCE,
                             period=period, funded_to=amount), slot)


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
                line.price.price_id, session.at, checkout_session_id=session.checkout_session_id, basis=CHECKOUT,
            ))
    return issues
