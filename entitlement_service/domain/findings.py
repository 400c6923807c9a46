"""Mismatches: differences between what the provider says and what the account can hold, opened
while they are found and closed once they are not. A fingerprint names one difference, so the
same open difference is recorded once however often it is found."""

from __future__ import annotations

from collections.abc import Mapping

from entitlement_service.domain.account import AccountState
from entitlement_service.domain.conflict_actions import DUPLICATE, Duplicate
from entitlement_service.domain.provider import CheckoutSessionSnapshot
from entitlement_service.domain.reconcile import Difference
from entitlement_service.domain.records import Finding, Resolution

# The kinds a derivation opens, and what closes each when a later derivation no longer finds it.
DERIVED = {"group_conflict": "no longer conflicting", "group_mismatch": "items in one group again",
           DUPLICATE: "one subscription holds the group again"}
REPAIRED = "repaired: applied the provider's state"
RESOLVED_PURCHASE = "resolved from the provider's checkout session"
READ_AGAIN = "read from the provider again"


def derivation_findings(account_id: str, state: AccountState) -> list[Finding]:
    """A subscription that lost its non-stackable group to another over some windows (one finding
    per subscription and group, with the winners and windows), and a subscription whose items
    span several groups."""
    found = []
    for (subscription_id, group), lost in state.lost.items():
        diff = {"subscription_group": group, "lost_to": sorted({loss.winner for loss in lost}),
                "windows": [[loss.window.start.isoformat(), loss.window.end.isoformat() if loss.window.end else None]
                            for loss in lost]}
        found.append(Finding("group_conflict", account_id, subscription_id,
                             f"group_conflict:{account_id}:{group}:{subscription_id}", diff))
    for derived in state.subscriptions:
        if derived.group_mismatch:
            subscription_id = derived.latest.subscription_id
            found.append(Finding("group_mismatch", account_id, subscription_id, f"group_mismatch:{subscription_id}",
                                 {"reason": derived.group_mismatch}))
    return found


def duplicate_findings(account_id: str, duplicates: list[Duplicate]) -> list[Finding]:
    """Two live subscriptions in one non-stackable group: one finding per losing subscription,
    naming both and the group's policy, open while both are live."""
    return [Finding(DUPLICATE, account_id, d.loser, f"{DUPLICATE}:{account_id}:{d.group}:{d.loser}",
                    {"subscription_group": d.group, "subscription_id": d.loser, "winner_subscription_id": d.winner,
                     "subscriptions": sorted([d.loser, d.winner]), "conflict_policy": d.policy.value})
            for d in duplicates]


def derivation_resolutions(open_mismatches: Mapping[str, str], found: list[Finding]) -> list[Resolution]:
    """The open mismatches (fingerprint -> kind) of the kinds a derivation opens that it no
    longer finds; other kinds are left to whatever opened them."""
    still = {f.fingerprint for f in found}
    return [Resolution(fingerprint, DERIVED[kind]) for fingerprint, kind in open_mismatches.items()
            if kind in DERIVED and fingerprint not in still]


def provider_difference(account_id: str, subscription_id: str, difference: Difference,
                        reconciliation_id: str) -> Finding:
    """A difference the reconciler read, named by the reconciliation event that repairs it: the
    same drift read again is the same finding."""
    return Finding(difference.kind, account_id, subscription_id, f"{difference.kind}:{reconciliation_id}",
                   difference.diff)


def stuck_purchase(session: CheckoutSessionSnapshot) -> Finding:
    """A purchase past its timeout whose checkout session the provider still holds open."""
    return Finding("stuck_purchase", session.metadata.get("account_id") or "", None,
                   stuck_purchase_fingerprint(session.checkout_session_id),
                   {"purchase_id": session.purchase_id, "checkout_session": session.status,
                    "payment_status": session.payment_status})


def stuck_purchase_fingerprint(checkout_session_id: str) -> str:
    return f"stuck_purchase:{checkout_session_id}"


def unreadable_account(account_id: str, reason: str) -> Finding:
    """An account whose subscriptions the reconciler could not read or understand, so it was not
    compared: open until a later run reads it."""
    return Finding("unreadable", account_id, None, unreadable_fingerprint(account_id), {"reason": reason})


def unreadable_fingerprint(account_id: str) -> str:
    return f"unreadable:{account_id}"
