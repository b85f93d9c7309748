"""One error hierarchy for the whole domain; every adapter maps it to its own envelope."""

from __future__ import annotations


class ShepherdError(Exception):
    """A failure a user can act on: a stable machine code, an HTTP-ish status and a message.

    `transient`: trying the same again later may succeed (the other side is down, busy or rate-limiting);
    `retry_after` is then its own word on when, in seconds, if it gave one. Whoever retries (the action
    executor, the outbox) reads these two and nothing else."""

    code = "ERROR"
    status = 400
    transient = False

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 transient: bool | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if transient is not None:
            self.transient = transient
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class TryLater(ShepherdError):
    """Transient by nature: a service Shepherd depends on is unavailable for now."""

    code = "UNAVAILABLE"
    status = 503
    transient = True


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


class Unavailable(TryLater):
    code = "UNAVAILABLE"
    status = 503
