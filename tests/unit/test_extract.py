"""Response extraction (``_fastpath.extract``): hand-written cases and property tests against the
pure-Python reference ``_ref_extract``.

Fuzz tests place their input at the very end of a readable page followed by an unreadable one
(``_Guarded``), so a C function reading one byte past its length crashes the run instead of
passing unnoticed.
"""

from __future__ import annotations

import ctypes
import json
import mmap

import _ref_extract as ref  # tests/unit is on sys.path (rootdir-less)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fastpath import extract
from _fastpath.extract import (
    INDEX,
    KEY,
    MAX_DEPTH,
    JsonPath,
    Regex,
    chunked,
    compile_json_path,
    cookie_update,
    dechunk,
    dechunk_into,
    head_end,
    header,
    headers,
    json_path,
    unescape,
)


class _Guarded:
    """64 KiB of memory followed by a PROT_NONE page."""

    SIZE = 1 << 16

    def __init__(self) -> None:
        page = mmap.PAGESIZE
        self.map = mmap.mmap(-1, self.SIZE + page)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        holder = ctypes.c_char.from_buffer(self.map)
        addr = ctypes.addressof(holder)
        del holder
        if libc.mprotect(addr + self.SIZE, page, 0) != 0:  # 0: PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect")

    def place(self, data: bytes) -> memoryview:
        """``data`` copied so that its last byte is the last readable one (writable view)."""
        start = self.SIZE - len(data)
        self.map[start : self.SIZE] = data
        return memoryview(self.map)[start : self.SIZE]


_guard: list[_Guarded] = []


def guarded(data: bytes) -> memoryview:
    if not _guard:
        _guard.append(_Guarded())
    return _guard[0].place(data)


# ---------------------------------------------------------------------------- JSON paths


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", []),
        ("$.a.b", [(KEY, b"a"), (KEY, b"b")]),
        ("a.b", [(KEY, b"a"), (KEY, b"b")]),
        ("a[3]", [(KEY, b"a"), (INDEX, 3)]),
        ("$.items[0].id", [(KEY, b"items"), (INDEX, 0), (KEY, b"id")]),
        ("$[0][12]", [(INDEX, 0), (INDEX, 12)]),
        ('$["key with spaces"]', [(KEY, b"key with spaces")]),
        ("$['k'].x", [(KEY, b"k"), (KEY, b"x")]),
        ('$["a\\"b"]', [(KEY, b'a"b')]),
        ("$['it\\'s\\\\']", [(KEY, b"it's\\")]),
        ('$[""]', [(KEY, b"")]),
        ("$.caf\u00e9.$ref-1", [(KEY, "caf\u00e9".encode()), (KEY, b"$ref-1")]),
    ],
)
def test_compile_json_path(path: str, steps: list) -> None:
    assert compile_json_path(path) == steps
    assert JsonPath(path).path == path


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "empty"),
        ("$.", "expected a key name"),
        ("$.a b", "expected '.' or '['"),
        ("$..a", "expected a key name"),
        ("$a", "expected '.' or '['"),
        ("$[-1]", "negative indexes are not supported"),
        ("$[*]", "not supported"),
        ("$.*", "wildcards"),
        ("$[1:2]", "expected ']'"),
        ("$[x]", "expected an index or a quoted key"),
        ('$["abc]', "unterminated"),
        ("$['a'", "expected ']'"),
        ("$[0", "expected ']'"),
        ("$[99999999999999999999]", "index too large"),
        ("$['\ud800']", "not valid Unicode"),
    ],
)
def test_compile_json_path_errors(path: str, message: str) -> None:
    with pytest.raises(ValueError, match="bad JSON path") as err:
        compile_json_path(path)
    assert message in str(err.value)


