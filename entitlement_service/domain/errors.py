"""Errors the entitlement rules raise; each transport maps them in one table."""


class DomainError(Exception):
    """Base of every rule violation a caller can act on."""


class InvalidRequest(DomainError):
    """A request field is missing or malformed; the message names the field."""


class NotFound(DomainError):
    """The thing asked for does not exist."""


class Conflict(DomainError):
    """The request contradicts current state (for example an occupied non-stackable group)."""
