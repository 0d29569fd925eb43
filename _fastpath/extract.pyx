# cython: language_level=3
"""Python side of response extraction: construction-time helpers and test wrappers.

Theory of operation
-------------------
The engine takes values out of responses with the ``nogil`` C functions of ``extract.pxd``.
What those functions need is prepared here, once, when a plan is loaded:

* ``compile_json_path`` parses a JSON path (``$.items[0].id``, ``a.b``, ``$["key with
  spaces"]``) into ``[(KEY, b"items"), (INDEX, 0), (KEY, b"id")]``; ``JsonPath`` owns the
  equivalent ``jp_step`` array (keys included) in one ``PyMem_RawMalloc`` block, freed in
  ``__dealloc__``. It is read-only after construction, so worker threads may share one.
* ``Regex`` owns a ``regex_t`` compiled with ``REG_EXTENDED`` (never ``REG_NOSUB``), freed in
  ``__dealloc__``; the engine passes ``&regex.re`` to ``regex_find``/``regex_find_n``. glibc's
  ``regexec`` takes a lock inside the ``regex_t``, so each engine thread should own its own
  ``Regex`` (compile the pattern once per thread) rather than share one. ``regcomp`` and
  ``regexec`` follow the process's ``LC_CTYPE`` (Python sets it from the environment; with a
  UTF-8 locale ``.`` matches one UTF-8 character).

The remaining functions (``json_path``, ``header``, ``headers``, ``dechunk`` ...) call the same
C functions on Python buffers; they exist for ``tests/unit/test_extract.py``. They accept any
contiguous buffer and pass its exact length, so a test can place input right before an
unreadable page.
"""

cimport cython
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc
from libc.string cimport memcpy

from _fastpath.includes.regex cimport (
    REG_EXTENDED, REG_ICASE, REG_NEWLINE, regcomp, regerror, regfree,
)

KEY = JP_KEY
INDEX = JP_INDEX
MAX_DEPTH = JP_MAX_DEPTH
_INT64_MAX = (1 << 63) - 1
_NAME_STOP = frozenset(".[]'\"*")


# ------------------------------------------------------------------------------ JSON paths

def _fail(path: str, pos: int, what: str):
    raise ValueError(f"bad JSON path {path!r} at position {pos}: {what}")


def _utf8(path: str, key: str) -> bytes:
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"bad JSON path {path!r}: key {key!r} is not valid Unicode") from None


def compile_json_path(path: str) -> list:
    """Parse ``path`` into ``[(KEY, key_bytes) | (INDEX, int), ...]``.

    Grammar: an optional ``$``, then segments ``.name``, ``[digits]``, ``["key"]`` or
    ``['key']`` (backslash escapes the quote or a backslash); without ``$`` the path may start
    with a bare ``name``. A name is one or more characters other than ``. [ ] ' " *`` and
    whitespace. Negative indexes, slices and wildcards are not supported. ``$`` alone is the
    whole document (no steps). Raises ValueError with the position of the problem.
    """
    steps = []
    n = len(path)
    i = 0
    if n == 0:
        raise ValueError("bad JSON path '': empty (use '$' for the whole document)")
    if path[0] == "$":
        i = 1
    elif path[0] not in ".[":
        path_name_end = _name_end(path, 0)
        if path_name_end == 0:
            _fail(path, 0, f"unexpected {path[0]!r}")
        steps.append((JP_KEY, _utf8(path, path[:path_name_end])))
        i = path_name_end
    while i < n:
        c = path[i]
        if c == ".":
            end = _name_end(path, i + 1)
            if end == i + 1:
                what = "end of path" if end >= n else repr(path[end])
                hint = "; use [\"...\"] for such keys" if end < n else ""
                _fail(path, i + 1, f"expected a key name after '.', found {what}{hint}")
            steps.append((JP_KEY, _utf8(path, path[i + 1 : end])))
            i = end
        elif c == "[":
            i = _bracket(path, i + 1, steps)
        else:
            _fail(path, i, f"expected '.' or '[', found {c!r}")
    return steps


def _name_end(path: str, i: int) -> int:
    while i < len(path) and path[i] not in _NAME_STOP and not path[i].isspace():
        i += 1
    if i < len(path) and path[i] == "*":
        _fail(path, i, "wildcards are not supported")
    return i