DOC = (
    b'{"a": {"b": [10, "two", {"c": null}], "e": true}, "s": "x\\"y\\\\z\\/\\n\\u00e9'
    b'\\ud83d\\ude00", "k\\u00e9y": 1, "a\\"q": 2, "n": -1.5e+3, "dup": 1, "dup": 2}'
)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("$.a.b[0]", b"10"),
        ("$.a.b[1]", b"two"),
        ("$.a.b[2]", b'{"c": null}'),
        ("$.a.b[2].c", b"null"),
        ("$.a.e", b"true"),
        ("$.a.b", b'[10, "two", {"c": null}]'),
        ("$.s", 'x"y\\z/\n\u00e9\U0001f600'.encode()),
        ("$['k\u00e9y']", b"1"),
        ('$["a\\"q"]', b"2"),
        ("$.n", b"-1.5e+3"),
        ("$.dup", b"1"),  # the first of duplicate keys
        ("$.missing", None),
        ("$.a.b[3]", None),
        ("$.a.b[99]", None),
        ("$.a[0]", None),  # index into an object
        ("$.a.b.c", None),  # key into an array
        ("$.a.b[0].x", None),  # into a number
        ("$.s[0]", None),  # into a string
        ("$.a.e.x", None),
    ],
)
def test_json_path_cases(path: str, value: bytes | None) -> None:
    assert json_path(DOC, path) == value


def test_whole_document_scalars_and_whitespace() -> None:
    assert json_path(b" \t\r\n 42 \n", "$") == b"42"
    assert json_path(b'"abc"', "$") == b"abc"
    assert json_path(b"[ ]", "$") == b"[ ]"
    assert json_path(b"{ }", "$.a") is None
    assert json_path(b"[]", "$[0]") is None
    assert json_path(b'\n{\r"a"\t:\n[ 1 ,\r\n2 ] }', "a[1]") == b"2"
    assert json_path(b'{"a": 1} trailing garbage is not read', "$.a") == b"1"
    assert JsonPath("$.a").find(b'{"x": 1, "a": "v"}') == (0, 15, 16, True)


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (b"", "$"),
        (b"   ", "$"),
        (b"{", "$.a"),
        (b'{"a"', "$.a"),
        (b'{"a":', "$.a"),
        (b'{"a" 1}', "$.a"),
        (b'{"x": tru, "a": 1}', "$.a"),
        (b'{"x": 01, "a": 1}', "$.a"),
        (b'{"x": 1., "a": 1}', "$.a"),
        (b'{"x": -, "a": 1}', "$.a"),
        (b'{"x": 1e, "a": 1}', "$.a"),
        (b'{"x": [1,], "a": 1}', "$.a"),
        (b'{"x": 1,, "a": 1}', "$.a"),
        (b'{"x": "\x01", "a": 1}', "$.a"),
        (b'{"x": "\x1f", "a": 1}', "$.a"),
        (b'{"a": "\n"}', "$.a"),
        (b'{"x": "\\q", "a": 1}', "$.a"),
        (b'{"x": "\\u12g4", "a": 1}', "$.a"),
        (b'{"x": [1}, "a": 1}', "$.a"),
        (b'{x: 1, "a": 1}', "$.a"),
        (b'{"a": [1, 2', "$.a"),
        (b'{"a": "abc', "$.a"),
        (b'{"a": NaN}', "$.a"),
        (b'{"a": \x0b1}', "$.a"),  # vertical tab is not JSON whitespace
        (b"\xef\xbb\xbf{}", "$"),  # nor is a BOM
        (b"[1 2]", "$[1]"),
    ],
)
def test_json_path_malformed(doc: bytes, path: str) -> None:
    assert JsonPath(path).find(doc)[0] == -2
    with pytest.raises(ValueError, match="malformed"):
        json_path(doc, path)


def test_nesting_limit() -> None:
    ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    inner = ok[1:-1]  # one level less: fits inside an object
    assert json_path(ok, "$") == ok
    assert JsonPath("$").find(deep)[0] == -2
    assert json_path(b'{"x": ' + inner + b', "a": 1}', "$.a") == b"1"
    assert JsonPath("$.a").find(b'{"x": ' + ok + b', "a": 1}')[0] == -2
    assert JsonPath("$.a").find(b'{"a": 1, "x": ' + deep)[0] == 0  # never read
    path = "$" + "[0]" * (MAX_DEPTH - 1)
    assert json_path(ok, path) == b"[]"
    assert JsonPath(path + "[0]").find(ok)[0] == -1
    # Path steps count as open containers too.
    assert JsonPath(path + "[0]").find(deep)[0] == -2
    with pytest.raises(ValueError, match="deeper"):
        JsonPath("$" + "[0]" * (MAX_DEPTH + 1))


