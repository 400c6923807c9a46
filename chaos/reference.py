"""What every account should hold, computed from the provider's state alone: its subscriptions,
invoices and checkout sessions as the provider's API shows them, and the catalog file.

Nothing here asks the services. The rules are the documented ones (docs/rules.md), written again
from the provider's side: a subscription is in force while its status is trialing, active or
past_due and before its end or scheduled cancellation; the account's gate bundle is its
highest-priority plan's; a per_period grant is issued once per (subscription, program, period)
from the paid line that pays for the period; a one_time grant once per paid one-time checkout
line. Pure functions over frozen values; reading the provider's JSON is the first of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from catalog_rules.file import CatalogFile
from catalog_rules.metadata import resolve_price
from catalog_rules.model import Cadence, ChangePolicy, GrantProgram, GrantSpec

EFFECTIVE = frozenset({"trialing", "active", "past_due"})
PAID_SESSION = frozenset({"paid", "no_payment_required"})
_V = TypeVar("_V")
# Catalog entries are resolved as of any instant: the run never changes the catalog.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Terms:
    """What a provider price means in the catalog."""

    price_id: str
    lookup_key: str
    recurring: bool
    plan: str | None
    priority: int
    gate_bundle: str | None
    grants: tuple[GrantSpec, ...]


@dataclass(frozen=True)
class Catalog:
    terms: Mapping[str, Terms]  # by provider price id
    programs: Mapping[str, GrantProgram]
    gates: Mapping[str, tuple[str, ...]]  # gate bundle code -> its gates


@dataclass(frozen=True)
class Item:
    price_id: str
    quantity: int


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    account_id: str
    status: str
    items: tuple[Item, ...]
    start: int
    cancel_at: int | None
    cancel_at_period_end: bool
    period_end: int | None
    ended_at: int | None


@dataclass(frozen=True)
class InvoiceLine:
    price_id: str
    quantity: int
    period_start: int
    period_end: int
    proration: bool
    amount: int


@dataclass(frozen=True)
class Invoice:
    invoice_id: str
    subscription_id: str
    paid: bool
    paid_at: int
    lines: tuple[InvoiceLine, ...]


@dataclass(frozen=True)
class Session:
    session_id: str
    account_id: str
    purchase_id: str
    mode: str
    status: str
    payment_status: str
    lines: tuple[Item, ...]


@dataclass(frozen=True)
class ProviderState:
    subscriptions: tuple[Subscription, ...]
    invoices: tuple[Invoice, ...]
    sessions: tuple[Session, ...]


# A funded slot: ("period", subscription, program, period end) for a per_period grant;
# ("checkout", session, program, 0) for a one-time checkout; ("invoice", invoice, program, 0) for a
# one-time line of an invoice; ("subscription", subscription, program, 0) for a one_time program
# bound to a recurring price.
Slot = tuple[str, str, str, int]


@dataclass(frozen=True)
class Binding:
    subscription_id: str
    price_id: str
    grant_program_code: str
    total_amount: int


@dataclass(frozen=True)
class Entitled:
    """What holds for an account at one instant."""

    plans: frozenset[tuple[str, str]] = frozenset()  # (subscription id, plan code)
    gate_bundle: str = ""
    gates: frozenset[str] = frozenset()
    bindings: frozenset[Binding] = frozenset()


@dataclass(frozen=True)
class Expected:
    """Everything an account should hold at the provider's present."""

    entitled: Entitled = field(default_factory=Entitled)
    funding: Mapping[Slot, int] = field(default_factory=dict)
    purchases: Mapping[str, str] = field(default_factory=dict)  # purchase id -> state


# Reading the provider's objects (its current API shape) -------------------------------------------

def _ref(value: Any) -> str:
    return str(value.get("id") if isinstance(value, dict) else value or "")


def subscription_of(obj: Mapping[str, Any]) -> Subscription:
    items = tuple(Item(_ref(i["price"]), int(i.get("quantity") or 1)) for i in obj["items"]["data"])
    ends = [int(i["current_period_end"]) for i in obj["items"]["data"] if i.get("current_period_end")]
    return Subscription(
        subscription_id=obj["id"], account_id=str((obj.get("metadata") or {}).get("account_id", "")),
        status=obj["status"], items=items, start=int(obj.get("start_date") or obj["created"]),
        cancel_at=obj.get("cancel_at"), cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        period_end=max(ends) if ends else None, ended_at=obj.get("ended_at"))


