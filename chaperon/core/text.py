"""Control characters in user text: refused where it comes in, escaped where it goes out.

A control character (C0: U+0000..U+001F, DEL: U+007F, C1: U+0080..U+009F) in a name, a
metric key or a reason is never what the user meant, and printed to a terminal it moves the
cursor, rewrites the title or hides what came before it. So the compiler's first pass refuses
them in every name-like field of a load test (``control_char_problem``), the master refuses
them in what a worker registers with, and everything the command line prints goes through
``printable`` (one field) or ``printable_lines`` (a whole message, keeping its line breaks)
anyway, log records included (``PrintableFormatter``): a master or a worker that is older,
or hostile, cannot reach the operator's terminal either. The escapes are visible and
unambiguous enough to read: ``\\x1b``, ``\\n``, ``\\x85``. ``json_printable`` does the
same for JSON text without breaking it (JSON writers escape C0, not DEL nor C1).
"""

from __future__ import annotations

import logging
import re

CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")
# In a whole message: its own line breaks (and tabs) stay.
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_DEL_C1 = re.compile("[\x7f-\x9f]")
# What RFC 9110 forbids in a field value: CTLs but HTAB (C1 is not a CTL there: as UTF-8 it
# is two bytes of obs-text, and non-ASCII is sent as UTF-8).
_HEADER_CTL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
HEADER_CTL_BYTES = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def control_char_problem(text: str, allowed: str = "") -> str | None:
    """Why ``text`` cannot be a name (its first control character, shown escaped), or None.

    ``allowed`` lists control characters that are fine here (a header value takes a tab).
    """
    for match in CONTROL_CHARS.finditer(text):
        if match.group() not in allowed:
            return (
                f"must not contain control characters (found {_escape(match)} at "
                f"position {match.start()})"
            )
    return None


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value (CR, LF, NUL, another C0 control
    but the tab, DEL), or None."""
    match = _HEADER_CTL.search(value)
    if match is None:
        return None
    return (
        f"must not contain control characters (CR, LF, NUL ...; found {_escape(match)} at "
        f"position {match.start()})"
    )


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or f"\\x{ord(ch):02x}"


def printable(text: str) -> str:
    """``text`` with every control character (line breaks too) written as a visible escape."""
    return CONTROL_CHARS.sub(_escape, text)


def printable_lines(text: str) -> str:
    """A multi-line message for a terminal: line breaks and tabs kept, other controls escaped."""
    return _CONTROL_BUT_LINES.sub(_escape, text)


def json_printable(text: str) -> str:
    """JSON text with DEL and C1 written as ``\\u007f``-style escapes: the same JSON value,
    nothing a terminal reads as a control (they can only occur inside JSON strings)."""
    return _DEL_C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class PrintableFormatter(logging.Formatter):
    """A log formatter whose lines carry no control character but their line breaks."""

    def format(self, record: logging.LogRecord) -> str:
        return printable_lines(super().format(record))