def _bracket(path: str, i: int, steps: list) -> int:
    """Parse the inside of ``[...]`` from ``i``; append the step; return the position after ']'."""
    n = len(path)
    if i < n and path[i] in "'\"":
        quote = path[i]
        key = []
        i += 1
        while i < n and path[i] != quote:
            if path[i] == "\\" and i + 1 < n:
                i += 1
            key.append(path[i])
            i += 1
        if i >= n:
            _fail(path, i, f"unterminated {quote}-quoted key")
        steps.append((JP_KEY, _utf8(path, "".join(key))))
        i += 1
    else:
        start = i
        while i < n and "0" <= path[i] <= "9":
            i += 1
        if i == start:
            if i < n and path[i] == "-":
                _fail(path, i, "negative indexes are not supported")
            if i < n and path[i] in "*:":
                _fail(path, i, "wildcards and slices are not supported")
            _fail(path, i, "expected an index or a quoted key after '['")
        index = int(path[start:i])
        if index > _INT64_MAX:
            _fail(path, start, "index too large")
        steps.append((JP_INDEX, index))
    if i >= n or path[i] != "]":
        _fail(path, i, "expected ']'")
    return i + 1


cdef class JsonPath:
    """A compiled JSON path the C scanner can walk (``self.steps[:self.nsteps]``)."""

    def __cinit__(self, str path):
        cdef list steps = compile_json_path(path)
        cdef size_t keys_len = 0
        cdef size_t off
        cdef char* keys
        cdef int k
        cdef bytes key
        if len(steps) > JP_MAX_DEPTH:
            raise ValueError(f"bad JSON path {path!r}: deeper than {JP_MAX_DEPTH} levels")
        for kind, arg in steps:
            if kind == JP_KEY:
                keys_len += len(arg)
        self.path = path
        self.nsteps = len(steps)
        off = self.nsteps * sizeof(jp_step)
        self.steps = <jp_step*>PyMem_RawMalloc(off + keys_len + 1)
        if self.steps == NULL:
            raise MemoryError()
        keys = <char*>self.steps + off
        for k in range(self.nsteps):
            kind, arg = steps[k]
            self.steps[k].kind = kind
            self.steps[k].index = 0
            self.steps[k].key = NULL
            self.steps[k].key_len = 0
            if kind == JP_KEY:
                key = arg
                memcpy(keys, <const char*>key, len(key))
                self.steps[k].key = keys
                self.steps[k].key_len = len(key)
                keys += len(key)
            else:
                self.steps[k].index = arg

    def __dealloc__(self):
        PyMem_RawFree(self.steps)

    def find(self, doc) -> tuple:
        """``(rc, start, end, is_string)``: the C result on ``doc``; for rc 0 ``doc[start:end]``
        is the value's text (a string's escaped body)."""
        cdef const unsigned char[::1] v = _view(doc)
        cdef const char* base = _ptr(v)
        cdef const char* out = NULL
        cdef size_t out_len = 0
        cdef int is_string = 0
        cdef int rc
        with nogil:
            rc = json_path_find(base, <size_t>v.shape[0], self.steps, self.nsteps, &out,
                                &out_len, &is_string)
        if rc != JP_FOUND:
            return rc, 0, 0, False
        return rc, out - base, out - base + out_len, is_string != 0

    def get(self, doc):
        """The value in ``doc`` (a string unescaped, anything else its JSON text), None if it
        is not there; ValueError if the document is malformed."""
        rc, start, end, is_string = self.find(doc)
        if rc == JP_MALFORMED:
            raise ValueError("malformed JSON document")
        if rc == JP_NOT_FOUND:
            return None
        raw = bytes(memoryview(doc).cast("B")[start:end])
        return unescape(raw) if is_string else raw


def json_path(doc, path: str):
    """``JsonPath(path).get(doc)``: bytes or None; ValueError for a malformed document."""
    return JsonPath(path).get(doc)


def unescape(s) -> bytes:
    """``json_unescape`` of a JSON string body."""
    cdef const unsigned char[::1] v = _view(s)
    cdef bytearray out = bytearray(v.shape[0] + 1)
    cdef char* o = out
    cdef size_t w
    with nogil:
        w = json_unescape(_ptr(v), <size_t>v.shape[0], o)
    return bytes(out[:w])


# ------------------------------------------------------------------------------------ HTTP

cdef inline const unsigned char[::1] _view(data):
    return memoryview(data).cast("B")


@cython.boundscheck(False)
cdef inline const char* _ptr(const unsigned char[::1] v) noexcept nogil:
    if v.shape[0] == 0:
        return b""
    return <const char*>&v[0]


def head_end(resp):
    """Length of the head (through the empty line), or None if it is not complete."""
    cdef const unsigned char[::1] v = _view(resp)
    cdef size_t head_len = 0
    if find_head_end(_ptr(v), <size_t>v.shape[0], &head_len) != 0:
        return None
    return head_len


