"""The C WebSocket codec (``_fastpath.ws``): hand-written cases and property tests against the
pure-Python reference ``_ref_ws``."""

from __future__ import annotations

import base64
import os

import _ref_ws as ref  # tests/unit is on sys.path (rootdir-less)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fastpath.ws import (
    Decoder,
    Handshake,
    accept_for,
    encode_frame,
    frame_header,
    key_encode,
    mask,
)

LIMIT = 1 << 16
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def decode_c(pieces: list[bytes], limit: int = LIMIT) -> list[tuple]:
    d = Decoder(limit)
    events: list[tuple] = []
    for piece in pieces:
        events += d.feed(piece)
        if events and events[-1][0] == "error":
            break
    return events


def decode_all(data: bytes, limit: int = LIMIT) -> list[tuple]:
    """Decode whole, byte by byte and by the reference; all three must agree."""
    whole = decode_c([data], limit)
    bytewise = decode_c([data[i : i + 1] for i in range(len(data))], limit)
    expected = ref.decode_server_stream(data, limit)
    assert whole == expected, (whole, expected)
    assert bytewise == expected, (bytewise, expected)
    return whole


# ---------------------------------------------------------------- keys and the accept value


def test_accept_for_rfc_example() -> None:
    assert accept_for(RFC_KEY) == RFC_ACCEPT
    assert accept_for(RFC_KEY.encode()) == RFC_ACCEPT
    assert ref.accept_for(RFC_KEY) == RFC_ACCEPT


@settings(max_examples=100)
@given(st.binary(min_size=16, max_size=16))
def test_key_encode_and_accept_match_reference(raw: bytes) -> None:
    key = key_encode(raw)
    assert key == base64.b64encode(raw).decode() and len(key) == 24
    assert accept_for(key) == ref.accept_for(key)


def test_key_encode_wants_16_bytes_and_accept_limits_the_key() -> None:
    with pytest.raises(ValueError):
        key_encode(b"short")
    assert accept_for("k" * 128) == ref.accept_for("k" * 128)
    with pytest.raises(ValueError):
        accept_for("k" * 129)


# ---------------------------------------------------------------- client frames


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70001])
def test_client_frames_all_length_classes(n: int) -> None:
    payload = os.urandom(n)
    frame = encode_frame(2, payload, 0xA1B2C3D4)
    size = 2 + (0 if n < 126 else 2 if n < 65536 else 8) + 4
    assert len(frame) == size + n
    assert frame[size - 4 : size] == bytes.fromhex("a1b2c3d4")
    assert ref.decode_client_frames(frame) == [(True, 2, payload)]


def test_frame_header_shapes() -> None:
    assert frame_header(1, 0, 0x01020304) == b"\x81\x80\x01\x02\x03\x04"
    assert frame_header(9, 125, 0) == b"\x89\xfd\x00\x00\x00\x00"
    assert frame_header(2, 126, 0)[:4] == b"\x82\xfe\x00\x7e"
    assert frame_header(2, 65535, 0)[:4] == b"\x82\xfe\xff\xff"
    assert frame_header(2, 65536, 0)[:10] == b"\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00"
    assert frame_header(2, 1 << 40, 0)[:10] == b"\x82\xff\x00\x00\x01\x00\x00\x00\x00\x00"
    assert frame_header(1, 3, 0, fin=False)[0] == 0x01


@settings(max_examples=300)
@given(
    st.binary(max_size=300),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 300), max_size=6),
    st.sampled_from([1, 2, 8, 9, 10]),
)
def test_piecewise_masking_equals_whole(
    payload: bytes, key: int, cuts: list[int], opcode: int
) -> None:
    key_bytes = key.to_bytes(4, "big")
    whole = mask(payload, key, 0)
    assert whole == ref.mask_bytes(payload, key_bytes)
    pieces = split(payload, cuts)
    offsets = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
    assert b"".join(mask(p, key, off) for p, off in zip(pieces, offsets, strict=True)) == whole
    frame = frame_header(opcode, len(payload), key) + whole
    assert ref.decode_client_frames(frame) == [(True, opcode, payload)]
    assert mask(whole, key, 0) == payload


