"""Errors the entitlement rules raise; each transport maps them in one table."""


class DomainError(Exception):
    """Base of every rule violation a caller can act on."""


class InvalidRequest(DomainError):
    """A request field is missing or malformed; the message names the field."""


class NotFound(DomainError):
    """The thing asked for does not exist."""


class Conflict(DomainError):
    """The request contradicts current state (for example an occupied non-stackable group)."""


class CheckoutInProgress(Conflict):
    """A purchase of another selection into the same non-stackable group is still open: it must be
    paid, canceled or expire first. gRPC carries its id in trailing metadata."""

    code = "checkout_in_progress"

    def __init__(self, message: str, open_purchase_id: str) -> None:
        super().__init__(message)
        self.open_purchase_id = open_purchase_id

    def grpc_trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("error-code", self.code), ("open-purchase-id", self.open_purchase_id))
