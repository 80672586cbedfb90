"""What the registry and the workers answer instead of a result: domain outcomes, with no HTTP in them.

`Refused` turns a request away before it runs (its `code` is the reason and the request's outcome label, e.g.
`overloaded`; `retry_after` the seconds a client should wait, or None when retrying will not help); `UnknownModel`
is a name no variant has. A job that fails once running ends with the `Failed` event (gptzoo.server.events).
gptzoo.server.errors maps each code to its HTTP status and error body, in one table."""

from __future__ import annotations

from gptzoo.zoo.errors import GptzooError

RETRY_BUSY, RETRY_SHUTDOWN = "1", "5"  # Retry-After seconds: a slot frees up within a request; a restart takes longer
RETRY_LOADING = "5"


class Refused(GptzooError):
    def __init__(self, code: str, message: str, retry_after: str | None = None, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.retry_after, self.param = code, message, retry_after, param


class UnknownModel(GptzooError):
    """The request names no variant, alias or family this server has; the message lists what exists."""

    code, param = "model_not_found", "model"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
