"""Slow, obvious pure-Python reference for the C response parser in ``_fastpath/http1.pxd``.

It parses a whole buffer at once, line by line, with the same grammar as the C state machine
(see that module's docstring). Property tests feed the C parser the same bytes split at random
points and require the same outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEAD = 65536
MAX_BODY = 1 << 50
TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_STATUS_RE = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?: .*)?", re.S)
_CL_RE = re.compile(rb"[ \t]*([0-9]+)[ \t]*")
_CHUNK_RE = re.compile(rb"([0-9A-Fa-f]+)[ \t]*(;.*)?", re.S)


@dataclass(frozen=True)
class RefResult:
    error: bool = False
    complete: bool = False
    status: int = 0
    keep_alive: bool = False
    consumed: int = 0


ERROR = RefResult(error=True)


class _Incomplete(Exception):
    pass


class _Malformed(Exception):
    pass


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    """The line starting at pos (without its LF and one CR before it), and the next position."""
    j = data.find(b"\n", pos)
    if j < 0:
        raise _Incomplete
    line = data[pos:j]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line, j + 1


def _tokens(value: bytes) -> list[bytes]:
    if b"\r" in value:
        raise _Malformed
    return [t for t in (part.strip(b" \t").lower() for part in value.split(b",")) if t]


@dataclass
class _Head:
    http10: bool
    cl: int | None = None
    te: list[bytes] = field(default_factory=list)
    conn: list[bytes] = field(default_factory=list)


def _parse_head(data: bytes, pos: int) -> tuple[int, _Head, int]:
    start = pos
    try:
        status_line, pos = _line(data, pos)
    except _Incomplete:
        if len(data) - start > MAX_HEAD:
            raise _Malformed from None
        raise
    m = _STATUS_RE.fullmatch(status_line)
    if not m:
        raise _Malformed
    code = int(m.group(2))
    if not 100 <= code <= 599:
        raise _Malformed
    info = _Head(http10=m.group(1) == b"0")
    while True:
        try:
            line, pos = _line(data, pos)
        except _Incomplete:
            if len(data) - start > MAX_HEAD:
                raise _Malformed from None
            raise
        if line == b"":
            break
        name, sep, value = line.partition(b":")
        if not sep or not name or any(ch not in TCHAR for ch in name):
            raise _Malformed
        lname = name.lower()
        if lname == b"content-length":
            m2 = _CL_RE.fullmatch(value)
            if not m2 or int(m2.group(1)) > MAX_BODY:
                raise _Malformed
            cl = int(m2.group(1))
            if info.cl is not None and info.cl != cl:
                raise _Malformed
            info.cl = cl
        elif lname == b"transfer-encoding":
            info.te += _tokens(value)
        elif lname == b"connection":
            info.conn += _tokens(value)
    if pos - start > MAX_HEAD:
        raise _Malformed
    return code, info, pos


def _parse_chunked(data: bytes, pos: int) -> int:
    while True:
        line, pos = _line(data, pos)
        m = _CHUNK_RE.fullmatch(line)
        if not m:
            raise _Malformed
        size = int(m.group(1), 16)
        if size > MAX_BODY:
            raise _Malformed
        if size == 0:
            break
        if len(data) - pos < size:
            raise _Incomplete
        pos += size
        if data[pos : pos + 1] == b"\n":
            pos += 1
        elif data[pos : pos + 2] == b"\r\n":
            pos += 2
        elif data[pos:] in (b"", b"\r"):
            raise _Incomplete
        else:
            raise _Malformed
    while True:  # trailers, unchecked, up to the empty line
        line, pos = _line(data, pos)
        if line == b"":
            return pos


def parse_response(data: bytes, no_body: bool = False, eof: bool = False) -> RefResult:
    """Parse one response from the start of ``data``; ``eof``: the peer closed after it."""
    pos = 0
    status = 0
    try:
        while True:
            status, info, pos = _parse_head(data, pos)
            if 100 <= status < 200 and status != 101:
                continue
            break
        conn = info.conn
        if info.http10:
            ka = b"keep-alive" in conn and b"close" not in conn
        else:
            ka = b"close" not in conn
        if no_body or status in (101, 204, 304):
            return RefResult(
                complete=True, status=status, keep_alive=ka and status != 101, consumed=pos
            )
        if info.te:
            if info.te[-1] == b"chunked":
                end = _parse_chunked(data, pos)
                return RefResult(complete=True, status=status, keep_alive=ka, consumed=end)
            raise _UntilClose
        if info.cl is not None:
            if len(data) - pos < info.cl:
                raise _Incomplete
            return RefResult(complete=True, status=status, keep_alive=ka, consumed=pos + info.cl)
        raise _UntilClose
    except _Malformed:
        return ERROR
    except _UntilClose:
        if eof:
            return RefResult(complete=True, status=status, keep_alive=False, consumed=len(data))
        return RefResult(status=status, consumed=len(data))
    except _Incomplete:
        if eof:
            return ERROR
        return RefResult(status=status, consumed=len(data))


class _UntilClose(Exception):
    pass