def test_masking_a_large_payload_at_odd_offsets() -> None:
    payload = os.urandom(65536 + 13)
    key = 0xDEADBEEF
    for start in (1, 3, 7, 8, 9):
        got = mask(payload[:start], key, 0) + mask(payload[start:], key, start)
        assert got == ref.mask_bytes(payload, key.to_bytes(4, "big"))


# ---------------------------------------------------------------- decoder: hand-written cases


def test_messages_control_frames_and_close() -> None:
    data = (
        ref.server_frame(ref.TEXT, b"hello")
        + ref.server_frame(ref.PING, b"are you there")
        + ref.server_frame(ref.BINARY, b"\x00\x01", fin=False)
        + ref.server_frame(ref.PONG, b"")
        + ref.server_frame(ref.CONT, b"\x02", fin=False)
        + ref.server_frame(ref.CONT, b"", fin=True)
        + ref.server_frame(ref.TEXT, b"")
        + ref.server_frame(ref.CLOSE, b"\x03\xe8bye")
        + b"anything after the close is ignored"
    )
    assert decode_all(data) == [
        ("text", b"hello"),
        ("ping", b"are you there"),
        ("pong", b""),
        ("binary", b"\x00\x01\x02"),
        ("text", b""),
        ("close", 1000),
    ]
    d = Decoder(LIMIT)
    d.feed(data)
    assert d.close_reason == b"bye"


def test_close_without_code_is_1005() -> None:
    assert decode_all(ref.server_frame(ref.CLOSE)) == [("close", 1005)]


def test_text_is_not_utf8_validated() -> None:
    assert decode_all(ref.server_frame(ref.TEXT, b"\xff\xfe")) == [("text", b"\xff\xfe")]


def test_non_minimal_lengths_are_accepted() -> None:
    data = ref.server_frame(ref.TEXT, b"abc", length_bits=16) + ref.server_frame(
        ref.BINARY, b"xyz", length_bits=64
    )
    assert decode_all(data) == [("text", b"abc"), ("binary", b"xyz")]


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_server_length_classes(n: int) -> None:
    payload = os.urandom(n)
    data = ref.server_frame(ref.BINARY, payload)
    assert decode_c([data], limit=1 << 20) == [("binary", payload)]
    assert decode_c(split(data, [1, 2, 3, 5, 9, 10, 11, 700]), limit=1 << 20) == [
        ("binary", payload)
    ]


def test_step_returns_at_the_first_event_and_drops_an_untaken_message() -> None:
    first = ref.server_frame(ref.TEXT, b"one")
    data = first + ref.server_frame(ref.TEXT, b"two") + ref.server_frame(ref.PING, b"p")
    d = Decoder(LIMIT)
    assert d.step(data) == (("text", b"one"), len(first))
    # The message is not marked done: the next call drops it before decoding on.
    assert d.step(data[len(first) :]) == (("text", b"two"), len(first))
    assert d.step(data[2 * len(first) :]) == (("ping", b"p"), 3)
    assert d.step(b"") == (None, 0)
    assert d.step(b"\x81") == (None, 1)
    assert d.step(b"\x01") == (None, 1)
    assert d.step(b"xyz") == (("text", b"x"), 1)


def test_limit_counts_the_whole_fragmented_message() -> None:
    exact = b"".join(ref.message_frames(ref.BINARY, b"a" * 100, [30, 60]))
    assert decode_all(exact, limit=100) == [("binary", b"a" * 100)]
    over = b"".join(ref.message_frames(ref.BINARY, b"a" * 101, [30, 60]))
    assert decode_all(over, limit=100) == [("error", "message too big")]
    # Control frames do not count against the limit.
    assert decode_all(ref.server_frame(ref.PING, b"p" * 125), limit=10) == [("ping", b"p" * 125)]


def test_big_buffers_are_released_after_their_message() -> None:
    d = Decoder(1 << 20)
    assert d.feed(ref.server_frame(ref.BINARY, b"b" * 100_000)) == [("binary", b"b" * 100_000)]
    assert d.buffer_capacity == 0
    assert d.feed(ref.server_frame(ref.BINARY, b"s" * 1000)) == [("binary", b"s" * 1000)]
    assert 0 < d.buffer_capacity <= 65536


