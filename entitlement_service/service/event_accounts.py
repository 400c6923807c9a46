"""Provider events about accounts' customers: each event's account locked, created when new and
linked to the event's customer (handing it the events that waited for that customer), or the
event refused when the customer belongs to another account."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from entitlement_service.db import accounts
from entitlement_service.db.accounts import HeldAccount
from entitlement_service.db.pool import Conn
from entitlement_service.domain import event_policy as policy
from entitlement_service.domain.errors import Conflict
from entitlement_service.domain.provider import ProviderEvent
from entitlement_service.service.deps import Deps
from entitlement_service.service.rebuild import rebuild_account
from entitlement_service.service.transactions import write_transaction

log = structlog.get_logger("events")


class Rejected(Exception):
    """The event's data cannot be applied; it is kept with this reason."""


async def hold(conn: Conn, wanted: Sequence[tuple[str, str | None]]) -> dict[str, HeldAccount]:
    """`accounts.hold_accounts` with the event policy's rule for which rejected events wait for a
    customer to be linked."""
    return await accounts.hold_accounts(conn, wanted, policy.UNKNOWN_ACCOUNT, policy.ACCOUNT_EVENT_TYPES)


async def hold_event_accounts(conn: Conn, todo: Sequence[tuple[ProviderEvent, str]]
                              ) -> tuple[set[str], dict[str, str], int]:
    """Locks the accounts (creating new ones) and links each unlinked one to its event's provider
    customer; events that waited for that customer join the account's history. Returns the
    accounts created now that took no waiting events (they hold no rows yet), the reason each
    account whose event's customer is linked to another account is refused, and the catalog
    version read with the lock."""
    empty = set()
    refused = {}
    held_accounts = await hold(conn, [(a, e.provider_customer_id) for e, a in todo])
    customers = {a: e.provider_customer_id for e, a in todo}
    for account_id, held in held_accounts.items():
        if held.customer_holder is not None:
            refused[account_id] = policy.linked_elsewhere(account_id, customers[account_id], held.customer_holder)
        elif held.adopted:
            log.info("events_reapplied", account_id=account_id, count=held.adopted)
        elif held.created:
            empty.add(account_id)
    # An account the refused event alone would have created is not kept.
    await accounts.delete_accounts(conn, [a for a in refused if held_accounts[a].created])
    return empty, refused, next(iter(held_accounts.values())).catalog_version


async def resolve_account(conn: Conn, event: ProviderEvent, hint: str | None = None) -> str:
    """The event's account (`policy.account_of`), locked and linked to the event's customer."""
    customer = event.provider_customer_id
    linked = await accounts.account_for_customer(conn, customer) if customer and not (event.account_id or hint) \
        else None
    account = policy.account_of(event, linked, hint)
    if not account:
        raise Rejected(policy.UNKNOWN_ACCOUNT)
    _, refused, _ = await hold_event_accounts(conn, [(event, account)])
    if account in refused:
        raise Rejected(refused[account])
    return account


async def link_and_apply(deps: Deps, account_id: str, customer_id: str) -> int:
    """Links an account to its provider customer; returns how many waiting events now apply."""
    async with write_transaction(deps) as conn:
        held = (await hold(conn, [(account_id, customer_id)]))[account_id]
        if held.customer_holder is not None:
            raise Conflict(f"customer {customer_id} is linked to account {held.customer_holder}")
        if held.account.provider_customer_id not in (None, customer_id):
            raise Conflict(f"account {account_id} is linked to customer {held.account.provider_customer_id}")
        if held.adopted:
            log.info("events_reapplied", account_id=account_id, count=held.adopted)
            await rebuild_account(conn, deps, account_id, "provider_event", f"link:{customer_id}")
        return held.adopted
