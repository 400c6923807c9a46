"""Reading an account's entitlements, now or as of any instant, with the reasons behind them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from catalog_rules.model import CatalogConfig
from entitlement_service.db import accounts, catalog, reads
from entitlement_service.db.pool import Conn
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.entitlements import GateDecision, bindings_at, decide_gates, effective_at, next_change
from entitlement_service.domain.records import IssuedGrantRecord, SubscriptionRecord
from entitlement_service.domain.timeline import ItemRow
from entitlement_service.domain.windows import Window
from entitlement_service.service.changes import Watchers
from entitlement_service.service.deps import Deps


@dataclass(frozen=True)
class SubscriptionView:
    subscription: SubscriptionRecord
    items: tuple[ItemRow, ...]


@dataclass(frozen=True)
class AccountRows:
    """Everything stored for an account, before choosing an instant."""

    account_id: str
    revision: int
    config: CatalogConfig
    assignments: tuple[PlacedAssignment, ...]
    bindings: tuple[PlacedBinding, ...]
    funding: tuple[IssuedGrantRecord, ...]
    subscriptions: tuple[SubscriptionView, ...]


@dataclass(frozen=True)
class EntitlementsView:
    account_id: str
    as_of: datetime
    revision: int
    config: CatalogConfig
    plans: tuple[PlacedAssignment, ...]
    bindings: tuple[PlacedBinding, ...]
    funding: tuple[IssuedGrantRecord, ...]
    decision: GateDecision
    subscriptions: tuple[SubscriptionView, ...]
    next_change: datetime | None

    def signature(self) -> tuple[object, ...]:
        """What a watcher sees change: revision aside, the plans, bindings and gates in force."""
        return (tuple((p.row.subscription_id, p.row.price_id, p.conflict_with) for p in self.plans),
                tuple((b.row.subscription_id, b.row.price_id, b.row.grant_program_code, b.row.quantity)
                      for b in self.bindings), self.decision.gate_bundle, self.decision.gates)


async def account_rows(conn: Conn, account_id: str) -> AccountRows:
    account = await accounts.get_account(conn, account_id)
    subscriptions = await reads.subscriptions_of(conn, account_id)
    items: dict[str, list[ItemRow]] = {}
    for item in await reads.subscription_items(conn, account_id, [s.subscription_id for s in subscriptions]):
        items.setdefault(item.subscription_id, []).append(item)
    return AccountRows(
        account_id=account_id,
        revision=account.revision if account else 0,
        config=await catalog.load_config(conn),
        assignments=tuple(await reads.assignments_of(conn, account_id)),
        bindings=tuple(await reads.bindings_of(conn, account_id)),
        funding=tuple(await reads.issued_grants(conn, account_id)),
        subscriptions=tuple(SubscriptionView(s, tuple(items.get(s.subscription_id, ()))) for s in subscriptions),
    )


def view_at(stored: AccountRows, as_of: datetime) -> EntitlementsView:
    plans = effective_at(stored.assignments, as_of)
    return EntitlementsView(
        account_id=stored.account_id, as_of=as_of, revision=stored.revision, config=stored.config,
        plans=tuple(plans), bindings=tuple(bindings_at(stored.bindings, as_of)),
        funding=tuple(f for f in stored.funding if f.issued_at <= as_of),
        decision=decide_gates(plans, stored.config.gate_bundles),
        subscriptions=stored.subscriptions,
        next_change=next_change([*stored.assignments, *stored.bindings], as_of),
    )


async def entitlements(deps: Deps, account_id: str, as_of: datetime | None) -> EntitlementsView:
    async with deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        stored = await account_rows(conn, account_id)
    return view_at(stored, as_of or deps.clock())


@dataclass(frozen=True)
class Explanation:
    kind: str
    assignment: PlacedAssignment | None
    binding: PlacedBinding | None
    effective: bool
    reason: str


def _window_text(window: Window) -> str:
    end = window.end.isoformat() if window.end else "open"
    return f"[{window.start.isoformat()}, {end})"


def _why(placed: PlacedAssignment | PlacedBinding, as_of: datetime) -> tuple[bool, str]:
    window = _window_text(placed.window)
    if not placed.window.contains(as_of):
        return False, f"window {window} does not contain as_of"
    if placed.conflict_with is not None:
        return False, (f"lost group {placed.row.subscription_group} to {placed.conflict_with} during {window} "
                       "(higher plan priority, then later start, then smaller subscription id wins)")
    return True, f"window {window} contains as_of"


def explain(stored: AccountRows, as_of: datetime) -> tuple[EntitlementsView, list[Explanation]]:
    """Every assignment and binding the account ever had, each with whether it holds at `as_of`
    and why."""
    found = [Explanation("plan_assignment", a, None, *_why(a, as_of)) for a in stored.assignments]
    found += [Explanation("grant_binding", None, b, *_why(b, as_of)) for b in stored.bindings]
    return view_at(stored, as_of), found


async def explain_account(deps: Deps, account_id: str, as_of: datetime | None) -> tuple[EntitlementsView,
                                                                                         list[Explanation]]:
    async with deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        stored = await account_rows(conn, account_id)
    return explain(stored, as_of or deps.clock())


# How many window boundaries ahead a watched account's gate schedule looks.
SCHEDULE_BOUNDARIES = 8
# The most accounts one stream may watch.
MAX_WATCHED_ACCOUNTS = 1000


@dataclass(frozen=True)
class GateSpan:
    """The gates in force from `start` until `end` (None: no later boundary known)."""

    start: datetime
    end: datetime | None
    gate_bundle: str | None
    gates: frozenset[str]


def gate_schedule(stored: AccountRows, now: EntitlementsView,
                  boundaries: int = SCHEDULE_BOUNDARIES) -> tuple[GateSpan, ...]:
    """The account's gates from `now.as_of` over its next `boundaries` window boundaries, each
    computed as GetEntitlements computes them at that instant; consecutive boundaries that leave
    the gates as they are make one span. The last span ends at the first boundary not looked at,
    or is open when there is none."""
    spans: list[GateSpan] = []
    view, start = now, now.as_of
    for _ in range(boundaries):
        if view.next_change is None:
            break
        after = view_at(stored, view.next_change)
        if (after.decision.gate_bundle, after.decision.gates) != (view.decision.gate_bundle, view.decision.gates):
            spans.append(GateSpan(start, after.as_of, view.decision.gate_bundle, view.decision.gates))
            start = after.as_of
        view = after
    spans.append(GateSpan(start, view.next_change, view.decision.gate_bundle, view.decision.gates))
    return tuple(spans)


@dataclass(frozen=True)
class AccountUpdate:
    """One watched account's entitlements now, with its gate schedule."""

    view: EntitlementsView
    schedule: tuple[GateSpan, ...]
    initial: bool