def invoice_of(obj: Mapping[str, Any]) -> Invoice:
    parent = (obj.get("parent") or {}).get("subscription_details") or {}
    lines = []
    for line in obj["lines"]["data"]:
        details = (line.get("parent") or {}).get("subscription_item_details") or {}
        lines.append(InvoiceLine(
            price_id=str(line["pricing"]["price_details"]["price"]), quantity=int(line.get("quantity") or 1),
            period_start=int(line["period"]["start"]), period_end=int(line["period"]["end"]),
            proration=bool(details.get("proration")), amount=int(line["amount"])))
    paid_at = (obj.get("status_transitions") or {}).get("paid_at") or obj["created"]
    return Invoice(invoice_id=obj["id"], subscription_id=_ref(parent.get("subscription") or obj.get("subscription")),
                   paid=obj["status"] == "paid", paid_at=int(paid_at), lines=tuple(lines))


def session_of(obj: Mapping[str, Any]) -> Session:
    metadata = obj.get("metadata") or {}
    lines = tuple(Item(_ref(line["price"]), int(line.get("quantity") or 1))
                  for line in (obj.get("line_items") or {}).get("data", []))
    return Session(session_id=obj["id"], account_id=str(metadata.get("account_id", "")),
                   purchase_id=str(obj.get("client_reference_id") or metadata.get("purchase_id") or ""),
                   mode=obj["mode"], status=obj["status"], payment_status=obj["payment_status"], lines=lines)


def catalog_of(file: CatalogFile, price_ids: Mapping[str, str]) -> Catalog:
    """The catalog file's prices under the provider ids `price_ids` gives their lookup keys."""
    terms = {}
    for product_spec in file.products:
        product = product_spec.as_product(_EPOCH)
        for spec in product_spec.prices:
            price_id = price_ids[spec.lookup_key]
            resolved = resolve_price(spec.as_price(price_id, product.product_id, _EPOCH), product, file.config)
            plan = file.config.plans.get(resolved.billing_plan_code or "")
            terms[price_id] = Terms(price_id, spec.lookup_key, spec.interval is not None, resolved.billing_plan_code,
                                    plan.priority if plan else 0, resolved.gate_bundle, resolved.grants)
    return Catalog(terms, dict(file.config.grant_programs),
                   {code: bundle.gates for code, bundle in file.config.gate_bundles.items()})


# What holds at an instant ----------------------------------------------------------------------

def in_force(sub: Subscription, at: int) -> bool:
    """Effective at `at`: started, live status, and not past its end or its scheduled cancellation
    (the period end when it cancels then). A canceled subscription was live until it ended: the run
    cancels only subscriptions that were paid for."""
    live = sub.status in EFFECTIVE or (sub.status == "canceled" and sub.ended_at is not None)
    if not live or at < sub.start:
        return False
    ends = [sub.ended_at, sub.cancel_at, sub.period_end if sub.cancel_at_period_end else None]
    return all(end is None or at < end for end in ends)


def entitled(subscriptions: Iterable[Subscription], catalog: Catalog, at: int) -> Entitled:
    """Plans, gate bundle, gates and grant bindings of one account's subscriptions at `at`. The
    bundle is the one named by the highest-priority plan in force, then the later start, then the
    smaller subscription id."""
    plans: set[tuple[str, str]] = set()
    bindings: set[Binding] = set()
    candidates: list[tuple[int, int, str, str]] = []
    for sub in subscriptions:
        if not in_force(sub, at):
            continue
        for item in sub.items:
            terms = catalog.terms.get(item.price_id)
            if terms is None:
                continue
            if terms.plan:
                plans.add((sub.subscription_id, terms.plan))
                if terms.gate_bundle:
                    candidates.append((-terms.priority, -sub.start, sub.subscription_id, terms.gate_bundle))
            bindings.update(Binding(sub.subscription_id, item.price_id, g.grant_program_code,
                                    _scaled(g, item.quantity)) for g in terms.grants)
    bundle = min(candidates)[3] if candidates else ""
    return Entitled(frozenset(plans), bundle, frozenset(catalog.gates.get(bundle, ())), frozenset(bindings))


def _scaled(grant: GrantSpec, quantity: int) -> int:
    return grant.amount * quantity if grant.scale_by_quantity else grant.amount


