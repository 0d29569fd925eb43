"""Slow, obvious pure-Python reference for the C extraction functions of ``_fastpath/extract.pxd``.

JSON goes through the standard ``json`` module: a document counts as valid when it is UTF-8 and
``json.loads`` accepts it without NaN/Infinity; objects keep the *first* of duplicate keys (as
the C scanner, which stops at the first match); keys and strings are compared as UTF-8 with
lone surrogates replaced by U+FFFD (what ``json_unescape`` produces). The HTTP helpers follow
the line grammar of ``http1.pxd`` (a line ends at LF, one CR before it belongs to the ending)
and cookies RFC 6265 section 5.2, written the plain way: split, strip, compare.
"""

from __future__ import annotations

import json
import re
from typing import Any


class _Outcome:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


INVALID = _Outcome("INVALID")
NOT_FOUND = _Outcome("NOT_FOUND")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CHUNK_RE = re.compile(rb"([0-9A-Fa-f]+)[ \t]*(;.*)?", re.S)
_MAX_AGE_RE = re.compile(rb"-?[0-9]+")
OWS = b" \t"


# ------------------------------------------------------------------------------------ JSON


def utf8(s: str) -> bytes:
    """A decoded JSON string as the C decoder writes it: lone surrogates become U+FFFD."""
    return _SURROGATE.sub("\ufffd", s).encode("utf-8")


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    for key, value in pairs:
        out.setdefault(utf8(key), value)
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(doc: bytes) -> Any:
    """Parse a JSON document the reference way; ValueError if it is not valid."""
    return json.loads(
        doc.decode("utf-8"), object_pairs_hook=_first_wins, parse_constant=_no_constants
    )


def lookup(doc: bytes, steps: list[tuple[int, bytes | int]]) -> Any:
    """The value at ``steps`` (from ``compile_json_path``), NOT_FOUND or INVALID."""
    try:
        value = loads(doc)
    except (ValueError, RecursionError):
        return INVALID
    for kind, arg in steps:
        if kind == 1:
            if not isinstance(value, dict) or arg not in value:
                return NOT_FOUND
            value = value[arg]
        else:
            if not isinstance(value, list) or not isinstance(arg, int) or arg >= len(value):
                return NOT_FOUND
            value = value[arg]
    return value


def canon(value: Any) -> Any:
    """A comparable form that tells 1 from 1.0 from True."""
    if isinstance(value, dict):
        return ("object", sorted((k, canon(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", [canon(v) for v in value])
    if isinstance(value, str):
        return ("string", utf8(value))
    return (type(value).__name__, value)


def render_path(steps: list[tuple[int, bytes | int]], dollar: bool = True) -> str:
    """A path string for ``steps``: dot form for plain keys, bracket form for the others."""
    out = "$" if dollar else ""
    for kind, arg in steps:
        if kind == 2:
            assert isinstance(arg, int)
            out += f"[{arg}]"
            continue
        assert isinstance(arg, bytes)
        key = arg.decode("utf-8")
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key) and (out or not dollar):
            out += ("." if out else "") + key
        elif '"' in key and "'" not in key:
            out += "['" + key.replace("\\", "\\\\") + "']"
        else:
            out += '["' + key.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out


# ------------------------------------------------------------------------------------ HTTP


def head_end(resp: bytes) -> int | None:
    m = re.search(rb"\n\r?\n", resp)
    return m.end() if m else None


def headers(head: bytes, name: bytes) -> list[bytes]:
    out = []
    pieces = head.split(b"\n")
    for piece in pieces[1:]:
        line = piece[:-1] if piece.endswith(b"\r") else piece
        if line == b"":
            break
        field, sep, value = line.partition(b":")
        if sep and field.lower() == name.lower():
            out.append(value.strip(OWS))
    return out


def is_chunked(head: bytes) -> bool:
    codings = [
        token.strip(OWS).lower()
        for value in headers(head, b"transfer-encoding")
        for token in value.split(b",")
        if token.strip(OWS)
    ]
    return bool(codings) and codings[-1] == b"chunked"


def dechunk(body: bytes) -> bytes | None:
    """Decode a chunked body (http1's chunk grammar); None if malformed or incomplete."""
    out = b""
    pos = 0
    while True:
        j = body.find(b"\n", pos)
        if j < 0:
            return None
        line = body[pos:j]
        line = line[:-1] if line.endswith(b"\r") else line
        pos = j + 1
        m = _CHUNK_RE.fullmatch(line)
        if not m or int(m.group(1), 16) > 1 << 50:
            return None
        size = int(m.group(1), 16)
        if size == 0:
            break
        if len(body) - pos < size:
            return None
        out += body[pos : pos + size]
        pos += size
        if body[pos : pos + 1] == b"\n":
            pos += 1
        elif body[pos : pos + 2] == b"\r\n":
            pos += 2
        else:
            return None
    while True:  # trailers, unchecked, up to the empty line
        j = body.find(b"\n", pos)
        if j < 0:
            return None
        if body[pos:j] in (b"", b"\r"):
            return out
        pos = j + 1


# --------------------------------------------------------------------------------- cookies


def parse_set_cookie(value: bytes) -> tuple[bytes, bytes, bool] | None:
    """(name, value, remove) of a Set-Cookie value, None if it is to be ignored."""
    pair, *attributes = value.split(b";")
    name, eq, cookie_value = pair.partition(b"=")
    name = name.strip(OWS)
    if not eq or not name:
        return None
    remove = False
    for attribute in attributes:
        attr_name, eq, attr_value = attribute.partition(b"=")
        attr_value = attr_value.strip(OWS)
        if eq and attr_name.strip(OWS).lower() == b"max-age" and _MAX_AGE_RE.fullmatch(attr_value):
            remove = int(attr_value) <= 0
    return name, cookie_value.strip(OWS), remove


def jar_pairs(jar: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) entries of a Cookie header value."""
    out = []
    for entry in jar.split(b";"):
        entry = entry.strip(OWS)
        if entry:
            name, _, value = entry.partition(b"=")
            out.append((name.strip(OWS), value.strip(OWS)))
    return out


def cookie_update(jar: bytes, set_cookie: bytes, cap: int) -> bytes | None:
    """Apply a Set-Cookie to a canonical jar (``a=1; b=2``); None if it would not fit."""
    parsed = parse_set_cookie(set_cookie)
    if parsed is None:
        return jar
    name, value, remove = parsed
    pairs = jar_pairs(jar)
    names = [n for n, _ in pairs]
    if remove:
        if name in names:
            del pairs[names.index(name)]
    elif name in names:
        pairs[names.index(name)] = (name, value)
    else:
        pairs.append((name, value))
    out = b"; ".join(n + b"=" + v for n, v in pairs)
    return None if len(out) > cap else out
