"""Domain errors. Domain code raises these; only serving maps them to HTTP and only the CLI to
exit codes, so a vertical never deals with either."""

from __future__ import annotations

__all__ = [
    "VerticalsError",
    "InvalidInput",
    "NotFound",
    "BundleError",
    "NotReady",
    "Overloaded",
    "DeadlineExceeded",
]


class VerticalsError(Exception):
    """Base class: carries a machine-readable `code`, a `field` (or None) and the HTTP status."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field}


class InvalidInput(VerticalsError):
    """Bad user input: names the field and the reason."""

    code = "invalid_input"
    status = 422

    def __init__(self, field: str | None, reason: str):
        super().__init__(f"{field}: {reason}" if field else reason, field)
        self.reason = reason


class NotFound(VerticalsError):
    code = "not_found"
    status = 404


class BundleError(VerticalsError):
    """A model bundle is missing, incomplete or fails its checksums."""

    code = "bundle_error"
    status = 500


class NotReady(VerticalsError):
    code = "not_ready"
    status = 503


class Overloaded(VerticalsError):
    code = "overloaded"
    status = 503


class DeadlineExceeded(VerticalsError):
    code = "deadline_exceeded"
    status = 504
