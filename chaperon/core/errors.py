"""Domain errors: what went wrong, in terms of the load test, never of the transport.

The core, the services' domain code (scheduler, compiler, registry) and the engine's callers
raise these plain exceptions. They know nothing of gRPC: ``chaperon.rpc.status`` maps each
class to a status code in one table, and turns ``InvalidArgument.violations`` into a
``google.rpc.BadRequest`` detail listing each bad field path.
"""

from __future__ import annotations

MAX_VIOLATIONS_IN_MESSAGE = 5


class ChaperonError(Exception):
    """Base class of the domain errors; ``message`` is what the user reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ChaperonError):
    """Bad input; ``violations`` lists (field path, what is wrong)."""

    def __init__(self, violations: list[tuple[str, str]], what: str = "request") -> None:
        self.violations = violations
        shown = "; ".join(f"{f}: {d}" for f, d in violations[:MAX_VIOLATIONS_IN_MESSAGE])
        extra = len(violations) - MAX_VIOLATIONS_IN_MESSAGE
        more = f" (and {extra} more)" if extra > 0 else ""
        super().__init__(f"invalid {what}: {shown}{more}" if violations else f"invalid {what}")


class NotFound(ChaperonError):
    """What was asked for does not exist (a run id, a worker id)."""


class FailedPrecondition(ChaperonError):
    """The request is valid but not now (a run that has ended, a busy worker)."""


class ResourceExhausted(ChaperonError):
    """Over a limit (sessions, sizes)."""


class Unimplemented(ChaperonError):
    """Asks for something this version does not do."""


class PermissionDenied(ChaperonError):
    """Not allowed (a target outside the allow-list, python steps on a worker without them)."""


class Unavailable(ChaperonError):
    """A peer that should answer does not."""
