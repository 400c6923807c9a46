"""Events: created when something changes, holding the object as it was at that moment (in every
API shape) and, for updates, the `previous_attributes` that changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provider_sim.model import Event, Json
from provider_sim.resources.registry import render
from provider_sim.store import State, new_id
from provider_sim.versions import Shape

Rendered = dict[str, Json]


@dataclass(frozen=True)
class Origin:
    """The API request that caused a change; empty for the clock, the control API and pages."""

    request_id: str | None = None
    idempotency_key: str | None = None


@dataclass
class Ctx:
    """One unit of change: the state, the simulated time it happens at, and its cause."""

    state: State
    now: int
    origin: Origin = field(default_factory=Origin)


def snapshot(state: State, kind: str, object_id: str) -> Rendered:
    return {shape.value: render(state, kind, object_id, shape) for shape in Shape}


def _changed(before: Any, after: Any, key: str) -> Any:
    """What `previous_attributes` shows for one changed top-level field: for metadata only the keys
    that changed (null for a key that was added), otherwise the whole former value."""
    if key == "metadata" and isinstance(before, dict) and isinstance(after, dict):
        keys = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        return {k: before.get(k) for k in sorted(keys)}
    return before


def previous_attributes(before: Json, after: Json) -> Json:
    return {key: _changed(before.get(key), value, key) for key, value in after.items() if before.get(key) != value}


def emit(ctx: Ctx, event_type: str, kind: str, object_id: str, *, at: int | None = None,
         before: Rendered | None = None, objects: Rendered | None = None) -> Event | None:
    """Records an event about the object's present state; with `before`, an update event that
    carries what changed, or nothing when nothing did."""
    objects = objects or snapshot(ctx.state, kind, object_id)
    previous = None
    if before is not None:
        previous = {shape: previous_attributes(before[shape], objects[shape]) for shape in objects}
        if not previous[Shape.CURRENT.value]:
            return None
    state = ctx.state
    state.event_seq += 1
    event = Event(
        id=new_id("evt_"), seq=state.event_seq, type=event_type, created=ctx.now if at is None else at,
        objects=objects, previous=previous, request_id=ctx.origin.request_id,
        idempotency_key=ctx.origin.idempotency_key,
        pending_webhooks=sum(1 for e in state.webhook_endpoints.values() if e.wants(event_type)),
    )
    state.events[event.id] = event
    state.outbox.append(event)
    return event