def headers(head, name) -> list:
    """Values of every header line named ``name`` (case-insensitive), in order."""
    cdef const unsigned char[::1] v = _view(head)
    cdef bytes bname = name.encode("latin-1") if isinstance(name, str) else bytes(name)
    cdef const char* value = NULL
    cdef size_t value_len = 0
    cdef size_t pos = 0
    cdef const char* base = _ptr(v)
    found = []
    while find_header(base, <size_t>v.shape[0], bname, len(bname), pos, &value, &value_len,
                      &pos) == 0:
        found.append(value[:value_len])
    return found


def header(head, name):
    """Value of the first header named ``name`` (case-insensitive), or None."""
    values = headers(head, name)
    return values[0] if values else None


def chunked(head) -> bool:
    """Whether the last Transfer-Encoding coding is ``chunked``."""
    cdef const unsigned char[::1] v = _view(head)
    return is_chunked(_ptr(v), <size_t>v.shape[0]) != 0


def dechunk_into(buf) -> int:
    """``dechunk`` in place on a writable buffer: the decoded length or -1."""
    cdef unsigned char[::1] v = memoryview(buf).cast("B")
    cdef char empty[1]
    cdef char* p = empty
    cdef ssize_t rc
    if v.shape[0]:
        p = <char*>&v[0]
    with nogil:
        rc = dechunk(p, <size_t>v.shape[0])
    return rc


def _dechunk(body):
    """The decoded chunked ``body``, or None if it is malformed or incomplete."""
    cdef bytearray buf = bytearray(body)
    rc = dechunk_into(buf)
    return None if rc < 0 else bytes(buf[:rc])


# The C function of extract.pxd owns the name ``dechunk`` inside this module; the Python
# wrapper is published under the same name for Python callers.
globals()["dechunk"] = _dechunk


# ----------------------------------------------------------------------------------- regex

cdef class Regex:
    """A POSIX extended regular expression (``regcomp`` with REG_EXTENDED).

    ``icase``: REG_ICASE; ``newline``: REG_NEWLINE (``.`` and ``[^...]`` do not match a
    newline, ``^``/``$`` match at line boundaries). ValueError with regerror's text for a bad
    pattern.
    """

    def __cinit__(self, pattern, *, bint icase=False, bint newline=False):
        cdef bytes p = pattern.encode("utf-8") if isinstance(pattern, str) else bytes(pattern)
        cdef int flags = REG_EXTENDED
        cdef int rc
        cdef char msg[256]
        self.compiled = False
        if b"\0" in p:
            raise ValueError(f"bad regular expression {pattern!r}: contains a NUL byte")
        if icase:
            flags |= REG_ICASE
        if newline:
            flags |= REG_NEWLINE
        rc = regcomp(&self.re, p, flags)
        if rc != 0:
            regerror(rc, &self.re, msg, sizeof(msg))
            raise ValueError(
                f"bad regular expression {pattern!r}: {msg.decode('utf-8', 'replace')}"
            )
        self.compiled = True
        self.pattern = p
        self.groups = <int>self.re.re_nsub

    def __dealloc__(self):
        if self.compiled:
            regfree(&self.re)

    def find(self, bytes text):
        """``regex_find`` on ``text`` (as C sees it: up to its first NUL): group 1 if it took
        part in the match, else the whole match; None if no match."""
        cdef size_t start = 0
        cdef size_t length = 0
        cdef const char* t = text
        cdef int rc
        with nogil:
            rc = regex_find(&self.re, t, &start, &length)
        return None if rc != 0 else text[start : start + length]

    def find_n(self, text):
        """``regex_find_n`` on the whole buffer (NUL bytes are ordinary characters where the
        libc has REG_STARTEND)."""
        cdef bytes b = bytes(text)
        cdef size_t start = 0
        cdef size_t length = 0
        cdef const char* t = b
        cdef size_t n = len(b)
        cdef int rc
        with nogil:
            rc = regex_find_n(&self.re, t, n, &start, &length)
        return None if rc != 0 else b[start : start + length]


# --------------------------------------------------------------------------------- cookies

def cookie_update(jar, set_cookie, cap: int = 4096):
    """``cookie_jar_update``: the new jar, or None if it would not fit in ``cap`` bytes."""
    cdef const unsigned char[::1] sc = _view(set_cookie)
    cdef bytearray buf
    cdef size_t jar_len = len(jar)
    cdef int rc
    if jar_len > cap:
        raise ValueError(f"the jar is longer ({jar_len}) than cap ({cap})")
    buf = bytearray(cap + 1)
    buf[:jar_len] = jar
    rc = cookie_jar_update(buf, &jar_len, cap, _ptr(sc), <size_t>sc.shape[0])
    return None if rc != 0 else bytes(buf[:jar_len])