# What is funded --------------------------------------------------------------------------------

def invoice_funding(invoices: Iterable[Invoice], catalog: Catalog) -> dict[Slot, int]:
    """Per period: the first paid line (in order of payment) that pays for it; under `difference`,
    the highest amount any paid line charged for in it. One-time programs: once per paid one-time
    line, or once per subscription and recurring price. Proration lines fund only a `difference`
    top-up that charges."""
    funded: dict[Slot, int] = {}
    for invoice in sorted((i for i in invoices if i.paid), key=lambda i: (i.paid_at, i.invoice_id)):
        for line in invoice.lines:
            terms = catalog.terms.get(line.price_id)
            if terms is None:
                continue
            for grant in terms.grants:
                program = catalog.programs.get(grant.grant_program_code)
                if program is not None:
                    _fund_line(funded, invoice, line, terms, grant, program)
    return funded


def _fund_line(funded: dict[Slot, int], invoice: Invoice, line: InvoiceLine, terms: Terms, grant: GrantSpec,
               program: GrantProgram) -> None:
    amount = _scaled(grant, line.quantity)
    if program.cadence is Cadence.ONE_TIME:
        if not line.proration:
            slot = (("subscription", invoice.subscription_id, program.code, 0) if terms.recurring
                    else ("invoice", invoice.invoice_id, program.code, 0))
            funded.setdefault(slot, amount)
        return
    if program.cadence is not Cadence.PER_PERIOD or not terms.recurring:
        return
    slot = ("period", invoice.subscription_id, program.code, line.period_end)
    if program.on_change is ChangePolicy.DIFFERENCE:
        if not line.proration or line.amount > 0:
            funded[slot] = max(funded.get(slot, 0), amount)
    elif not line.proration:
        funded.setdefault(slot, amount)


def checkout_funding(sessions: Iterable[Session], catalog: Catalog) -> dict[Slot, int]:
    """A paid one-time checkout funds each one_time grant of each of its lines, once."""
    funded: dict[Slot, int] = {}
    for session in sessions:
        if session.mode != "payment" or session.status != "complete" or session.payment_status not in PAID_SESSION:
            continue
        for line in session.lines:
            terms = catalog.terms.get(line.price_id)
            for grant in terms.grants if terms else ():
                program = catalog.programs.get(grant.grant_program_code)
                if program is not None and program.cadence is Cadence.ONE_TIME:
                    slot = ("checkout", session.session_id, program.code, 0)
                    funded[slot] = funded.get(slot, 0) + _scaled(grant, line.quantity)
    return funded


def purchase_state(session: Session) -> str:
    """A paid session's purchase is finalized, an expired one's expired; one still open waits."""
    if session.status == "complete" and session.payment_status in PAID_SESSION:
        return "finalized"
    return "expired" if session.status == "expired" else "pending"


# Per account -----------------------------------------------------------------------------------

def expected(state: ProviderState, catalog: Catalog, at: int) -> dict[str, Expected]:
    """Every account the provider knows of, with what it should hold at `at` (the provider's
    present) and everything its payments fund."""
    subscriptions = _by_account(state.subscriptions, lambda s: s.account_id)
    account_of = {s.subscription_id: s.account_id for s in state.subscriptions}
    invoices = _by_account(state.invoices, lambda i: account_of.get(i.subscription_id, ""))
    sessions = _by_account(state.sessions, lambda s: s.account_id)
    return {account: Expected(
        entitled=entitled(subscriptions.get(account, []), catalog, at),
        funding={**invoice_funding(invoices.get(account, []), catalog),
                 **checkout_funding(sessions.get(account, []), catalog)},
        purchases={s.purchase_id: purchase_state(s) for s in sessions.get(account, []) if s.purchase_id})
        for account in (subscriptions.keys() | sessions.keys()) - {""}}


def entitled_by_account(subscriptions: Iterable[Subscription], catalog: Catalog, at: int) -> dict[str, Entitled]:
    """What each account's subscriptions give it at `at`."""
    return {account: entitled(subs, catalog, at)
            for account, subs in _by_account(subscriptions, lambda s: s.account_id).items()}


def _by_account(values: Iterable[_V], account: Callable[[_V], str]) -> dict[str, list[_V]]:
    grouped: dict[str, list[_V]] = {}
    for value in values:
        grouped.setdefault(account(value), []).append(value)
    return grouped