def _frame(b0: int, b1: int, rest: bytes = b"") -> bytes:
    return bytes([b0, b1]) + rest


ERROR_CASES = [
    (
        ref.server_frame(ref.TEXT, b"hi", mask_key=b"abcd"),
        "masked frame from the server",
    ),
    (ref.server_frame(ref.TEXT, b"hi", rsv=4), "reserved bits set (no extension was negotiated)"),
    (ref.server_frame(ref.TEXT, b"hi", rsv=1), "reserved bits set (no extension was negotiated)"),
    (_frame(0x83, 0), "unknown opcode"),
    (_frame(0x8B, 0), "unknown opcode"),
    (_frame(0x89, 126, b"\x00\x7e" + b"x" * 126), "control frame payload over 125 bytes"),
    (_frame(0x88, 127, bytes(8)), "control frame payload over 125 bytes"),
    (ref.server_frame(ref.PING, b"x", fin=False), "fragmented control frame"),
    (ref.server_frame(ref.CONT, b"x"), "continuation frame without a message in progress"),
    (
        ref.server_frame(ref.TEXT, b"a", fin=False) + ref.server_frame(ref.BINARY, b"b"),
        "new data frame inside a fragmented message",
    ),
    (_frame(0x82, 127, b"\x80" + bytes(7)), "64-bit payload length with the high bit set"),
    (ref.server_frame(ref.BINARY, b"z" * (LIMIT + 1)), "message too big"),
    (_frame(0x82, 127, b"\x00\x00\x00\x01\x00\x00\x00\x00"), "message too big"),
    (_frame(0x88, 1, b"\x03"), "close frame with a 1-byte payload"),
]


@pytest.mark.parametrize(("data", "reason"), ERROR_CASES)
def test_protocol_errors(data: bytes, reason: str) -> None:
    prefix = ref.server_frame(ref.TEXT, b"ok") + ref.server_frame(ref.PING, b"")
    assert decode_all(prefix + data) == [("text", b"ok"), ("ping", b""), ("error", reason)]
    d = Decoder(LIMIT)
    d.feed(prefix + data)
    assert d.error
    # The error is sticky and consumes nothing.
    assert d.step(ref.server_frame(ref.TEXT, b"more")) == (("error", reason), 0)


# ---------------------------------------------------------------- decoder: property tests


@st.composite
def server_streams(draw: st.DrawFn) -> tuple[bytes, list[tuple]]:
    """Random messages, fragmented anywhere, with control frames in between and inside."""
    frames: list[bytes] = []
    events: list[tuple] = []

    def control() -> None:
        op = draw(st.sampled_from([ref.PING, ref.PONG]))
        payload = draw(st.binary(max_size=125))
        frames.append(ref.server_frame(op, payload))  # a control frame's length is 7-bit
        events.append(("ping" if op == ref.PING else "pong", payload))

    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 3)) == 0:
            control()
            continue
        op = draw(st.sampled_from([ref.TEXT, ref.BINARY]))
        size = draw(st.sampled_from([0, 1, 5, 125, 126, 127, 300, 1000, 70_000]))
        payload = draw(st.binary(min_size=min(size, 64), max_size=64)) * (size // 64 + 1)
        payload = payload[:size]
        cuts = draw(st.lists(st.integers(0, max(size, 1)), max_size=4))
        pieces = ref.message_frames(op, payload, cuts)
        for i, frame in enumerate(pieces):
            frames.append(frame)
            if i < len(pieces) - 1 and draw(st.integers(0, 3)) == 0:
                control()
        if draw(st.booleans()) and len(pieces) == 1:
            frames[-1] = ref.server_frame(op, payload, length_bits=draw(_length_form(payload)))
        events.append(("text" if op == ref.TEXT else "binary", payload))
    if draw(st.booleans()):
        code = draw(st.sampled_from([None, 1000, 1001, 4000, 65535]))
        reason = draw(st.binary(max_size=20)) if code is not None else b""
        body = b"" if code is None else code.to_bytes(2, "big") + reason
        frames.append(ref.server_frame(ref.CLOSE, body))
        frames.append(draw(st.binary(max_size=20)))  # ignored
        events.append(("close", 1005 if code is None else code))
    return b"".join(frames), events


def _length_form(payload: bytes) -> st.SearchStrategy[int]:
    if len(payload) < 126:
        return st.sampled_from([7, 16, 64])
    return st.sampled_from([16, 64] if len(payload) < 65536 else [64])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(server_streams(), st.lists(st.integers(0, 200_000), max_size=10))
def test_random_streams_split_anywhere(case: tuple[bytes, list[tuple]], cuts: list[int]) -> None:
    data, events = case
    assert ref.decode_server_stream(data, 1 << 20) == events
    assert decode_c(split(data, cuts), limit=1 << 20) == events


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    data, _ = draw(server_streams())
    buf = bytearray(data[:3000])
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        pos = draw(st.integers(0, min(len(buf) - 1, 40)))
        what = draw(st.integers(0, 2))
        byte = draw(st.integers(0, 255))
        if what == 0:
            buf[pos] = byte
        elif what == 1:
            buf.insert(pos, byte)
        else:
            del buf[pos]
    return bytes(buf)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_streams(), st.lists(st.integers(0, 3000), max_size=6), st.sampled_from([50, LIMIT]))
