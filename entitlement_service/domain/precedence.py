"""Deterministic precedence between subscriptions that claim one non-stackable group at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from entitlement_service.domain.windows import Window, boundaries, intersection


@dataclass(frozen=True)
class Claim:
    """A subscription occupying a group over a window, with the priority of its plan there."""

    subscription_id: str
    subscription_group: str
    priority: int
    started_at: datetime
    window: Window


@dataclass(frozen=True)
class Loss:
    """Over `window` the subscription lost its group to `winner`."""

    window: Window
    winner: str


def precedence_key(priority: int, started_at: datetime, subscription_id: str) -> tuple[int, float, str]:
    """Sorts the winner first: higher plan priority, then the later provider start, then the
    smaller subscription id. Arrival order plays no part."""
    return (-priority, -started_at.timestamp(), subscription_id)


def _winner(claims: list[Claim]) -> str:
    best: dict[str, Claim] = {}
    for claim in claims:
        held = best.get(claim.subscription_id)
        if held is None or claim.priority > held.priority:
            best[claim.subscription_id] = claim
    return min(best.values(), key=lambda c: precedence_key(c.priority, c.started_at, c.subscription_id)).subscription_id


def losses(claims: list[Claim]) -> dict[str, list[Loss]]:
    """For each subscription, the windows in which another subscription outranks it. Exactly one
    subscription holds the group at any instant two or more claim it."""
    found: dict[str, list[Loss]] = {}
    for piece in boundaries(c.window for c in claims):
        present = [c for c in claims if c.window.overlaps(piece)]
        if len({c.subscription_id for c in present}) < 2:
            continue
        winner = _winner(present)
        for loser in sorted({c.subscription_id for c in present} - {winner}):
            runs = found.setdefault(loser, [])
            last = runs[-1] if runs else None
            if last is not None and last.winner == winner and last.window.end == piece.start:
                runs[-1] = Loss(Window(last.window.start, piece.end), winner)
            else:
                runs.append(Loss(piece, winner))
    return found


def split_by_losses(window: Window, lost: list[Loss]) -> list[tuple[Window, str | None]]:
    """Cuts `window` into the parts it holds (winner None) and the parts it lost (winner named)."""
    parts: list[tuple[Window, str | None]] = []
    cursor: datetime | None = window.start
    for loss in sorted(lost, key=lambda x: x.window.start):
        part = intersection(window, loss.window)
        if part is None or cursor is None:
            continue
        if cursor < part.start:
            parts.append((Window(cursor, part.start), None))
        parts.append((part, loss.winner))
        cursor = part.end
    if cursor is not None and (window.end is None or cursor < window.end):
        parts.append((Window(cursor, window.end), None))
    return parts
