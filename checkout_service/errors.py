"""Errors the checkout use cases raise; each transport maps them in one table."""

from __future__ import annotations


class CheckoutError(Exception):
    """Base of every error a caller can act on; `code` is the stable machine-readable name."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(CheckoutError):
    """A field is missing or malformed; the message names it."""

    code = "invalid_request"


class InvalidSelection(CheckoutError):
    """The items cannot be bought (unknown or invalid price, mixed groups...); the message names them."""

    code = "invalid_selection"

    def __init__(self, message: str, problems: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.problems = problems


class FailedPrecondition(CheckoutError):
    """The request contradicts current state (a provider customer linked to another account, a
    purchase id registered for another session); the message says which."""

    code = "failed_precondition"


class AlreadyExists(CheckoutError):
    """What the request would create exists already."""

    code = "already_exists"


class GroupConflict(FailedPrecondition):
    """The account already holds a subscription in this non-stackable group: change it in the portal."""

    code = "group_conflict"

    def __init__(self, message: str, portal_url: str, subscription_ids: list[str]) -> None:
        super().__init__(message)
        self.portal_url, self.subscription_ids = portal_url, subscription_ids

    def grpc_trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("error-code", self.code), ("portal-url", self.portal_url))


class CheckoutInProgress(FailedPrecondition):
    """The account has a purchase of another selection open in this non-stackable group (pending
    or returned, its checkout session not expired): pay or cancel it, or wait for it to expire."""

    code = "checkout_in_progress"

    def __init__(self, message: str, open_purchase_id: str) -> None:
        super().__init__(message)
        self.open_purchase_id = open_purchase_id

    def grpc_trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("error-code", self.code), ("open-purchase-id", self.open_purchase_id))


class NotFound(CheckoutError):
    code = "not_found"


class Unauthenticated(CheckoutError):
    code = "unauthenticated"


class PermissionDenied(CheckoutError):
    code = "permission_denied"


class BadWebhook(CheckoutError):
    """A webhook that is not signed with a current secret or not a readable event; nothing is recorded."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AlreadyRunning(CheckoutError):
    """Another replica holds the reconciler's lease: it is reconciling now."""

    code = "already_running"


class RetryLater(CheckoutError):
    """Base of the errors a caller should answer by making the same call again after
    `retry_after_s` seconds (HTTP `Retry-After`); nothing was done, or it was rolled back whole."""

    code = "unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(RetryLater):
    """A dependency (the entitlement service or the provider) cannot answer now; retry later."""

    code = "unavailable"


class RateLimited(RetryLater):
    """The provider rate-limited this service, or the entitlement service is at its capacity:
    retry later, with backoff."""

    code = "rate_limited"


class Aborted(RetryLater):
    """The entitlement service's transaction lost to a concurrent one and was rolled back whole:
    retry (every call is idempotent)."""

    code = "aborted"