def test_mutated_streams_match_reference(data: bytes, cuts: list[int], limit: int) -> None:
    assert decode_c(split(data, cuts), limit) == ref.decode_server_stream(data, limit)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_garbage_matches_reference(data: bytes, cuts: list[int]) -> None:
    assert decode_c(split(data, cuts), 100) == ref.decode_server_stream(data, 100)


# ---------------------------------------------------------------- handshake


def handshake_c(pieces: list[bytes], expected: str) -> tuple[int, int, str | None, int]:
    h = Handshake(expected)
    consumed = status = 0
    for piece in pieces:
        rc, n, error, status = h.feed(piece)
        consumed += n
        if rc != 0:
            return rc, consumed if rc == 1 else 0, error, status
        assert n == len(piece)
    return 0, consumed, None, status


def handshake_all(data: bytes, expected: str = RFC_ACCEPT) -> tuple[int, int, str | None, int]:
    """Whole, split at every byte (two pieces) and by the reference: all must agree."""
    want = ref.parse_handshake(data, expected)
    assert handshake_c([data], expected) == want
    for i in range(len(data) + 1):
        assert handshake_c([data[:i], data[i:]], expected) == want, i
    assert handshake_c([data[i : i + 1] for i in range(len(data))], expected) == want
    return want


def test_valid_handshake_and_the_frames_after_it() -> None:
    head = ref.handshake_response(RFC_ACCEPT)
    frames = ref.server_frame(ref.TEXT, b"hi")
    assert handshake_all(head + frames) == (1, len(head), None, 101)
    h = Handshake(RFC_ACCEPT)
    assert h.feed(head + frames) == (1, len(head), None, 101)
    assert h.feed(b"more") == (1, 0, None, 101)


