"""The purchase session state machine: pending -> returned -> finalized | expired | failed |
conflict. `returned` is recorded but never trusted; only the provider moves a purchase further."""

from __future__ import annotations

from entitlement_service.domain.model import PurchaseState as S

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
