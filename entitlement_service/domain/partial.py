"""Deriving an account from an instant on, so that one more event costs the same however long
its history: what a derivation from `since` on is joined to, and when it is exactly the whole one.

A snapshot changes its subscription's derivation only from its own provider time on (or from the
end it gives the subscription, if earlier), so the derivation from that instant on is read from
the snapshots from the last one before it, with what the earlier ones held summarized (`Earlier`).
Precedence at an instant depends only on the claims at that instant. The rows before `since`
stand; a row that goes on past `since` is joined to its stored part before it.

Where the part cannot show the whole is unchanged, the account is derived whole instead
(`PartialHistory`): a subscription that ever lost its group (precedence over its lost windows,
the `group_conflict` it keeps open and the funding of the periods it lost reach before `since`),
a purchase not finalized whose subscription's history is partial (its outcome reads the first
instant the subscription took effect), and an item whose latest run began before the part and
whose stored row does not reach it."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from entitlement_service.domain.account import AccountState, PlacedAssignment, PlacedBinding
from entitlement_service.domain.model import PurchaseState
from entitlement_service.domain.records import PurchaseRecord
from entitlement_service.domain.timeline import ItemRow
from entitlement_service.domain.windows import Window, coalesce

P = TypeVar("P", PlacedAssignment, PlacedBinding)


class PartialHistory(Exception):
    """A derivation from an instant on that cannot be shown to equal the whole one."""


def joined(stored: Iterable[P], derived: Iterable[P], since: datetime | None,
           identity: Callable[[P], Hashable]) -> list[P]:
    """The rows wanted: `derived`, which holds from `since` on, each joined to the part before
    `since` of a stored row it continues (stored rows before `since` stand as they are)."""
    if since is None:
        return list(derived)
    pieces: list[tuple[Hashable, Window]] = []
    rows: dict[Hashable, P] = {}
    for p in derived:
        pieces.append((identity(p), p.window))
        rows[identity(p)] = p
    for p in stored:
        before = p.window.clipped(since) if p.window.start < since else None
        if before is not None:
            pieces.append((identity(p), before))
            rows.setdefault(identity(p), p)
    return [replace(rows[key], window=window) for key, window in coalesce(pieces)]


def joined_items(stored: Iterable[ItemRow], derived: Iterable[ItemRow], parts_begin: Mapping[str, datetime]
                 ) -> list[ItemRow]:
    """Each price's latest run: `derived` read the subscriptions in `parts_begin` from that instant
    on only, so a run found from there began at the stored row's start, and a price not found
    there keeps its stored row, if that ended by then."""
    held = {(i.subscription_id, i.price_id): i for i in stored}
    wanted: dict[tuple[str, str], ItemRow] = {}
    for item in derived:
        key = (item.subscription_id, item.price_id)
        begin = parts_begin.get(item.subscription_id)
        if begin is not None and item.window.start <= begin:
            before = held.get(key)
            if before is None or before.window.start > begin or (
                    before.window.end is not None and before.window.end < begin):
                raise PartialHistory(f"item {key} began before its part")
            item = replace(item, window=Window(before.window.start, item.window.end))
        wanted[key] = item
    for key, before in held.items():
        begin = parts_begin.get(before.subscription_id)
        if key not in wanted and begin is not None:
            if before.window.end is None or before.window.end > begin:
                raise PartialHistory(f"item {key} is no longer where it was")
            wanted[key] = before
    return list(wanted.values())


def check_exact(state: AccountState, open_mismatches: Mapping[str, str], purchases: Iterable[PurchaseRecord],
                partial: set[str]) -> None:
    """Raises PartialHistory unless the derivation from an instant on, `state`, with `partial`
    the subscriptions whose history it read only in part, is exactly the whole one from there."""
    if state.lost or "group_conflict" in open_mismatches.values():
        raise PartialHistory("a subscription lost its group")
    by_purchase = {d.latest.purchase_id: d.latest.subscription_id for d in state.subscriptions if d.latest.purchase_id}
    for purchase in purchases:
        sub = purchase.subscription_id or by_purchase.get(purchase.purchase_id)
        if sub in partial and purchase.state is not PurchaseState.FINALIZED:
            raise PartialHistory(f"purchase {purchase.purchase_id} is {purchase.state.value}")
