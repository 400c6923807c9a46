"""Two live subscriptions in one non-stackable group, and what the group's `conflict_policy` makes
of it. The loser is the one precedence ranks second (higher plan priority wins, then the later
provider start, then the smaller subscription id; domain/precedence.py). Under `flag` support is
told (a `duplicate_subscription_in_group` mismatch); under `cancel_and_refund` the loser is also
canceled at the provider and its payment refunded, once: the decision is kept once per
subscription, each step at the provider is made under an idempotency key derived from the
subscription, and a step already recorded is never recorded again."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from catalog_rules.model import CatalogConfig, ConflictPolicy
from entitlement_service.domain.account import AccountState

DUPLICATE = "duplicate_subscription_in_group"


class ActionState(StrEnum):
    DECIDED = "decided"  # to cancel the loser at the provider
    CANCELED = "canceled"  # canceled; its payment to refund
    REFUNDED = "refunded"  # done
    SKIPPED = "skipped"  # nothing to do at the provider after all (the reason says why)


FINAL = frozenset({ActionState.REFUNDED, ActionState.SKIPPED})


@dataclass(frozen=True)
class Duplicate:
    """`loser` lost `group` to `winner` with no end in sight: both are live."""

    group: str
    loser: str
    winner: str
    policy: ConflictPolicy


def live_duplicates(state: AccountState, config: CatalogConfig) -> list[Duplicate]:
    """Each subscription that loses its non-stackable group to another over a window with no end
    (both live, neither ending), with the group's policy."""
    found = []
    for (subscription_id, group), lost in sorted(state.lost.items()):
        open_ended = [loss for loss in lost if loss.window.end is None]
        if open_ended:
            configured = config.groups.get(group)
            policy = configured.conflict_policy if configured else ConflictPolicy.FLAG
            found.append(Duplicate(group, subscription_id, open_ended[-1].winner, policy))
    return found


def cancel_key(subscription_id: str) -> str:
    """The provider idempotency key of the loser's cancellation: the same for every attempt."""
    return f"conflict-cancel-{subscription_id}"


def refund_key(subscription_id: str) -> str:
    """The provider idempotency key of the loser's refund: the same for every attempt."""
    return f"conflict-refund-{subscription_id}"


def next_action_state(current: ActionState, reported: ActionState) -> ActionState | None:
    """The state a report moves an action to, or None when it changes nothing: an action moves
    forward only (decided -> canceled -> refunded; skipped from decided or canceled), so a
    repeated, late or out-of-order report never records a step twice or undoes one."""
    order = {ActionState.DECIDED: 0, ActionState.CANCELED: 1, ActionState.REFUNDED: 2, ActionState.SKIPPED: 2}
    if current in FINAL or order[reported] <= order[current]:
        return None
    return reported