@dataclass(frozen=True)
class Heartbeat:
    """Every change notified before `at` has been sent on the stream before this."""

    at: datetime


WatchMessage = AccountUpdate | Heartbeat


async def _current(deps: Deps, account_id: str) -> tuple[EntitlementsView, tuple[GateSpan, ...]]:
    async with deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        stored = await account_rows(conn, account_id)
    view = view_at(stored, deps.clock())
    return view, gate_schedule(stored, view)


@dataclass
class _Held:
    """What a stream last sent about one account, and when it must look at it again."""

    revision: int | None
    signature: tuple[object, ...] | None = None
    schedule_end: datetime | None = None  # when the schedule the client holds runs out
    look_again: datetime | None = None


async def watch_accounts(deps: Deps, watchers: Watchers, account_ids: Sequence[str], known: Mapping[str, int],
                         heartbeat_s: float | None) -> AsyncIterator[WatchMessage]:
    """The accounts' entitlements now, then again after each change: a committed change anywhere
    (heard through the change notifications) or a window boundary passing.

    An account whose revision equals its `known` one gets no first message. With `heartbeat_s`, a
    heartbeat follows once every account is current, then whenever `heartbeat_s` has passed
    without one, and only while no account has a change pending and notifications are proven."""
    woken = asyncio.Event()
    held = {account_id: _Held(known.get(account_id)) for account_id in account_ids}
    async with contextlib.AsyncExitStack() as stack:
        watchers.streams += 1
        stack.callback(lambda: setattr(watchers, "streams", watchers.streams - 1))
        wakes = {a: await stack.enter_async_context(watchers.subscribe(a, woken)) for a in account_ids}

        async def read(account_id: str) -> tuple[str, EntitlementsView, tuple[GateSpan, ...]]:
            async with watchers.reading():
                return (account_id, *await _current(deps, account_id))

        due = list(account_ids)
        beat_at: float | None = None  # loop time the next heartbeat is due; None until every account is current
        loop = asyncio.get_running_loop()
        while True:
            if due:
                for account_id in due:
                    wakes[account_id].take()
                for account_id, view, schedule in await asyncio.gather(*(read(a) for a in due)):
                    state = held[account_id]
                    first = state.signature is None
                    sent_schedule_ran_out = state.schedule_end is not None and view.as_of >= state.schedule_end
                    if (view.revision, view.signature()) != (state.revision, state.signature) or (
                            sent_schedule_ran_out and not first):
                        if first and view.revision == state.revision:
                            # Resumed: the client's schedule is older than this one; it hears again
                            # at the next boundary, before its own can run out.
                            state.schedule_end = view.next_change
                        else:
                            yield AccountUpdate(view, schedule, first)
                            state.schedule_end = schedule[-1].end
                    state.revision, state.signature = view.revision, view.signature()
                    state.look_again = view.next_change  # a boundary: what is in force may change then
                if beat_at is None and heartbeat_s is not None:
                    beat_at = loop.time()  # every account is current: the first heartbeat is due now
            due = [a for a, wake in wakes.items() if wake.due]
            if due:
                continue
            now = deps.clock()
            due = [a for a, state in held.items() if state.look_again is not None and now >= state.look_again]
            if due:
                continue
            # A change to everything waiting for its turn: no heartbeat until it is read.
            turn_awaited = any(wake.pending for wake in wakes.values())
            if beat_at is not None and not turn_awaited and loop.time() >= beat_at and watchers.proven:
                yield Heartbeat(deps.clock())
                beat_at = loop.time() + (heartbeat_s or 0)
            woken.clear()
            if any(wake.due for wake in wakes.values()):
                continue
            waits = [(state.look_again - now).total_seconds() for state in held.values()
                     if state.look_again is not None]
            if beat_at is not None and not turn_awaited:
                waits.append(beat_at - loop.time() if watchers.proven else heartbeat_s or 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=max(min(waits), 0.0) if waits else None)
