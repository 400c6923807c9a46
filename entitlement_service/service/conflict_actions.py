"""Conflict actions: the checkout service reports each step it carried out at the provider for a
losing subscription of a `cancel_and_refund` group, and lists those still to do."""

from __future__ import annotations

from dataclasses import dataclass

from entitlement_service.db import conflict_actions
from entitlement_service.domain.conflict_actions import ActionState, next_action_state
from entitlement_service.domain.errors import InvalidRequest, NotFound
from entitlement_service.domain.records import ConflictActionRecord
from entitlement_service.service.deps import Deps
from entitlement_service.service.transactions import write_transaction


@dataclass(frozen=True)
class Recorded:
    action: ConflictActionRecord
    changed: bool


async def record_step(deps: Deps, subscription_id: str, reported: ActionState, refund_id: str | None,
                      reason: str) -> Recorded:
    """Moves the action forward to `reported` and audits it; a step already recorded (or one
    behind) changes nothing, so a retried, duplicated or late report is harmless."""
    if reported is ActionState.DECIDED:
        raise InvalidRequest("state must be canceled, refunded or skipped")
    if reported is ActionState.REFUNDED and not refund_id:
        raise InvalidRequest("refund_id is required with state refunded")
    async with write_transaction(deps) as conn:
        found = await conflict_actions.get_action(conn, subscription_id, lock=True)
        if found is None:
            raise NotFound(f"no conflict action for subscription {subscription_id}")
        moved = next_action_state(ActionState(found.state), reported)
        if moved is None:
            return Recorded(found, False)
        await conflict_actions.move(conn, found, moved.value, refund_id, reason, deps.clock(),
                                    f"conflict_action:{subscription_id}:{moved.value}")
        after = await conflict_actions.get_action(conn, subscription_id)
    assert after is not None
    return Recorded(after, True)