@pytest.mark.parametrize(
    ("body", "decoded"),
    [
        (b"plain", b"plain"),
        (b'\\"\\\\\\/\\b\\f\\n\\r\\t', b'"\\/\b\f\n\r\t'),
        (b"\\u0041\\u00e9\\u20ac", "A\u00e9\u20ac".encode()),
        (b"\\ud83d\\ude00!", "\U0001f600!".encode()),
        (b"\\ud83d", "\ufffd".encode()),
        (b"\\ude00x", "\ufffdx".encode()),
        (b"\\ud83d\\u0041", "\ufffdA".encode()),
        (b"\\ud800\\ud800\\udc00", "\ufffd\U00010000".encode()),
        (b"\\u0000", b"\x00"),
        (b"raw \xc3\xa9", b"raw \xc3\xa9"),
        # Not valid JSON escapes: decoded without growing, the backslash kept.
        (b"\\", b"\\"),
        (b"\\q", b"\\q"),
        (b"\\u12", b"\\u12"),
    ],
)
def test_unescape(body: bytes, decoded: bytes) -> None:
    assert unescape(body) == decoded


# ------------------------------------------------------------------ JSON property tests

_key = st.text(max_size=6) | st.sampled_from(["a", "b", 'q"', "\\", "\u00e9", "\U0001f600"])
_string = st.text(max_size=10) | st.text(
    st.characters(codec=None, categories=["Cs", "Ll"]), max_size=4
)
_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _string
)
_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_key, inner, max_size=5),
    max_leaves=25,
)
_ws = st.text(" \t\r\n", max_size=3)


def _has_surrogate(value: object) -> bool:
    return ref._SURROGATE.search(json.dumps(value, ensure_ascii=False)) is not None


_container = st.lists(_json, min_size=1, max_size=5) | st.dictionaries(_key, _json, min_size=1)


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, object]:
    value = draw(_json if draw(st.integers(0, 5)) == 0 else _container)
    ensure_ascii = draw(st.booleans()) or _has_surrogate(value)
    indent = draw(st.sampled_from([None, None, 0, 2, "\t", " \r"]))
    separators = (draw(_ws) + "," + draw(_ws), draw(_ws) + ":" + draw(_ws))
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators)
    return (draw(_ws) + text + draw(_ws)).encode("utf-8"), value


@st.composite
def paths(draw: st.DrawFn, value: object) -> list:
    """A path into value, sometimes one step off (missing key, index past the end, wrong
    container)."""
    steps: list = []
    for _ in range(draw(st.sampled_from([2, 1, 3, 4, 6, 8, 0]))):
        if isinstance(value, dict) and value:
            key = draw(st.sampled_from(sorted(value)))
            steps.append((KEY, key))
            value = value[key]
        elif isinstance(value, list) and value:
            index = draw(st.integers(0, len(value) - 1))
            steps.append((INDEX, index))
            value = value[index]
        else:
            break
    off = draw(st.integers(0, 4))
    if off == 1:
        steps.append((KEY, draw(_key).encode("utf-8", "replace")))
    elif off == 2:
        steps.append((INDEX, len(value) if isinstance(value, list) else draw(st.integers(0, 3))))
    return steps


