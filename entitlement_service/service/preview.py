"""PreviewPurchase: what a purchase or a change to one of the account's subscriptions would do,
read in one read-only snapshot of the database and derived in memory (domain/preview.py).
Nothing is written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from entitlement_service.db import accounts
from entitlement_service.db import catalog as catalog_db
from entitlement_service.db.history import load_accounts
from entitlement_service.domain import preview as rules
from entitlement_service.domain.errors import Conflict, InvalidRequest, NotFound
from entitlement_service.domain.purchasability import Problem, validate_selection
from entitlement_service.domain.timeline import ItemRow
from entitlement_service.service.catalog import owned_groups
from entitlement_service.service.deps import Deps
from entitlement_service.service.reads import AccountRows, EntitlementsView, SubscriptionView, account_rows, view_at

Items = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Change:
    """A change to one subscription: exactly one of new `items`, `cancel_at_period_end`, `cancel_now`."""

    subscription_id: str
    items: Items | None = None
    cancel_at_period_end: bool = False
    cancel_now: bool = False


@dataclass(frozen=True)
class PreviewRequest:
    """A new purchase of `items`, or a `change`; exactly one."""

    account_id: str
    items: Items | None = None
    change: Change | None = None
    as_of: datetime | None = None


@dataclass(frozen=True)
class Preview:
    entitlements: EntitlementsView
    problems: tuple[Problem, ...]
    changes: rules.Changes


def _standing(view: EntitlementsView) -> rules.Standing:
    return rules.Standing(view.plans, view.bindings, view.funding, view.decision.gate_bundle, view.decision.gates)


async def preview_purchase(deps: Deps, request: PreviewRequest) -> Preview:
    """The entitlements the account would have at `as_of` (default now) with the purchase or change
    made then, the problems of its items, and what differs from the entitlements held then."""
    account_id, change = request.account_id, request.change
    as_of = request.as_of or deps.clock()
    items = request.items if change is None else change.items or ()
    async with deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        current = await account_rows(conn, account_id)
        stored, heads = await load_accounts(conn, {account_id: None}, [change.subscription_id] if change else [])
        cached = await deps.catalog.view(conn)
        found = await catalog_db.find_prices(conn, [ref for ref, _ in items or ()])
        owned = await owned_groups(conn, account_id, as_of)
        account = await accounts.get_account(conn, account_id)
    history = [deps.decode_event(snapshot).object for snapshot in stored[account_id].history]
    config = cached.config
    problems: tuple[Problem, ...] = ()
    if change is None:
        validation = validate_selection(items or (), found, config, owned)
        chosen = [(r, q) for _, r, q in validation.items if r.valid and q >= 1]
        customer_id = account.provider_customer_id if account and account.provider_customer_id else ""
        hypothesis = rules.new_purchase(chosen, customer_id, as_of)
        problems = validation.problems
    else:
        head = heads.get(change.subscription_id)
        if head is None or head.account_id != account_id:
            raise NotFound(f"no subscription {change.subscription_id} for account {account_id}")
        state = rules.current_state(history, cached.book, config)
        latest = next(d.latest for d in state.subscriptions if d.latest.subscription_id == change.subscription_id)
        if latest.status in rules.ENDED or latest.ended_at is not None:
            raise Conflict(f"subscription {change.subscription_id} has ended ({latest.status.value})")
        if change.items is not None:
            others = {group: tuple(s for s in subs if s != change.subscription_id) for group, subs in owned.items()}
            validation = validate_selection(change.items, found, config, {g: s for g, s in others.items() if s})
            for index, (ref, resolved, _) in enumerate(validation.items):
                if not resolved.price.recurring:
                    raise InvalidRequest(f"change.items[{index}].price {ref!r} is a one-time price; a subscription "
                                         "holds recurring prices only")
            problems = validation.problems
            chosen = [(r, q) for _, r, q in validation.items if r.valid and q >= 1]
            hypothesis = rules.new_items(latest, chosen, cached.book, as_of) if chosen else rules.Hypothesis()
        elif change.cancel_at_period_end:
            hypothesis = rules.cancel_at_period_end(latest, as_of)
        else:
            hypothesis = rules.cancel_now(latest, as_of)
    previewed = rules.derive(history, hypothesis, cached.book, config, stored[account_id].issued, account_id)
    items_of: dict[str, list[ItemRow]] = {}
    for item in previewed.items:
        items_of.setdefault(item.subscription_id, []).append(item)
    after_rows = AccountRows(
        account_id=account_id, revision=current.revision, config=current.config,
        assignments=previewed.assignments, bindings=previewed.bindings, funding=previewed.funding,
        subscriptions=tuple(SubscriptionView(s, tuple(items_of.get(s.subscription_id, ())))
                            for s in previewed.subscriptions),
    )
    before, after = view_at(current, as_of), view_at(after_rows, as_of)
    return Preview(after, problems, rules.differences(_standing(before), _standing(after)))
