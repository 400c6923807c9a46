"""The purchase session state machine: pending -> returned -> finalized | expired | failed |
conflict. `returned` is recorded but never trusted; only the provider moves a purchase further,
and what each provider fact wants of a purchase is decided here.

A final state is what a poller stops at. A later provider fact either leaves the purchase alone or
moves it along one of the few edges out of a final state (below); such a move is a transition of
its own whose reason says which final state it revises and why. A subscription purchase also
records the group its subscription is in: when the subscription moves to another group, the
purchase records the new group by a transition that keeps its state and names both groups."""

from __future__ import annotations

from dataclasses import dataclass

from entitlement_service.domain.account import AccountState
from entitlement_service.domain.model import Mode, Status
from entitlement_service.domain.model import PurchaseState as S
from entitlement_service.domain.provider import RECONCILIATION, CheckoutSessionSnapshot
from entitlement_service.domain.timeline import EFFECTIVE, Derived

FINAL = frozenset({S.FINALIZED, S.EXPIRED, S.FAILED, S.CONFLICT})

_ALLOWED: dict[S, frozenset[S]] = {
    S.PENDING: frozenset({S.RETURNED, S.FINALIZED, S.EXPIRED, S.FAILED, S.CONFLICT}),
    S.RETURNED: frozenset({S.FINALIZED, S.EXPIRED, S.FAILED, S.CONFLICT}),
    # Precedence is decided by provider time, so a late event can show that a finalized purchase
    # actually lost its group, or that a loser won after all.
    S.FINALIZED: frozenset({S.CONFLICT}),
    S.CONFLICT: frozenset({S.FINALIZED}),
    # A session can expire and later be paid through an async payment; the provider is the truth.
    S.EXPIRED: frozenset({S.FINALIZED, S.CONFLICT}),
    S.FAILED: frozenset({S.FINALIZED, S.CONFLICT}),
}


def next_state(current: S, wanted: S) -> S | None:
    """The state to move to, or None when `wanted` changes nothing or may not follow `current`
    (for example a browser returning after the provider already finalized)."""
    if wanted == current or wanted not in _ALLOWED[current]:
        return None
    return wanted


def transition_reason(current: S, target: S, reason: str) -> str:
    """The reason recorded for a move: a move out of a final state says which state it revises,
    so a purchase a poller already saw as final never changes without saying so."""
    if current in FINAL:
        return f"{current.value} revised to {target.value}: {reason}"
    return reason


@dataclass(frozen=True)
class PurchaseMove:
    """One transition to record for a purchase: its new state (its current one when only its
    group changes), the reason, and its subscription's group to record (None: unchanged)."""

    to_state: S
    reason: str
    group: str | None = None


def settle(current: S, wanted: S | None, reason: str, recorded_group: str | None = None,
           group_now: str | None = None, subscription_id: str = "") -> PurchaseMove | None:
    """What one provider fact does to a purchase, or None when it changes nothing: a move along an
    allowed edge (a move out of a final state says what it revises), and, when its subscription
    is now in another group than the one the purchase records, that group and a reason naming
    both. A group change alone keeps the state."""
    target = next_state(current, wanted) if wanted is not None else None
    moved_group = group_now if recorded_group and group_now and group_now != recorded_group else None
    group_reason = (f"{subscription_id or 'its subscription'} moved from group {recorded_group} to group "
                    f"{moved_group}") if moved_group else ""
    if target is not None:
        why = transition_reason(current, target, reason or f"the provider reports {target.value}")
        return PurchaseMove(target, f"{why}; {group_reason}" if group_reason else why, moved_group)
    if moved_group is not None:
        return PurchaseMove(current, group_reason, moved_group)
    return None


@dataclass(frozen=True)
class SessionStep:
    """What a checkout session event does to its purchase."""

    wanted: S | None  # the state the purchase should move to, if any
    reason: str
    funds: bool = False  # a paid one-time checkout: its one_time grants are issued
    links_subscription: bool = False  # a paid subscription checkout: the purchase learns its subscription


def session_step(event_type: str, session: CheckoutSessionSnapshot) -> SessionStep:
    """Expired and failed sessions end their purchase; a paid one-time checkout finalizes it (and
    funds); a paid subscription checkout only names its subscription, whose own events finalize
    the purchase once it takes effect; an unpaid one waits for the provider."""
    kind = event_type.removeprefix(RECONCILIATION)
    if kind == "checkout.session.expired":
        return SessionStep(S.EXPIRED, "checkout session expired")
    if kind == "checkout.session.async_payment_failed":
        return SessionStep(S.FAILED, "asynchronous payment failed")
    if session.paid and session.mode is Mode.PAYMENT:
        return SessionStep(S.FINALIZED, f"{event_type}: paid", funds=True)
    if session.paid:
        return SessionStep(None, "", links_subscription=session.subscription_id is not None)
    return SessionStep(None, f"payment {session.payment_status}; waiting for the provider")


def subscription_outcome(state: AccountState, derived: Derived) -> tuple[S | None, str]:
    """The state a subscription purchase should be in: finalized once its subscription took
    effect, or a conflict when at that instant another subscription held its group; failed when
    it expired unpaid; finalized when it is effective without ever having claimed its group (no
    plan in the catalog); otherwise none yet."""
    sub_id = derived.latest.subscription_id
    if derived.claims:
        winner = state.lost_at_start(sub_id)
        if winner is not None:
            return S.CONFLICT, f"lost its group to {winner}"
        return S.FINALIZED, f"{sub_id} took effect"
    if derived.latest.status is Status.INCOMPLETE_EXPIRED:
        return S.FAILED, f"{sub_id} expired before its first payment"
    if derived.latest.status in EFFECTIVE:
        return S.FINALIZED, f"{sub_id} is {derived.latest.status.value}"
    return None, ""