@pytest.mark.parametrize(
    "head",
    [
        ref.handshake_response(RFC_ACCEPT, eol=b"\n"),
        b"HTTP/1.1 101\r\nuPgRaDe:WebSocket \r\nCONNECTION: keep-alive , UPGRADE\r\n"
        b"sec-websocket-accept:\t" + RFC_ACCEPT.encode() + b"\r\nServer: x\r\n"
        b"Sec-WebSocket-Extensions:\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nConnection: close\r\nConnection: upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n\r\n",
    ],
)
def test_valid_handshake_variants(head: bytes) -> None:
    assert handshake_all(head) == (1, len(head), None, 101)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "status is not 101"),
        (b"HTTP/1.1 426 Upgrade Required\r\n", "status is not 101"),
        (b"SSH-2.0-OpenSSH\r\n", "not an HTTP response"),
        (b"\r\n", "not an HTTP response"),
        (b"HTTP/2 101\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 1O1 Switching\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 101x\r\n\r\n", "malformed status line"),
        (
            ref.handshake_response(RFC_ACCEPT, extra=b"Bad Header: 1\r\n"),
            "malformed header line",
        ),
        (ref.handshake_response(RFC_ACCEPT, extra=b" folded\r\n"), "malformed header line"),
        (
            ref.handshake_response(RFC_ACCEPT).replace(b"Upgrade: websocket\r\n", b""),
            "missing or wrong Upgrade header",
        ),
        (
            ref.handshake_response(RFC_ACCEPT).replace(b"websocket", b"h2c"),
            "missing or wrong Upgrade header",
        ),
        (
            ref.handshake_response(RFC_ACCEPT, extra=b"Upgrade: h2c\r\n"),
            "missing or wrong Upgrade header",
        ),
        (
            ref.handshake_response(RFC_ACCEPT).replace(b"Connection: Upgrade", b"Connection: x"),
            "Connection header lacks the upgrade token",
        ),
        (
            ref.handshake_response(RFC_ACCEPT).replace(
                b"Connection: Upgrade", b"Connection: upgraded, up grade"
            ),
            "Connection header lacks the upgrade token",
        ),
        (ref.handshake_response(accept_for("other")), "missing or wrong Sec-WebSocket-Accept"),
        (ref.handshake_response(RFC_ACCEPT[:-1]), "missing or wrong Sec-WebSocket-Accept"),
        (
            ref.handshake_response(RFC_ACCEPT).replace(b"Sec-WebSocket-Accept", b"X-Accept"),
            "missing or wrong Sec-WebSocket-Accept",
        ),
        (
            ref.handshake_response(RFC_ACCEPT, extra=b"Sec-WebSocket-Extensions: x-foo\r\n"),
            "server chose an extension we did not offer",
        ),
    ],
)
def test_invalid_handshakes(data: bytes, reason: str) -> None:
    rc, _, error, status = handshake_all(data)
    assert (rc, error) == (-1, reason)
    if reason == "status is not 101":
        assert status in (200, 426)


def test_handshake_head_size_limit() -> None:
    head = ref.handshake_response(RFC_ACCEPT)
    pad = 8192 - len(head)
    fits = ref.handshake_response(RFC_ACCEPT, extra=b"X: " + b"a" * (pad - 5) + b"\r\n")
    assert len(fits) == 8192
    assert handshake_c([fits], RFC_ACCEPT) == (1, 8192, None, 101)
    assert ref.parse_handshake(fits, RFC_ACCEPT) == (1, 8192, None, 101)
    big = ref.handshake_response(RFC_ACCEPT, extra=b"X: " + b"a" * (pad - 4) + b"\r\n")
    want = (-1, 0, "response head too big", 101)
    assert handshake_c([big], RFC_ACCEPT) == want
    assert handshake_c([big[:8192], big[8192:]], RFC_ACCEPT) == want
    assert ref.parse_handshake(big, RFC_ACCEPT) == want
    # Exactly 8 KiB without the blank line yet: still waiting.
    assert handshake_c([big[:8192]], RFC_ACCEPT) == (0, 8192, None, 101)


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    extra = b"".join(
        draw(st.sampled_from([b"Server: x", b"Connection: keep-alive", b"Date: now", b"X:"])) + eol
        for _ in range(draw(st.integers(0, 3)))
    )
    buf = bytearray(ref.handshake_response(RFC_ACCEPT, extra=extra, eol=eol) + b"\x81\x00")
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(buf) - 1))
        byte = draw(st.sampled_from(list(b"\r\n :,\t0aU")))
        what = draw(st.integers(0, 2))
        if what == 0:
            buf[pos] = byte
        elif what == 1:
            buf.insert(pos, byte)
        else:
            del buf[pos]
    return bytes(buf)


@settings(max_examples=150, deadline=None)
@given(mutated_heads(), st.lists(st.integers(0, 300), max_size=5))
def test_mutated_handshakes_match_reference(data: bytes, cuts: list[int]) -> None:
    assert handshake_c(split(data, cuts), RFC_ACCEPT) == ref.parse_handshake(data, RFC_ACCEPT)
