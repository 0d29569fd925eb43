"""Slow, obvious pure-Python reference for the C WebSocket codec in ``_fastpath/ws.pxd``.

The server side of RFC 6455, as far as the tests need it: encode unmasked server frames
(also malformed ones), decode the masked frames a client sends, decode a whole buffer of
server frames into the events the C decoder must report (same checks, same order, same
reasons), compute the accept value and judge a handshake response head. Everything works on
a complete buffer at once; the tests feed the C code the same bytes split anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE = 8192
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
OPCODES = {CONT, TEXT, BINARY, CLOSE, PING, PONG}

Event = tuple[str, Any]


# ---------------------------------------------------------------- frames


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def server_frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    mask_key: bytes | None = None,
    length_bits: int | None = None,
) -> bytes:
    """One frame as a server sends it (unmasked unless ``mask_key``), any length encoding.

    ``length_bits`` forces the 7-, 16- or 64-bit length form (default: the shortest).
    """
    n = len(payload)
    if length_bits is None:
        length_bits = 7 if n < 126 else 16 if n < 65536 else 64
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    m = 0x80 if mask_key is not None else 0
    if length_bits == 7:
        head += bytes([m | n])
    elif length_bits == 16:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if mask_key is not None:
        return head + mask_key + mask_bytes(payload, mask_key)
    return head + payload


def message_frames(opcode: int, payload: bytes, cuts: list[int]) -> list[bytes]:
    """A data message as frames: split at the (sorted, distinct) ``cuts`` inside the payload."""
    points = sorted({c for c in cuts if 0 < c < len(payload)})
    pieces = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)], strict=True)]
    return [
        server_frame(opcode if i == 0 else CONT, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]


def decode_client_frames(data: bytes) -> list[tuple[bool, int, bytes]]:
    """(fin, opcode, unmasked payload) of each frame; ValueError unless all are masked + whole."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            raise ValueError("truncated header")
        b0, b1 = data[pos], data[pos + 1]
        if not b1 & 0x80:
            raise ValueError("client frame not masked")
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack_from(">H", data, pos)
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from(">Q", data, pos)
            pos += 8
        key = data[pos : pos + 4]
        pos += 4
        if len(key) < 4 or len(data) - pos < n:
            raise ValueError("truncated frame")
        out.append((bool(b0 & 0x80), b0 & 0x0F, mask_bytes(data[pos : pos + n], key)))
        pos += n
    return out


def _header_error(b0: int, b1: int, fragmented: bool) -> str | None:
    """The checks the C decoder makes on a frame's first two bytes, in its order."""
    fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
    if b0 & 0x70:
        return "reserved bits set (no extension was negotiated)"
    if op not in OPCODES:
        return "unknown opcode"
    if b1 & 0x80:
        return "masked frame from the server"
    if op >= CLOSE:
        if not fin:
            return "fragmented control frame"
        if n > 125:
            return "control frame payload over 125 bytes"
        if op == CLOSE and n == 1:
            return "close frame with a 1-byte payload"
    elif op == CONT and not fragmented:
        return "continuation frame without a message in progress"
    elif op != CONT and fragmented:
        return "new data frame inside a fragmented message"
    return None


def decode_server_stream(data: bytes, limit: int) -> list[Event]:
    """Events of a buffer of server frames: up to the first error, a close, or the end of data."""
    events: list[Event] = []
    message = b""
    message_op: int | None = None  # opcode of the open fragmented message
    pos = 0
    while len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        error = _header_error(b0, b1, message_op is not None)
        if error:
            return [*events, ("error", error)]
        fin, op, n = bool(b0 & 0x80), b0 & 0x0F, b1 & 0x7F
        ext = {126: 2, 127: 8}.get(n, 0)
        if len(data) - pos < 2 + ext:
            break
        if ext:
            n = int.from_bytes(data[pos + 2 : pos + 2 + ext], "big")
            if n >> 63:
                return [*events, ("error", "64-bit payload length with the high bit set")]
        if op < CLOSE and len(message) + n > limit:
            return [*events, ("error", "message too big")]
        start = pos + 2 + ext
        if len(data) - start < n:
            break
        payload = data[start : start + n]
        pos = start + n
        if op == PING:
            events.append(("ping", payload))
        elif op == PONG:
            events.append(("pong", payload))
        elif op == CLOSE:
            code = int.from_bytes(payload[:2], "big") if payload else 1005
            events.append(("close", code))
            break  # whatever follows a close frame is ignored
        else:
            message += payload
            if op != CONT:
                message_op = op
            if fin:
                events.append(("text" if message_op == TEXT else "binary", message))
                message, message_op = b"", None
    return events


# ---------------------------------------------------------------- handshake


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


_STATUS_RE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: .*)?", re.S)
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def handshake_request(key: str, host: str = "localhost", path: str = "/") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def handshake_response(accept: str, extra: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accept.encode(),
    ]
    return eol.join(lines) + eol + extra + eol


def parse_handshake(data: bytes, expected: str) -> tuple[int, int, str | None, int]:
    """(rc, consumed, error, status) as the C ``ws_handshake_feed`` reports for this buffer."""
    status = 0
    prefix = data[:5]
    if prefix != b"HTTP/"[: len(prefix)]:
        return -1, 0, "not an HTTP response", status
    upgrade_ok = upgrade_bad = conn = accept_ok = accept_bad = extension = False
    pos = 0
    first = True
    while True:
        j = data.find(b"\n", pos, MAX_HANDSHAKE)
        if j < 0:
            if len(data) > MAX_HANDSHAKE:
                return -1, 0, "response head too big", status
            return 0, len(data), None, status
        line = data[pos:j]
        line = line[:-1] if line.endswith(b"\r") else line
        pos = j + 1
        if first:
            first = False
            m = _STATUS_RE.fullmatch(line)
            if not m:
                return -1, 0, "malformed status line", status
            status = int(m.group(1))
            if status != 101:
                return -1, 0, "status is not 101", status
            continue
        if not line:
            break
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN_RE.fullmatch(name):
            return -1, 0, "malformed header line", status
        name, value = name.lower(), value.strip(b" \t")
        if name == b"upgrade":
            if value.lower() == b"websocket":
                upgrade_ok = True
            else:
                upgrade_bad = True
        elif name == b"connection":
            conn |= any(t.strip(b" \t").lower() == b"upgrade" for t in value.split(b","))
        elif name == b"sec-websocket-accept":
            if value and value == expected.encode():
                accept_ok = True
            else:
                accept_bad = True
        elif name == b"sec-websocket-extensions":
            extension |= bool(value)
    if upgrade_bad or not upgrade_ok:
        return -1, 0, "missing or wrong Upgrade header", status
    if not conn:
        return -1, 0, "Connection header lacks the upgrade token", status
    if accept_bad or not accept_ok:
        return -1, 0, "missing or wrong Sec-WebSocket-Accept", status
    if extension:
        return -1, 0, "server chose an extension we did not offer", status
    return 1, pos, None, status
