"""Stripe list objects and deleted-object stubs."""

from __future__ import annotations

from collections.abc import Sequence

from provider_sim.model import Json


def list_object(data: Sequence[Json], url: str, *, has_more: bool = False) -> Json:
    return {"object": "list", "data": list(data), "has_more": has_more, "url": url}


def deleted(object_id: str, kind: str) -> Json:
    return {"id": object_id, "object": kind, "deleted": True}