def check_json(doc: bytes | memoryview, steps: list, path: str) -> int:
    """The C result for ``path`` equals the reference's whenever the document is valid."""
    data = bytes(doc)
    rc, start, end, is_string = JsonPath(path).find(doc)
    assert rc in (0, -1, -2)
    expected = ref.lookup(data, steps)
    if expected is ref.INVALID:
        if rc == 0:
            # Lazy scanning: the error the reference found lies after the value.
            try:
                ref.loads(data)
            except json.JSONDecodeError as err:
                assert len(data[:end].decode("utf-8")) <= err.pos, (data, path, err)
            except (ValueError, RecursionError):
                pass
        return rc
    if expected is ref.NOT_FOUND:
        assert rc == -1, (data, path)
        return rc
    assert rc == 0, (data, path, rc)
    raw = data[start:end]
    if isinstance(expected, str):
        assert is_string and data[start - 1 : start] == b'"' == data[end : end + 1]
        assert unescape(raw) == ref.utf8(expected)
    else:
        assert not is_string and raw == raw.strip(b" \t\r\n")
        assert ref.canon(ref.loads(raw)) == ref.canon(expected)
    return rc


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_documents_and_paths(data: st.DataObject) -> None:
    doc, value = data.draw(documents())
    steps = data.draw(paths(ref.loads(doc)))
    path = ref.render_path(steps, dollar=data.draw(st.booleans()) or not steps)
    assert compile_json_path(path) == steps
    check_json(doc, steps, path)
    check_json(guarded(doc), steps, path)


@st.composite
def mutated_documents(draw: st.DrawFn) -> tuple[bytes, list]:
    doc, _ = draw(documents())
    steps = draw(paths(ref.loads(doc)))
    buf = bytearray(doc)
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(buf)))
        byte = draw(st.sampled_from(b'{}[]",:\\ 0-.eEtu\x00\x1f\x7f\xff'))
        if what == 0 and pos < len(buf):
            buf[pos] = byte
        elif what == 1:
            buf.insert(pos, byte)
        elif what == 2 and pos < len(buf):
            del buf[pos]
        else:
            del buf[pos:]  # truncate
    return bytes(buf), steps


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_mutated_documents_match_reference_and_stay_in_bounds(case: tuple[bytes, list]) -> None:
    doc, steps = case
    path = ref.render_path(steps)
    assert check_json(guarded(doc), steps, path) == check_json(doc, steps, path)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["$", "$.a", "$[0]", "$.a[1].b", "$[2][0]"]))
def test_random_bytes_never_crash(doc: bytes, path: str) -> None:
    rc, start, end, _ = JsonPath(path).find(guarded(doc))
    assert rc in (0, -1, -2) and 0 <= start <= end <= len(doc)
    out = unescape(guarded(doc))
    assert len(out) <= len(doc)


@settings(max_examples=150, deadline=None)
@given(_string, st.booleans())
def test_unescape_matches_json(text: str, ensure_ascii: bool) -> None:
    ensure_ascii = ensure_ascii or ref._SURROGATE.search(text) is not None
    quoted = json.dumps(text, ensure_ascii=ensure_ascii)
    # Decoded as JSON: two lone surrogates in ``text`` may be escaped as a valid pair.
    expected = ref.utf8(json.loads(quoted))
    body = quoted.encode("utf-8")[1:-1]
    assert unescape(body) == expected
    assert unescape(guarded(body)) == expected


# ------------------------------------------------------------------------------------ HTTP

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type:text/plain\r\n"
    b"Set-Cookie: a=1; Path=/\r\n"
    b"X-Empty:\r\n"
    b"set-cookie:\t b=2 \t\r\n"
    b"X-Trim:   spaced value  \n"
    b"SET-COOKIE: c=3\r\n"
    b"\r\n"
    b"Set-Cookie: body=not-a-header\r\n"
)


def test_head_end() -> None:
    assert head_end(HEAD) == len(HEAD) - len(b"Set-Cookie: body=not-a-header\r\n")
    assert head_end(b"HTTP/1.1 200 OK\n\nbody") == 17
    assert head_end(b"HTTP/1.1 200 OK\r\nA: b\n\r\nbody") == 24
    assert head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r") is None
    assert head_end(guarded(b"HTTP/1.1 200 OK\r\nA: b\r\n\r")) is None
    assert head_end(b"HTTP/1.1 200 OK\r\n") is None
    assert head_end(b"") is None


def test_headers_case_insensitive_repeated_and_trimmed() -> None:
    assert header(HEAD, "content-type") == b"text/plain"
    assert header(HEAD, b"X-TRIM") == b"spaced value"
    assert header(HEAD, "x-empty") == b""
    assert header(HEAD, "x-missing") is None
    assert header(HEAD, "HTTP/1.1 200 OK") is None  # the status line is not a header
    assert headers(HEAD, "Set-Cookie") == [b"a=1; Path=/", b"b=2", b"c=3"]
    assert headers(HEAD, "Set-Cooki") == []
    assert headers(HEAD, "") == []
    assert header(b"HTTP/1.1 200 OK\r\nX: last line unterminated", "x") == (
        b"last line unterminated"
    )


