"""The entitlement domain's own vocabulary (the catalog's lives in `catalog_rules.model`): frozen
values in, frozen values out, no I/O."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Provider-neutral subscription status."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


class PurchaseState(StrEnum):
    PENDING = "pending"
    RETURNED = "returned"
    FINALIZED = "finalized"
    EXPIRED = "expired"
    FAILED = "failed"
    CONFLICT = "conflict"


class Mode(StrEnum):
    SUBSCRIPTION = "subscription"
    PAYMENT = "payment"


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    IGNORED = "ignored"
    REJECTED = "rejected"
