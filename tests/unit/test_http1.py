"""The C HTTP/1.1 response parser (``_fastpath.http1``): hand-written cases and property tests
against the pure-Python reference ``_ref_http``."""

from __future__ import annotations

import pytest
from _ref_http import ERROR, RefResult, parse_response  # tests/unit is on sys.path (rootdir-less)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fastpath.http1 import HttpParseError, ResponseParser


def run_c(pieces: list[bytes], no_body: bool = False, eof: bool = False) -> RefResult:
    """Feed the pieces to the C parser; same result shape as the reference."""
    p = ResponseParser(no_body)
    consumed = 0
    try:
        for piece in pieces:
            if p.complete:
                break
            n = p.feed(piece)
            assert 0 <= n <= len(piece)
            if not p.complete:
                assert n == len(piece)
            consumed += n
        if eof and not p.complete:
            p.feed_eof()
            assert p.complete
    except HttpParseError:
        assert p.error
        return ERROR
    if p.complete:
        return RefResult(
            complete=True, status=p.status_code, keep_alive=p.keep_alive, consumed=consumed
        )
    return RefResult(consumed=consumed)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for c in [*points, len(data)]:
        out.append(data[prev:c])
        prev = c
    return out


def same(c: RefResult, ref: RefResult) -> bool:
    if ref.error or c.error:
        return ref.error == c.error
    if not ref.complete:
        return not c.complete and c.consumed == ref.consumed
    return c == ref


# ---------------------------------------------------------------- hand-written cases


def parse_all(data: bytes, no_body: bool = False, eof: bool = False) -> RefResult:
    c = run_c([data], no_body, eof)
    bytewise = run_c([data[i : i + 1] for i in range(len(data))], no_body, eof)
    ref = parse_response(data, no_body, eof)
    assert same(c, ref), (c, ref)
    assert same(bytewise, ref), (bytewise, ref)
    return c


def test_content_length_keep_alive_and_leftover() -> None:
    r = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nNEXT")
    assert r == RefResult(complete=True, status=200, keep_alive=True, consumed=41)


def test_empty_content_length_and_no_reason() -> None:
    r = parse_all(b"HTTP/1.1 204\r\n\r\n")
    assert r.complete and r.status == 204 and r.keep_alive
    r = parse_all(b"HTTP/1.1 200 \r\ncontent-length:0\r\n\r\n")
    assert r.complete and r.consumed == 35


def test_chunked_with_extensions_and_trailers() -> None:
    body = b"5;name=val\r\nhello\r\na\r\n0123456789\r\n0;last\r\nX-Trailer: 1\r\nY: 2\r\n\r\n"
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    r = parse_all(data + b"garbage")
    assert r == RefResult(complete=True, status=200, keep_alive=True, consumed=len(data))


def test_chunked_must_be_last_coding() -> None:
    r = parse_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc")
    assert not r.complete
    r = parse_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc", eof=True)
    assert r.complete and not r.keep_alive and r.consumed == 56


def test_transfer_encoding_overrides_content_length() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"
    assert parse_all(data).consumed == len(data)


def test_connection_close_and_http10() -> None:
    assert not parse_all(
        b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
    ).keep_alive
    assert not parse_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert parse_all(
        b"HTTP/1.0 200 OK\r\nConnection: foo, Keep-Alive\r\nContent-Length: 0\r\n\r\n"
    ).keep_alive
    r = parse_all(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive,   close  \r\nContent-Length: 0\r\n\r\n"
    )
    assert not r.keep_alive


def test_read_until_close() -> None:
    data = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nsome body"
    assert not parse_all(data).complete
    r = parse_all(data, eof=True)
    assert r.complete and not r.keep_alive and r.consumed == len(data)


def test_no_body_responses() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
    r = parse_all(head, no_body=True)
    assert r.complete and r.consumed == len(head) and r.keep_alive
    for code in (204, 304):
        data = b"HTTP/1.1 %d X\r\nContent-Length: 50\r\n\r\n" % code
        assert parse_all(data).consumed == len(data)
    r = parse_all(b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\n\r\n")
    assert r.complete and not r.keep_alive


def test_interim_responses_are_skipped() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early\r\nLink: x\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx"
    )
    r = parse_all(data)
    assert r == RefResult(complete=True, status=201, keep_alive=True, consumed=len(data))


def test_bare_lf_line_endings() -> None:
    r = parse_all(b"HTTP/1.1 404 Not Found\nContent-Length: 2\n\nno")
    assert r.complete and r.status == 404


