"""Write transactions, and what this replica learns the moment one commits.

Every committed change to an account is announced to every replica through PostgreSQL
(db/listener.py), but a replica does not wait for its own announcement: the accounts a write
transaction changes are collected while it runs and told to `Deps.committed` as soon as it
commits, so the replica's next read never answers from what it cached before its own write, even
while notifications lag or are lost. A transaction that rolls back tells nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar

from entitlement_service.db.pool import Conn
from entitlement_service.service.deps import Deps

# The accounts (with their new revision) changed by the write transaction the current task runs.
_changed: ContextVar[dict[str, int] | None] = ContextVar("changed_accounts", default=None)
# What the running write transaction does once it has committed (counting what it opened, say).
_after_commit: ContextVar[list[Callable[[], object]] | None] = ContextVar("after_commit", default=None)


@asynccontextmanager
async def write_transaction(deps: Deps) -> AsyncIterator[Conn]:
    changed: dict[str, int] = {}
    then: list[Callable[[], object]] = []
    token, then_token = _changed.set(changed), _after_commit.set(then)
    try:
        async with deps.pool.acquire() as conn, conn.transaction():
            yield conn
    finally:
        _changed.reset(token)
        _after_commit.reset(then_token)
    for account_id, revision in changed.items():
        deps.committed(account_id, revision)
    for action in then:
        action()


def after_commit(action: Callable[[], object]) -> None:
    """Runs `action` once the running write transaction commits (never when it rolls back; at
    once outside one)."""
    pending = _after_commit.get()
    if pending is None:
        action()
    else:
        pending.append(action)


def changed(accounts: Iterable[tuple[str, int]]) -> None:
    """Notes accounts the running write transaction changed (nothing outside one)."""
    pending = _changed.get()
    if pending is not None:
        pending.update(accounts)
