"""Applying rejected provider events again once what rejected them is fixed (ReplayEvents)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from entitlement_service.db import events as recorded
from entitlement_service.domain.provider import UNREADABLE, ProviderEvent
from entitlement_service.domain.records import EventResult, RecordedEvent, RejectedEvent
from entitlement_service.service.deps import Deps
from entitlement_service.service.events import apply_events

# Events replayed per transaction: a long selection commits as it goes.
CHUNK = 50


@dataclass(frozen=True)
class ReplaySelection:
    """Which rejected events to take: every criterion given must match."""

    provider_event_ids: tuple[str, ...] = ()
    reason: str | None = None  # a prefix of the rejection reason
    account_id: str | None = None
    created_from: datetime | None = None
    created_until: datetime | None = None
    limit: int = 100
    # Events rejected as unreadable, normalized again by the checkout service: exactly these are
    # taken (the filters above are not used).
    renormalized: tuple[ProviderEvent, ...] = ()


@dataclass(frozen=True)
class Replayed:
    event: RejectedEvent
    result: EventResult | None  # None when the replay was a dry run


async def replay_events(deps: Deps, selection: ReplaySelection, dry_run: bool) -> tuple[list[Replayed], bool]:
    """The rejected events selected, oldest first, each applied again through the same path as a
    new event (unless `dry_run`); and whether more match than the selection's limit."""
    if selection.renormalized:
        return await _replay_renormalized(deps, selection.renormalized), False
    async with deps.pool.acquire() as conn:
        found = await recorded.rejected_events(
            conn, event_ids=selection.provider_event_ids, reason=selection.reason, account_id=selection.account_id,
            created_from=selection.created_from, created_until=selection.created_until, limit=selection.limit + 1)
    more, found = len(found) > selection.limit, found[:selection.limit]
    if dry_run:
        return [Replayed(e, None) for e in found], more
    replayed: list[Replayed] = []
    for start in range(0, len(found), CHUNK):
        chunk = found[start:start + CHUNK]
        results = await apply_events(deps, [replace(deps.decode_event(e.snapshot), created=e.created) for e in chunk],
                                     replay=True)
        replayed += [Replayed(e, r) for e, r in zip(chunk, results, strict=True)]
    return replayed, more


async def _replay_renormalized(deps: Deps, renormalized: tuple[ProviderEvent, ...]) -> list[Replayed]:
    """Unreadable events normalized again: each still rejected as unreadable takes its new snapshot
    and is applied as a replayed event; the others are left out."""
    async with deps.pool.acquire() as conn, conn.transaction():
        taken = {e.provider_event_id: e for e in await recorded.renormalize(
            conn, [RecordedEvent.of(e, e.account_id) for e in renormalized], UNREADABLE)}
    # Each under the time it is recorded with, which its row is found by.
    events = [replace(e, created=taken[e.provider_event_id].created) for e in renormalized
              if e.provider_event_id in taken]
    replayed: list[Replayed] = []
    for start in range(0, len(events), CHUNK):
        chunk = events[start:start + CHUNK]
        results = await apply_events(deps, chunk, replay=True)
        replayed += [Replayed(taken[e.provider_event_id], r) for e, r in zip(chunk, results, strict=True)]
    return replayed
