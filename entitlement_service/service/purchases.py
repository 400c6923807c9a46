"""Purchase sessions and account links: register, the browser's return, reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from entitlement_service.db import queries as q
from entitlement_service.domain.errors import Conflict, InvalidRequest, NotFound
from entitlement_service.domain.model import Mode, PurchaseState
from entitlement_service.domain.purchases import next_state
from entitlement_service.service.deps import Deps
from entitlement_service.service.rebuild import rebuild_account


@dataclass(frozen=True)
class Transition:
    from_state: str | None
    to_state: str
    at: datetime
    provider_event_id: str | None
    reason: str


@dataclass(frozen=True)
class PurchaseView:
    purchase_id: str
    account_id: str
    state: PurchaseState
    mode: Mode
    items: tuple[tuple[str, int], ...]
    subscription_group: str | None
    checkout_session_id: str
    subscription_id: str | None
    success_url: str
    cancel_url: str
    reason: str | None
    at: dict[str, datetime | None]
    expires_at: datetime
    timeout_at: datetime
    transitions: tuple[Transition, ...]


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


async def view_of(conn: q.Conn, purchase_id: str) -> PurchaseView:
    row = await q.get_purchase(conn, purchase_id=purchase_id)
    if row is None:
        raise NotFound(f"no purchase {purchase_id}")
    steps = [Transition(t["from_state"], t["to_state"], t["at"], t["provider_event_id"], t["reason"])
             for t in await q.transitions(conn, purchase_id)]
    states = ("created", "returned", "finalized", "expired", "failed", "conflict")
    return PurchaseView(
        row["purchase_id"], row["account_id"], PurchaseState(row["state"]), Mode(row["mode"]),
        tuple((i["price"], i["quantity"]) for i in row["items"]), row["subscription_group"],
        row["checkout_session_id"], row["subscription_id"], row["success_url"], row["cancel_url"], row["reason"],
        {name: row[f"{name}_at"] for name in states}, row["expires_at"], row["timeout_at"], tuple(steps),
    )


async def register_purchase(deps: Deps, new: NewPurchase) -> PurchaseView:
    """Records a purchase as pending; registering the same purchase id again returns it unchanged."""
    now = deps.clock()
    async with deps.pool.acquire() as conn, conn.transaction():
        held = (await q.hold_accounts(conn, [(new.account_id, new.provider_customer_id or None)]))[new.account_id]
        if held.customer_holder is not None:
            raise Conflict(f"customer {new.provider_customer_id} is linked to account {held.customer_holder}, "
                           f"not {new.account_id}")
        if held.adopted:  # provider events that waited for this customer now apply
            await rebuild_account(conn, deps, new.account_id, "provider_event", f"link:{new.provider_customer_id}")
        inserted = await q.insert_purchase(conn, (
            new.purchase_id, new.account_id, new.mode.value, [{"price": p, "quantity": n} for p, n in new.items],
            new.subscription_group, new.checkout_session_id, new.provider_customer_id, new.success_url,
            new.cancel_url, new.expires_at, new.expires_at, now))
        if inserted:
            await q.record_transition(conn, new.purchase_id, None, PurchaseState.PENDING.value, now, None,
                                      "checkout session created")
        view = await view_of(conn, new.purchase_id)
    if view.checkout_session_id != new.checkout_session_id or view.account_id != new.account_id:
        raise Conflict(f"purchase {new.purchase_id} is already registered for another session or account")
    return view


async def mark_returned(deps: Deps, purchase_id: str, checkout_session_id: str | None) -> PurchaseView:
    """Records that the browser came back. It proves nothing about payment, so it never finalizes;
    it starts the clock after which a waiting browser is told the purchase is still processing."""
    now = deps.clock()
    async with deps.pool.acquire() as conn, conn.transaction():
        row = await q.get_purchase(conn, purchase_id=purchase_id, lock=True)
        if row is None:
            raise NotFound(f"no purchase {purchase_id}")
        if checkout_session_id and checkout_session_id != row["checkout_session_id"]:
            raise InvalidRequest(f"checkout_session_id {checkout_session_id} does not belong to purchase {purchase_id}")
        if next_state(PurchaseState(row["state"]), PurchaseState.RETURNED) is not None:
            await q.record_transition(conn, purchase_id, row["state"], PurchaseState.RETURNED.value, now, None,
                                      "browser returned from the provider")
            await q.set_purchase_timeout(conn, purchase_id, now + deps.return_timeout)
        return await view_of(conn, purchase_id)


async def get_purchase(deps: Deps, purchase_id: str | None, checkout_session_id: str | None) -> PurchaseView:
    async with deps.pool.acquire() as conn:
        if purchase_id:
            return await view_of(conn, purchase_id)
        row = await q.get_purchase(conn, checkout_session_id=checkout_session_id)
        if row is None:
            raise NotFound(f"no purchase for checkout session {checkout_session_id}")
        return await view_of(conn, row["purchase_id"])


async def get_account(deps: Deps, account_id: str | None, customer_id: str | None) -> tuple[str, str | None]:
    async with deps.pool.acquire() as conn:
        if account_id:
            row = await q.get_account(conn, account_id)
            return account_id, row["provider_customer_id"] if row else None
        found = await q.account_for_customer(conn, customer_id or "")
        if found is None:
            raise NotFound(f"no account linked to provider customer {customer_id}")
        return found, customer_id

