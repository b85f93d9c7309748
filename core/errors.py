"""One error hierarchy for the whole domain; every adapter maps it to its own envelope."""

from __future__ import annotations


class ShepherdError(Exception):
    """A failure a user can act on: a stable machine code, an HTTP-ish status and a message."""

    code = "ERROR"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class ValidationFailed(ShepherdError):
    code = "VALIDATION_ERROR"
    status = 400


class NotFound(ShepherdError):
    code = "NOT_FOUND"
    status = 404


class Conflict(ShepherdError):
    code = "CONFLICT"
    status = 409


class Unauthorized(ShepherdError):
    code = "UNAUTHORIZED"
    status = 401


class Forbidden(ShepherdError):
    code = "FORBIDDEN"
    status = 403


class Unavailable(ShepherdError):
    code = "UNAVAILABLE"
    status = 503
