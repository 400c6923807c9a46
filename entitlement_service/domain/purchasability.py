"""Whether an account may buy a price, and whether a selection of prices makes one checkout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from catalog_rules.metadata import group_of_items
from catalog_rules.model import MAX_QUANTITY, CatalogConfig, ResolvedPrice
from entitlement_service.domain.model import Mode

# The account's subscriptions holding each group now, winners and conflict losers alike.
Owned = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class PriceChoice:
    resolved: ResolvedPrice
    purchasable: bool
    problem: str | None = None
    message: str = ""
    requires_portal: bool = False
    conflicting_subscription_ids: tuple[str, ...] = ()


def choice_for(resolved: ResolvedPrice, config: CatalogConfig, owned: Owned) -> PriceChoice:
    """An invalid or inactive price cannot be bought; a recurring price in a non-stackable group
    the account already holds is changed through the portal instead (a one-time price, or a
    stackable group, never conflicts)."""
    if not resolved.valid:
        return PriceChoice(resolved, False, "invalid_catalog_entry", resolved.invalid_reason or "invalid")
    if not resolved.purchasable:
        return PriceChoice(resolved, False, "inactive", f"price {resolved.price_id} is not active")
    group = config.groups.get(resolved.subscription_group or "")
    holders = owned.get(resolved.subscription_group or "", ())
    if group is not None and not group.stackable and holders and resolved.price.recurring:
        return PriceChoice(resolved, False, "group_conflict",
                           f"the account already holds {', '.join(holders)} in group {group.code}; change it "
                           "through the portal", requires_portal=True, conflicting_subscription_ids=holders)
    return PriceChoice(resolved, True)


@dataclass(frozen=True)
class Problem:
    code: str
    item_index: int  # -1 when the problem is the selection's as a whole
    price: str
    message: str


@dataclass(frozen=True)
class Validation:
    ok: bool
    subscription_group: str | None
    mode: Mode | None
    items: tuple[tuple[str, ResolvedPrice, int], ...]  # (reference as given, price, quantity)
    problems: tuple[Problem, ...]
    conflicting_subscription_ids: tuple[str, ...]


def validate_selection(items: Sequence[tuple[str, int]], found: Mapping[str, ResolvedPrice], config: CatalogConfig,
                       owned: Owned) -> Validation:
    """Every problem of a selection of (price id or lookup key, quantity), each naming its item:
    at least one item; each price known, purchasable by the account, listed once, quantity at
    least 1; and, since one provider subscription belongs to one group, the items name at most one
    group and are all recurring or all one-time. A recurring price always has its group (the
    catalog refuses it otherwise); one-time items without a group leave the selection's group
    None."""
    problems: list[Problem] = []
    resolved_items: list[tuple[str, ResolvedPrice, int]] = []
    conflicts: tuple[str, ...] = ()
    if not items:
        problems.append(Problem("empty", -1, "", "items must list at least one price"))
    seen: set[str] = set()
    for index, (ref, quantity) in enumerate(items):
        resolved = found.get(ref)
        if resolved is None:
            problems.append(Problem("unknown_price", index, ref, f"no price with id or lookup key {ref!r}"))
            continue
        if quantity < 1:
            problems.append(Problem("bad_quantity", index, ref, f"items[{index}].quantity must be at least 1"))
        elif quantity > MAX_QUANTITY:
            problems.append(Problem("bad_quantity", index, ref,
                                    f"items[{index}].quantity must be at most {MAX_QUANTITY}"))
        if resolved.price_id in seen:
            problems.append(Problem("duplicate_price", index, ref, f"price {ref!r} appears more than once"))
        seen.add(resolved.price_id)
        choice = choice_for(resolved, config, owned)
        if not choice.purchasable and choice.problem:
            problems.append(Problem(choice.problem, index, ref, choice.message))
            conflicts = conflicts or choice.conflicting_subscription_ids
        resolved_items.append((ref, resolved, quantity))
    prices = [r for _, r, _ in resolved_items]
    group = group_of_items(prices)
    # A one-time price may have no group: only the groups items name can be spanned.
    spanned = sorted({r.subscription_group for r in prices if r.subscription_group})
    if group is None and len(spanned) > 1:
        problems.append(Problem("mixed_groups", -1, "", f"items span groups {', '.join(spanned)}; "
                                                         "one checkout buys into one group"))
    modes = {Mode.SUBSCRIPTION if r.price.recurring else Mode.PAYMENT for r in prices}
    if len(modes) > 1:
        problems.append(Problem("mixed_modes", -1, "", "recurring and one-time prices cannot share a checkout"))
    return Validation(ok=not problems, subscription_group=group, mode=modes.pop() if len(modes) == 1 else None,
                      items=tuple(resolved_items), problems=tuple(problems), conflicting_subscription_ids=conflicts)
