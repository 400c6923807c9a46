"""Change notifications over PostgreSQL: every committed change to an account's entitlements is
announced on one channel (delivered on commit), and each replica holds one LISTEN connection
that hands what it hears to its listener.

A LISTEN connection can fail silently: a NAT or conntrack entry that expires, a failover to a new
address or a pooler that stops relaying leave it open and quiet. So the replica proves it: every
`heartbeat_s` it sends a heartbeat of its own through its pool (the path its writes take) and
expects to hear it back on the LISTEN connection within `deadline_s`. Until the first heartbeat
comes back, and from the moment one does not, the replica's notifications are unproven: its
listener hears "everything changed", it is told `proven(False)` (it must not answer from what it
cached), and the connection is dropped and made again. TCP keepalives on the connection keep idle
network paths from expiring in the first place."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import asyncpg
import structlog

from entitlement_service.db.pool import DATABASE_ERRORS, Conn, PoolHandle, backoff_delays

log = structlog.get_logger("changes")

CHANGES_CHANNEL = "entitlements_changed"
HEARTBEAT_CHANNEL = "entitlements_heartbeat"
# Payload "<revision>:<account_id>"; revision 0 with account "*" means "everything may have changed".
EVERYTHING = "*"
Listener = Callable[[str, int], None]
# The server probes an idle connection after 30 s, every 10 s, and gives up after 3 unanswered probes.
KEEPALIVES = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}


def parse(payload: str) -> tuple[str, int]:
    revision, _, account_id = payload.partition(":")
    return account_id, int(revision) if revision.isascii() and revision.isdigit() else 0


async def notify_everything(conn: Conn) -> None:
    """After a catalog change every replica forgets what it cached (delivered on commit)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANGES_CHANNEL, f"0:{EVERYTHING}")


class Heartbeats:
    """This replica's heartbeats: numbered, tagged with a token no other replica has."""

    def __init__(self) -> None:
        self._token = secrets.token_hex(8)
        self._sent = 0
        self._heard = 0
        self._arrived = asyncio.Event()

    def on_notify(self, _: object, __: int, ___: str, payload: str) -> None:
        token, _, number = payload.partition(":")
        if token == self._token and number.isascii() and number.isdigit():
            self._heard = max(self._heard, int(number))
            self._arrived.set()

    async def round_trip(self, pool: PoolHandle, deadline_s: float) -> bool:
        """Sends one heartbeat through the pool; True once it is heard within `deadline_s`."""
        self._sent += 1
        try:
            async with asyncio.timeout(deadline_s):
                async with pool.acquire() as conn:
                    await conn.execute("SELECT pg_notify($1, $2)", HEARTBEAT_CHANNEL, f"{self._token}:{self._sent}")
                while self._heard < self._sent:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            return False
        except DATABASE_ERRORS as exc:
            log.warning("heartbeat_not_sent", error=str(exc))
            return False
        return True


async def listen(url: str, pool: PoolHandle, listener: Listener, proven: Callable[[bool], None], *,
                 heartbeat_s: float, deadline_s: float) -> None:
    """Holds a LISTEN connection for the life of the process, proving it with heartbeats; makes it
    again, with backoff, when it drops or a heartbeat does not come back."""
    next_delay = backoff_delays()
    heartbeats = Heartbeats()

    def on_notify(_: object, __: int, ___: str, payload: str) -> None:
        listener(*parse(payload))

    while True:
        try:
            conn = await asyncpg.connect(url, timeout=deadline_s, server_settings=KEEPALIVES)
        except (*DATABASE_ERRORS, TimeoutError) as exc:
            log.warning("listen_connect_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(next_delay())
            continue
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _, signal=lost: signal.set())
        try:
            async with asyncio.timeout(deadline_s):  # a silent path swallows the LISTEN as well
                await conn.add_listener(CHANGES_CHANNEL, on_notify)
                await conn.add_listener(HEARTBEAT_CHANNEL, heartbeats.on_notify)
            if await heartbeats.round_trip(pool, deadline_s):
                listener(EVERYTHING, 0)  # whatever was announced before this connection listened
                proven(True)
                next_delay = backoff_delays()
                while not await _lost_within(lost, heartbeat_s) and await heartbeats.round_trip(pool, deadline_s):
                    pass
            log.warning("change_notifications_unproven", connection_lost=lost.is_set())
        except (*DATABASE_ERRORS, TimeoutError) as exc:
            log.warning("listen_failed", error=str(exc) or type(exc).__name__)
        finally:
            proven(False)
            listener(EVERYTHING, 0)
            conn.terminate()  # not close(): a silent connection would never answer the goodbye
        await asyncio.sleep(next_delay())


async def _lost_within(lost: asyncio.Event, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await lost.wait()
    except TimeoutError:
        return False
    return True
