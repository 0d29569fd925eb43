"""Problems found in a load test, collected rather than raised one by one.

A ``Collector`` gathers every problem of one check: bad fields (``INVALID_ARGUMENT`` with a
``google.rpc.BadRequest`` field violation each, once ``chaperon.rpc.status`` maps it), limits
exceeded (``RESOURCE_EXHAUSTED``) and parts of the language not implemented
(``UNIMPLEMENTED``); ``raise_if_any`` turns them into the one domain error to answer with.
The messages that more than one rule writes are here, written once.
"""

from __future__ import annotations

from chaperon.core.durations import DurationError, parse_duration_ns
from chaperon.core.errors import InvalidArgument, ResourceExhausted, Unimplemented
from chaperon.core.lang.limits import MAX_VARIABLES


class Collector:
    """Problems found so far: bad fields, limits exceeded, parts not implemented."""

    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []
        self.too_big: list[str] = []
        self.unimplemented: list[str] = []

    def bad(self, path: str, what: str) -> None:
        self.violations.append((path, what))

    def duration(self, path: str, text: str, *, required: bool = False) -> int | None:
        """``text`` parsed to ns; None (and a violation if it is wrong or missing) if not."""
        if not text:
            if required:
                self.bad(path, "is required")
            return None
        try:
            return parse_duration_ns(text)
        except DurationError as exc:
            self.bad(path, str(exc))
            return None

    def raise_if_any(self, what: str = "load test") -> None:
        """Raise InvalidArgument, else ResourceExhausted, else Unimplemented, if any."""
        if self.violations:
            raise InvalidArgument(self.violations, what)
        if self.too_big:
            raise ResourceExhausted(f"{what} too large: " + "; ".join(self.too_big))
        if self.unimplemented:
            raise Unimplemented("not supported yet: " + "; ".join(self.unimplemented))


def unknown_name(name: str) -> str:
    """A template placeholder that means nothing."""
    return (
        f"'{{{{{name}}}}}' is not set by any step (assign, update_assign, extract,"
        " ws_recv.assign), not a built-in (session_id, iteration) and not a config key"
    )


def not_a_config_value(name: str) -> str:
    """A runtime placeholder where only config values work (basic_auth)."""
    return f"'{{{{{name}}}}}' is not a config value: only those work here"


def too_many_variables() -> str:
    return f"more than {MAX_VARIABLES} session variables"


def not_a_url(url: str, schemes: tuple[str, ...]) -> str:
    return f"{url!r} is not a {' or '.join(s + '://' for s in schemes)} URL"
