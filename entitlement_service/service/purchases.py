"""Purchase sessions and account links: register, the browser's return, reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from catalog_rules.model import CatalogConfig
from entitlement_service.db import accounts, purchases
from entitlement_service.db import catalog as catalog_db
from entitlement_service.db.pool import Conn
from entitlement_service.domain.errors import CheckoutInProgress, Conflict, InvalidRequest, NotFound
from entitlement_service.domain.model import Mode, PurchaseState
from entitlement_service.domain.open_purchases import Decision, OpenCheckout, guarded, open_checkout, selection_of
from entitlement_service.domain.purchases import next_state
from entitlement_service.domain.records import PurchaseRecord, TransitionRecord
from entitlement_service.service.deps import Deps
from entitlement_service.service.event_accounts import hold
from entitlement_service.service.rebuild import rebuild_account
from entitlement_service.service.transactions import write_transaction


@dataclass(frozen=True)
class PurchaseView:
    purchase: PurchaseRecord
    transitions: tuple[TransitionRecord, ...]


@dataclass(frozen=True)
class NewPurchase:
    purchase_id: str
    account_id: str
    checkout_session_id: str
    items: tuple[tuple[str, int], ...]
    subscription_group: str | None
    mode: Mode
    success_url: str
    cancel_url: str
    expires_at: datetime
    provider_customer_id: str | None
    checkout_url: str | None = None

    def pending(self, now: datetime) -> PurchaseRecord:
        """The purchase as it is first recorded: pending, waiting for the provider until its
        checkout session expires."""
        return PurchaseRecord(
            self.purchase_id, self.account_id, PurchaseState.PENDING, self.mode, self.items, self.subscription_group,
            self.checkout_session_id, None, self.provider_customer_id, self.success_url, self.cancel_url, None,
            created_at=now, returned_at=None, finalized_at=None, expired_at=None, failed_at=None, conflict_at=None,
            expires_at=self.expires_at, timeout_at=self.expires_at, checkout_url=self.checkout_url)


@dataclass(frozen=True)
class Registered:
    view: PurchaseView
    reused: bool  # an open purchase of the same selection, answered instead of recording a new one


async def view_of(conn: Conn, purchase_id: str) -> PurchaseView:
    found = await purchases.get_purchase(conn, purchase_id=purchase_id)
    if found is None:
        raise NotFound(f"no purchase {purchase_id}")
    return PurchaseView(found, tuple(await purchases.transitions(conn, purchase_id)))


async def open_checkout_in(conn: Conn, config: CatalogConfig, account_id: str, purchase_id: str,
                           items: tuple[tuple[str, int], ...], mode: Mode | None, subscription_group: str | None,
                           now: datetime) -> OpenCheckout:
    """What an open purchase of the account in the selection's group makes of a new checkout
    (domain/open_purchases.py); selections are compared by resolved price id and quantity."""
    if mode is None or not guarded(config, mode, subscription_group):
        return OpenCheckout(Decision.NEW)
    candidates = await purchases.purchases_in_group(conn, account_id, subscription_group or "")
    if not candidates:
        return OpenCheckout(Decision.NEW)
    refs = sorted({ref for p in candidates for ref, _ in p.items} | {ref for ref, _ in items})
    price_ids = {ref: found.price_id for ref, found in (await catalog_db.find_prices(conn, refs)).items()}
    selections = {p.purchase_id: selection_of(p.items, price_ids) for p in candidates}
    return open_checkout(purchase_id, selection_of(items, price_ids), candidates, selections, now)


def refusal(account_id: str, subscription_group: str | None, open_purchase_id: str) -> CheckoutInProgress:
    return CheckoutInProgress(f"account {account_id} has purchase {open_purchase_id} open in group "
                              f"{subscription_group} for another selection; pay or cancel it, or wait for its "
                              "checkout session to expire", open_purchase_id)


async def register_purchase(deps: Deps, new: NewPurchase) -> Registered:
    """Records a purchase as pending; registering the same purchase id again returns it unchanged.
    Under the account's lock, so two checkouts at the same instant are decided one after the
    other: in a non-stackable group where the account has another purchase open, the same
    selection answers that purchase (nothing is recorded) and another selection is refused
    (`CheckoutInProgress`, naming it)."""
    now = deps.clock()
    async with write_transaction(deps) as conn:
        held = (await hold(conn, [(new.account_id, new.provider_customer_id or None)]))[new.account_id]
        if held.customer_holder is not None:
            raise Conflict(f"customer {new.provider_customer_id} is linked to account {held.customer_holder}, "
                           f"not {new.account_id}")
        if held.adopted:  # provider events that waited for this customer now apply
            await rebuild_account(conn, deps, new.account_id, "provider_event", f"link:{new.provider_customer_id}")
        if await purchases.get_purchase(conn, purchase_id=new.purchase_id) is None:
            config = (await deps.catalog.view(conn)).config
            decided = await open_checkout_in(conn, config, new.account_id, new.purchase_id, new.items, new.mode,
                                             new.subscription_group, now)
            if decided.open_purchase is not None and decided.decision is Decision.REUSE:
                return Registered(await view_of(conn, decided.open_purchase.purchase_id), True)
            if decided.open_purchase is not None:
                raise refusal(new.account_id, new.subscription_group, decided.open_purchase.purchase_id)
        if await purchases.insert_purchase(conn, new.pending(now)):
            await purchases.record_transitions(conn, [TransitionRecord(
                new.purchase_id, None, PurchaseState.PENDING, now, None, "checkout session created")])
        view = await view_of(conn, new.purchase_id)
    if view.purchase.checkout_session_id != new.checkout_session_id or view.purchase.account_id != new.account_id:
        raise Conflict(f"purchase {new.purchase_id} is already registered for another session or account")
    return Registered(view, False)


async def mark_returned(deps: Deps, purchase_id: str, checkout_session_id: str | None) -> PurchaseView:
    """Records that the browser came back. It proves nothing about payment, so it never finalizes;
    it starts the clock after which a waiting browser is told the purchase is still processing."""
    now = deps.clock()
    async with write_transaction(deps) as conn:
        found = await purchases.get_purchase(conn, purchase_id=purchase_id, lock=True)
        if found is None:
            raise NotFound(f"no purchase {purchase_id}")
        if checkout_session_id and checkout_session_id != found.checkout_session_id:
            raise InvalidRequest(f"checkout_session_id {checkout_session_id} does not belong to purchase {purchase_id}")
        if next_state(found.state, PurchaseState.RETURNED) is not None:
            await purchases.record_transitions(conn, [TransitionRecord(
                purchase_id, found.state, PurchaseState.RETURNED, now, None, "browser returned from the provider")])
            await purchases.set_purchase_timeout(conn, purchase_id, now + deps.return_timeout)
        return await view_of(conn, purchase_id)


async def get_purchase(deps: Deps, purchase_id: str | None, checkout_session_id: str | None) -> PurchaseView:
    async with deps.pool.acquire() as conn:
        if purchase_id:
            return await view_of(conn, purchase_id)
        found = await purchases.get_purchase(conn, checkout_session_id=checkout_session_id)
        if found is None:
            raise NotFound(f"no purchase for checkout session {checkout_session_id}")
        return await view_of(conn, found.purchase_id)


async def get_account(deps: Deps, account_id: str | None, customer_id: str | None) -> tuple[str, str | None]:
    async with deps.pool.acquire() as conn:
        if account_id:
            found = await accounts.get_account(conn, account_id)
            return account_id, found.provider_customer_id if found else None
        linked = await accounts.account_for_customer(conn, customer_id or "")
        if linked is None:
            raise NotFound(f"no account linked to provider customer {customer_id}")
        return linked, customer_id
