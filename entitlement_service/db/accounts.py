"""Accounts: created on first use, locked for every change to their state, linked once to their
provider customer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from entitlement_service.db.pool import Conn
from entitlement_service.domain.records import AccountRecord

ACCOUNT_COLUMNS = "account_id, provider_customer_id, revision"

LOCK_ACCOUNTS = f"""
INSERT INTO accounts AS a (account_id) SELECT DISTINCT unnest($1::text[]) ORDER BY 1
ON CONFLICT (account_id) DO UPDATE SET account_id = excluded.account_id
RETURNING {", ".join("a." + c for c in ACCOUNT_COLUMNS.split(", "))},
    a.xmax = 0 AS created,  -- an inserted row has no xmax; one updated on conflict has ours
    (SELECT version FROM catalog_version) AS catalog_version"""

# Runs on rows this transaction holds locked, so `provider_customer_id IS NULL` is current. A
# customer another account holds is not linked; that account is returned as `holder`. (One that
# another transaction links meanwhile still meets the unique constraint.) The events that waited
# for the customer are the rejected ones whose reason ($3) says their account was unknown and
# whose type ($4, patterns) is one that belongs to an account: they join the account's history,
# not summarized (the account's next derivation reads it whole and summarizes them).
LINK_ACCOUNTS = """
WITH wanted AS (
    SELECT l.account_id, l.customer_id,
        (SELECT b.account_id FROM accounts b
         WHERE b.provider_customer_id = l.customer_id AND b.account_id <> l.account_id) AS holder
    FROM unnest($1::text[], $2::text[]) AS l(account_id, customer_id)
), linked AS (
    UPDATE accounts a SET provider_customer_id = w.customer_id, updated_at = now()
    FROM wanted w
    WHERE a.account_id = w.account_id AND a.provider_customer_id IS NULL AND w.holder IS NULL
    RETURNING a.account_id, a.provider_customer_id
), adopted AS (
    UPDATE provider_events e SET account_id = l.account_id, outcome = 'applied',
        reason = 'applied once its customer was linked to an account'
    FROM linked l
    WHERE e.provider_customer_id = l.provider_customer_id AND e.outcome = 'rejected'
      AND e.reason = $3 AND e.type LIKE ANY($4::text[])
    RETURNING e.account_id, e.provider_event_id, e.subscription_id, e.type, e.created, e.snapshot
), joined AS (
    INSERT INTO account_history (account_id, provider_event_id, subscription_id, invoice, provider_at, summarized,
                                 snapshot)
    SELECT account_id, provider_event_id, coalesce(subscription_id, ''), type = 'invoice.paid', created, false,
        snapshot
    FROM adopted WHERE snapshot IS NOT NULL
)
SELECT w.account_id, w.holder, (SELECT count(*) FROM adopted d WHERE d.account_id = w.account_id) AS adopted
FROM wanted w"""


@dataclass(frozen=True, slots=True)
class HeldAccount:
    """An account whose row this transaction holds locked."""

    account: AccountRecord
    created: bool  # the account is new
    adopted: int  # events that waited for its customer and now belong to it
    catalog_version: int  # read with the lock, so a batch needs no statement of its own for it
    customer_holder: str | None = None  # the other account its customer is linked to (so not linked here)


async def hold_accounts(conn: Conn, wanted: Sequence[tuple[str, str | None]], waiting_reason: str,
                        waiting_types: Sequence[str]) -> dict[str, HeldAccount]:
    """For each (account, provider customer or None): creates the account if new and holds its
    row lock to the end of the transaction (every change to one account's state is serialized
    here, which covers each of its subscriptions and each (account, group)), locking in account
    id order so that two transactions holding overlapping sets queue instead of deadlocking; then
    links each unlinked account to its customer and hands it the events that waited for that
    customer (rejected with `waiting_reason`, of a type matching a `waiting_types` pattern). A
    customer linked to another account is not linked (`HeldAccount.customer_holder` names that
    account); one linked by a concurrent transaction is refused by the unique constraint.
    (Created and linked in one statement, two transactions creating the same account with the
    same customer would collide on that constraint rather than queue.)"""
    locked = {r["account_id"]: r for r in await conn.fetch(LOCK_ACCOUNTS, [a for a, _ in wanted])}
    links = [(a, c) for a, c in wanted if c and locked[a]["provider_customer_id"] is None]
    found = {r["account_id"]: r for r in await conn.fetch(
        LINK_ACCOUNTS, [a for a, _ in links], [c for _, c in links], waiting_reason, list(waiting_types))
    } if links else {}
    held = {}
    for account_id, row in locked.items():
        link = found.get(account_id)
        account = AccountRecord(row["account_id"], row["provider_customer_id"], row["revision"])
        held[account_id] = HeldAccount(account, row["created"], link["adopted"] if link else 0,
                                       row["catalog_version"], link["holder"] if link else None)
    return held


async def delete_accounts(conn: Conn, account_ids: Sequence[str]) -> None:
    """Removes accounts this transaction created and holds nothing for."""
    if account_ids:
        await conn.execute("DELETE FROM accounts WHERE account_id = ANY($1)", list(account_ids))


async def get_account(conn: Conn, account_id: str) -> AccountRecord | None:
    row = await conn.fetchrow(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1", account_id)
    return AccountRecord(*row) if row else None


async def account_for_customer(conn: Conn, customer_id: str) -> str | None:
    return await conn.fetchval("SELECT account_id FROM accounts WHERE provider_customer_id = $1", customer_id)


async def accounts_for_customers(conn: Conn, customer_ids: Sequence[str]) -> dict[str, str]:
    found = await conn.fetch("SELECT provider_customer_id, account_id FROM accounts "
                             "WHERE provider_customer_id = ANY($1)", list(customer_ids))
    return {r["provider_customer_id"]: r["account_id"] for r in found}


async def accounts_with_customers(conn: Conn, account_id: str | None, after: str = "", limit: int | None = None
                                  ) -> list[tuple[str, str]]:
    """(account, provider customer) for the linked accounts after `after` by account id, at most
    `limit` of them (read along the primary key), or for the one asked for."""
    found = await conn.fetch(
        "SELECT account_id, provider_customer_id FROM accounts WHERE provider_customer_id IS NOT NULL "
        "AND ($1::text IS NULL OR account_id = $1) AND account_id > $2 ORDER BY account_id LIMIT $3",
        account_id, after, limit)
    return [(r["account_id"], r["provider_customer_id"]) for r in found]
