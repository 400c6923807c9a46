"""Change notifications over PostgreSQL: every committed change to an account's entitlements is
announced on one channel (delivered on commit), and each replica holds one LISTEN connection
that hands what it hears to its listeners."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from entitlement_service.db.pool import Conn, backoff_delays

log = structlog.get_logger("changes")

CHANGES_CHANNEL = "entitlements_changed"
# Payload "<revision>:<account_id>"; revision 0 with account "*" means "everything may have changed".
EVERYTHING = "*"
Listener = Callable[[str, int], None]


def parse(payload: str) -> tuple[str, int]:
    revision, _, account_id = payload.partition(":")
    return account_id, int(revision) if revision.isdigit() else 0


async def notify_everything(conn: Conn) -> None:
    """After a catalog change every replica forgets what it cached (delivered on commit)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANGES_CHANNEL, f"0:{EVERYTHING}")


async def listen(url: str, listeners: list[Listener], ready: asyncio.Event | None = None) -> None:
    """Holds a LISTEN connection for the life of the process. When it drops, every listener hears
    "everything changed" (notifications may have been missed) and it reconnects with backoff."""
    next_delay = backoff_delays()

    def on_notify(_: object, __: int, ___: str, payload: str) -> None:
        account_id, revision = parse(payload)
        for listener in listeners:
            listener(account_id, revision)

    while True:
        try:
            conn = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("listen_connect_failed", error=str(exc))
            await asyncio.sleep(next_delay())
            continue
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _, signal=lost: signal.set())
        try:
            await conn.add_listener(CHANGES_CHANNEL, on_notify)
            for listener in listeners:
                listener(EVERYTHING, 0)
            if ready is not None:
                ready.set()
            next_delay = backoff_delays()
            await lost.wait()
            log.warning("listen_connection_lost")
        finally:
            if not conn.is_closed():
                await conn.close()
