"""The purchase session state machine: pending -> returned -> finalized | expired | failed |
conflict. `returned` is recorded but never trusted; only the provider moves a purchase further,
and what each provider fact wants of a purchase is decided here."""

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
