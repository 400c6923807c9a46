"""Write transactions, and what this replica learns the moment one commits.

Every committed change to an account is announced to every replica through PostgreSQL
(db/listener.py), but a replica does not wait for its own announcement: the accounts a write
transaction changes are collected while it runs and told to `Deps.committed` as soon as it
commits, so the replica's next read never answers from what it cached before its own write, even
while notifications lag or are lost. A transaction that rolls back tells nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar

from entitlement_service.db.pool import Conn
from entitlement_service.service.deps import Deps

# The accounts (with their new revision) changed by the write transaction the current task runs.
_changed: ContextVar[dict[str, int] | None] = ContextVar("changed_accounts", default=None)


@asynccontextmanager
async def write_transaction(deps: Deps) -> AsyncIterator[Conn]:
    changed: dict[str, int] = {}
    token = _changed.set(changed)
    try:
        async with deps.pool.acquire() as conn, conn.transaction():
            yield conn
    finally:
        _changed.reset(token)
    for account_id, revision in changed.items():
        deps.committed(account_id, revision)


def changed(accounts: Iterable[tuple[str, int]]) -> None:
    """Notes accounts the running write transaction changed (nothing outside one)."""
    pending = _changed.get()
    if pending is not None:
        pending.update(accounts)