def test_is_chunked() -> None:
    def te(*values: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\n" + b"".join(b"Transfer-Encoding: %s\r\n" % v for v in values)

    assert chunked(te(b"chunked") + b"\r\n")
    assert chunked(te(b"gzip, Chunked "))
    assert chunked(te(b"gzip", b"chunked"))
    assert chunked(te(b"chunked,"))
    assert not chunked(te(b"chunked, gzip"))
    assert not chunked(te(b"chunked", b"gzip"))
    assert not chunked(te(b"chunkedx"))
    assert not chunked(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert not chunked(b"HTTP/1.1 200 OK\r\n\r\nTransfer-Encoding: chunked\r\n")


_name = st.sampled_from([b"Set-Cookie", b"set-cookie", b"SET-COOKIE", b"X-A", b"x-a", b"X-AB"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    eol = st.sampled_from([b"\r\n", b"\n"])
    out = b"HTTP/1.1 200 OK" + draw(eol)
    for _ in range(draw(st.sampled_from([2, 1, 3, 4, 6, 8, 0]))):
        value = draw(st.binary(max_size=12)).replace(b"\n", b"")
        if draw(st.integers(0, 5)) == 0:
            out += b" folded" + value + draw(eol)
        else:
            out += draw(_name) + b":" + draw(st.sampled_from([b"", b" ", b"\t "])) + value
            out += draw(st.sampled_from([b"", b" ", b"\t"])) + draw(eol)
    out += draw(st.sampled_from([b"\r\n", b"\n", b""]))
    return out + draw(st.sampled_from([b"", b"X-A: body\r\n", b"Set-Cookie: z\n"]))


@settings(max_examples=75, deadline=None)
@given(heads(), _name, st.binary(max_size=4))
def test_headers_match_reference(head: bytes, name: bytes, junk: bytes) -> None:
    assert headers(head, name) == ref.headers(head, name)
    assert headers(guarded(head), name) == ref.headers(head, name)
    assert head_end(guarded(head)) == ref.head_end(head)
    assert head_end(guarded(head + junk)) == ref.head_end(head + junk)
    assert chunked(guarded(head)) == ref.is_chunked(head)


# ----------------------------------------------------------------------------------- dechunk


def test_dechunk_cases() -> None:
    body = b"5;name=val\r\nhello\r\nA\r\n0123456789\r\n0;last\r\nX-Trailer: 1\r\nY: 2\r\n\r\n"
    assert dechunk(body) == b"hello0123456789"
    assert dechunk(body + b"next response") == b"hello0123456789"
    assert dechunk(b"0\r\n\r\n") == b""
    assert dechunk(b"3 \t;x\r\nabc\n0\n\n") == b"abc"
    assert dechunk(b"3\r\nabc\r\n0\r\n\r") is None  # incomplete
    assert dechunk(b"3\r\nabcX\r\n0\r\n\r\n") is None
    assert dechunk(b"zz\r\n") is None
    assert dechunk(b"3 4\r\nabc\r\n0\r\n\r\n") is None
    assert dechunk(b"3\r\r\nabc\r\n0\r\n\r\n") is None
    assert dechunk(b"4000000000000\r\n") is None  # larger than 2**50
    assert dechunk(b"") is None


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    data = draw(st.binary(max_size=400))
    eol = st.sampled_from([b"\r\n", b"\n"])
    out = b""
    rest = data
    while rest:
        k = draw(st.integers(1, len(rest)))
        size = (b"%x" if draw(st.booleans()) else b"%X") % k
        size = b"0" * draw(st.integers(0, 2)) + size
        ext = draw(st.sampled_from([b"", b";a=b", b" ;x", b'\t;q="1\r"', b"  "]))
        out += size + ext + draw(eol) + rest[:k] + draw(eol)
        rest = rest[k:]
    out += b"0" + draw(st.sampled_from([b"", b";end", b" "])) + draw(eol)
    for _ in range(draw(st.integers(0, 2))):
        out += b"Trailer-%d: v" % draw(st.integers(0, 9)) + draw(eol)
    return out + draw(eol), data


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunked_bodies(), st.binary(max_size=8), st.integers(0, 10_000))
def test_dechunk_against_reference_chunker(
    case: tuple[bytes, bytes], tail: bytes, cut: int
) -> None:
    body, data = case
    assert ref.dechunk(body) == data
    assert dechunk(body) == data
    assert dechunk(body + tail) == data
    view = guarded(body)
    assert dechunk_into(view) == len(data) and bytes(view[: len(data)]) == data
    # Any strict prefix is incomplete.
    prefix = body[: cut % len(body)]
    assert dechunk(prefix) is None
    assert dechunk_into(guarded(prefix)) == -1


@settings(max_examples=75, deadline=None)
@given(
    chunked_bodies(), st.lists(st.tuples(st.integers(0, 500), st.binary(max_size=2)), max_size=3)
)
def test_mutated_chunked_bodies_match_reference(
    case: tuple[bytes, bytes], edits: list[tuple[int, bytes]]
) -> None:
    buf = bytearray(case[0])
    for pos, piece in edits:
        pos %= len(buf) + 1
        buf[pos : pos + 1] = piece
    assert dechunk(guarded(bytes(buf))) == ref.dechunk(bytes(buf))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_dechunk_random_bytes(data: bytes) -> None:
    rc = dechunk_into(guarded(data))
    expected = ref.dechunk(data)
    assert rc == (-1 if expected is None else len(expected))


# ------------------------------------------------------------------------------------- regex


def test_regex_group_whole_match_and_no_match() -> None:
    assert Regex(r"id=([0-9]+)").find(b"x id=42 y") == b"42"
    assert Regex(r"id=[0-9]+").find(b"x id=42 y") == b"id=42"
    assert Regex(r"(a)|b").find(b"xb") == b"b"  # group 1 did not take part
    assert Regex(r"(a)|b").find(b"xa") == b"a"
    assert Regex(r"x(y*)z").find(b"xz") == b""  # an empty group that took part
    assert Regex(r"nope").find(b"text") is None
    assert Regex("é+").find("café".encode()) == "é".encode()
    assert Regex(r"(a)(b)").groups == 2 and Regex("ab").pattern == b"ab"


def test_regex_flags() -> None:
    text = b"line1\nTOKEN: abc\nrest"
    assert Regex(r"^TOKEN: (.*)$").find(text) is None
    assert Regex(r"^TOKEN: (.*)$", newline=True).find(text) == b"abc"
    assert Regex(r"token: ([a-z]+)", icase=True).find(text) == b"abc"
    assert Regex(r"token").find(text) is None


def test_regex_nul_bytes_and_bounds() -> None:
    r = Regex(r"k=([a-z]+)")
    assert r.find(b"a\x00k=v") is None  # regex_find stops at the NUL
    assert r.find_n(b"a\x00k=v") == b"v"  # regex_find_n does not
    assert r.find_n(memoryview(b"k=abc")[:4]) == b"ab"


@pytest.mark.parametrize("pattern", ["(", "a{2,1}", "[z-a]", b"a\x00b"])
def test_regex_bad_pattern(pattern: str | bytes) -> None:
    with pytest.raises(ValueError, match="bad regular expression"):
        Regex(pattern)


# ------------------------------------------------------------------------------------ cookies


@pytest.mark.parametrize(
    ("jar", "set_cookie", "after"),
    [
        (b"", b"a=1", b"a=1"),
        (b"a=1", b"b=2; Path=/; HttpOnly", b"a=1; b=2"),
        (b"a=1; b=2; c=3", b"b=new; Secure", b"a=1; b=new; c=3"),
        (b"a=1; b=2", b"  b =  spaced value  ; path=/", b"a=1; b=spaced value"),
        (b"a=1; b=2", b"a=", b"a=; b=2"),
        (b"a=1; b=2; c=3", b"a=x; Max-Age=0", b"b=2; c=3"),
        (b"a=1; b=2; c=3", b"b=x; max-age=0", b"a=1; c=3"),
        (b"a=1; b=2; c=3", b"c=x; MAX-AGE = -5", b"a=1; b=2"),
        (b"a=1", b"a=x; Max-Age=0", b""),
        (b"a=1", b"zz=x; Max-Age=0", b"a=1"),
        (b"a=1", b"a=2; Max-Age=0; Max-Age=60", b"a=2"),  # the last Max-Age wins
        (b"a=1", b"a=2; Max-Age=0; Max-Age=soon", b""),  # an invalid one is ignored
        (b"a=1", b"a=2; Max-Age=3600", b"a=2"),
        (b"a=1", b"a=2; Expires=Thu, 01 Jan 1970 00:00:00 GMT", b"a=2"),
        (b"a=1", b"A=2", b"a=1; A=2"),  # names are case-sensitive
        (b"a=1", b"v=x=y", b"a=1; v=x=y"),
        (b"a=1", b"novalue", b"a=1"),  # ignored: no '='
        (b"a=1", b"=x", b"a=1"),  # ignored: empty name
        (b"a=1;b=2", b"b=3", b"a=1;b=3"),  # other separators are kept
        (b"a=1;b=2", b"b=3; Max-Age=0", b"a=1"),
        (b"a=1 ; b=2", b"a=; max-age=0", b"b=2"),
    ],
)
def test_cookie_jar_update(jar: bytes, set_cookie: bytes, after: bytes) -> None:
    assert cookie_update(jar, set_cookie) == after


def test_cookie_jar_overflow_leaves_jar_unchanged() -> None:
    assert cookie_update(b"a=1", b"b=2", cap=8) == b"a=1; b=2"
    assert cookie_update(b"a=1", b"b=22", cap=8) is None
    assert cookie_update(b"a=1", b"a=1234567", cap=9) == b"a=1234567"
    assert cookie_update(b"a=1", b"a=12345678", cap=9) is None
    assert cookie_update(b"", b"abc=d", cap=4) is None
    with pytest.raises(ValueError, match="longer"):
        cookie_update(b"a=123", b"b=1", cap=4)


_cookie_name = st.sampled_from([b"a", b"b", b"sid", b"A", b"x-y"])
_cookie_value = st.text('xyz="=/ ', max_size=6).map(lambda s: s.strip().encode())
_attribute = st.sampled_from(
    [b"Path=/", b"HttpOnly", b"Max-Age=0", b"max-age=-1", b"Max-Age=3600", b"Max-Age=abc",
     b"Max-Age=", b" MAX-AGE = 00 ", b"Expires=Wed, 21 Oct 2015 07:28:00 GMT", b"Max-Age"]
)  # fmt: skip


@st.composite
def set_cookies(draw: st.DrawFn) -> bytes:
    ows = st.sampled_from([b"", b" ", b"\t"])
    if draw(st.integers(0, 9)) == 0:
        pair = draw(st.sampled_from([b"novalue", b"=x", b" = y"]))
    else:
        pair = draw(ows) + draw(_cookie_name) + draw(ows) + b"=" + draw(ows)
        pair += draw(_cookie_value) + draw(ows)
    attributes = draw(st.lists(_attribute, max_size=3))
    return b";".join([pair, *((draw(ows) + a) for a in attributes)])


@settings(max_examples=75, deadline=None)
@given(
    st.lists(st.tuples(_cookie_name, _cookie_value), max_size=4, unique_by=lambda p: p[0]),
    set_cookies(),
    st.integers(0, 40),
)
def test_cookie_jar_matches_reference(pairs: list, set_cookie: bytes, cap: int) -> None:
    jar = b"; ".join(n + b"=" + v for n, v in pairs)
    cap = max(cap, len(jar))
    assert cookie_update(jar, set_cookie, cap) == ref.cookie_update(jar, set_cookie, cap)


def test_module_exports() -> None:
    assert extract.KEY == 1 and extract.INDEX == 2
    assert extract.dechunk is dechunk