def test_eof_before_complete_is_an_error() -> None:
    for data in (b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"):
        assert parse_all(data, eof=True).error
    p = ResponseParser()
    with pytest.raises(HttpParseError):
        p.feed_eof()


@pytest.mark.parametrize(
    "data",
    [
        b"HTTX/1.1 200 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 99 OK\r\n\r\n",
        b"HTTP/1.1 600 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3 4\r\n",
        b"HTTP/1.1 200\rX\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\rX\n\r\n",
    ],
)
def test_malformed(data: bytes) -> None:
    assert parse_all(data, eof=True).error
    p = ResponseParser()
    with pytest.raises(HttpParseError):
        p.feed(data)
        p.feed_eof()
    with pytest.raises(HttpParseError):
        p.feed(b"more")


def test_head_size_limit() -> None:
    data = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert run_c([data]).error
    assert run_c([data[:40000], data[40000:]]).error
    assert parse_response(data).error


def test_reset_and_memoryview_input() -> None:
    p = ResponseParser()
    assert p.feed(memoryview(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) == 38
    assert p.complete
    assert p.feed(b"x") == 0
    p.reset(no_body=True)
    assert not p.complete and p.status_code == 0
    assert p.feed(bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")) == 38
    assert p.complete


# ---------------------------------------------------------------- property tests

_reason = st.sampled_from([b"", b" ", b" OK", b" Not Found", b" Weird\rReason"])
_eol = st.sampled_from([b"\r\n", b"\n"])
_ows = st.sampled_from([b"", b" ", b"\t", b"  \t"])


def _case(draw_name: bytes, rnd: st.DataObject) -> bytes:
    return bytes(
        ch ^ 0x20 if rnd.draw(st.booleans()) and chr(ch).isalpha() else ch for ch in draw_name
    )


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, bool]:
    eol = draw(_eol)
    out = b""
    if draw(st.integers(0, 4)) == 0:
        out += b"HTTP/1.1 100 Continue" + eol + b"X: y" + eol + eol
    minor = draw(st.sampled_from([b"0", b"1", b"1", b"1"]))
    status = draw(st.sampled_from([200, 200, 201, 204, 301, 304, 404, 500, 503, 101]))
    out += b"HTTP/1." + minor + b" %d" % status + draw(_reason) + eol
    headers: list[bytes] = []
    framing = draw(st.sampled_from(["cl", "cl", "chunked", "close", "te-other"]))
    body = draw(st.binary(max_size=300))
    name_case = st.data()
    rnd = draw(name_case)
    if framing == "cl":
        headers.append(
            _case(b"Content-Length", rnd) + b":" + draw(_ows) + b"%d" % len(body) + draw(_ows)
        )
        payload = body
    elif framing == "chunked":
        codings = draw(
            st.sampled_from([b"chunked", b"gzip, chunked", b" chunked ", b"gzip,,chunked"])
        )
        headers.append(_case(b"Transfer-Encoding", rnd) + b":" + draw(_ows) + codings)
        payload = b""
        rest = body
        while rest:
            k = draw(st.integers(1, len(rest)))
            ext = draw(st.sampled_from([b"", b";a=b", b" ;x", b';q="1"']))
            size = (b"%x" if draw(st.booleans()) else b"%X") % k
            payload += size + ext + draw(_eol) + rest[:k] + draw(_eol)
            rest = rest[k:]
        payload += b"0" + draw(st.sampled_from([b"", b";end"])) + draw(_eol)
        for _ in range(draw(st.integers(0, 2))):
            payload += b"Trailer-%d: v" % draw(st.integers(0, 9)) + draw(_eol)
        payload += draw(_eol)
    elif framing == "te-other":
        headers.append(b"Transfer-Encoding: gzip")
        payload = body
    else:
        payload = body
    conn = draw(
        st.sampled_from([None, b"close", b"keep-alive", b"Keep-Alive", b"foo, close", b"upgrade"])
    )
    if conn is not None:
        headers.append(_case(b"Connection", rnd) + b":" + draw(_ows) + conn + draw(_ows))
    for i in range(draw(st.integers(0, 4))):
        headers.append(
            b"X-Extra-%d:" % i + draw(_ows) + draw(st.binary(max_size=40)).replace(b"\n", b"")
        )
    headers = draw(st.permutations(headers))
    out += b"".join(h + eol for h in headers) + eol + payload
    no_body = draw(st.integers(0, 5)) == 0
    return out, no_body


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    responses(), st.lists(st.integers(0, 10_000), max_size=8), st.binary(max_size=10), st.booleans()
)
def test_random_valid_responses_split_anywhere(
    case: tuple[bytes, bool], cuts: list[int], tail: bytes, eof: bool
) -> None:
    data, no_body = case
    ref = parse_response(data, no_body, eof)
    assert not ref.error
    got = run_c(split(data, cuts), no_body, eof)
    assert same(got, ref), (got, ref)
    if ref.complete and not eof:
        # Bytes after a complete response are not consumed.
        got2 = run_c(split(data + tail, cuts), no_body)
        ref2 = parse_response(data + tail, no_body)
        assert same(got2, ref2) and got2.consumed == ref.consumed


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bool]:
    data, no_body = draw(responses())
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        pos = draw(st.integers(0, len(buf) - 1))
        what = draw(st.integers(0, 2))
        byte = draw(st.sampled_from([0, 9, 10, 13, 32, 44, 58, 59, 48, 65, 0x7F, 0xFF]))
        if what == 0:
            buf[pos] = byte
        elif what == 1:
            buf.insert(pos, byte)
        else:
            del buf[pos]
    return bytes(buf), no_body


@settings(max_examples=100, deadline=None)
@given(mutated(), st.lists(st.integers(0, 10_000), max_size=6), st.booleans())
def test_mutated_input_matches_reference(
    case: tuple[bytes, bool], cuts: list[int], eof: bool
) -> None:
    data, no_body = case
    ref = parse_response(data, no_body, eof=True)
    got = run_c(split(data, cuts), no_body, eof=True)
    assert same(got, ref), (data, got, ref)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=5))
def test_garbage_never_crashes(data: bytes, cuts: list[int]) -> None:
    got = run_c(split(b"HTTP/1.1 200 OK\r\n" + data, cuts), eof=True)
    ref = parse_response(b"HTTP/1.1 200 OK\r\n" + data, eof=True)
    assert same(got, ref), (got, ref)
