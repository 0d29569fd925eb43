# cython: language_level=3
"""Sans-IO extraction of values from HTTP responses: C functions over byte buffers.

Theory of operation
-------------------
A session step may save a value of the response into a session variable: a JSON field, a
regular-expression group, a header, a cookie. The engine does this on every response, in its
worker threads, so everything here is ``cdef inline ... noexcept nogil`` over ``(pointer,
length)`` pairs: no Python objects, no allocation (except inside ``regexec``), errors as return
codes, no read at or past ``n``. ``extract.pyx`` wraps the same functions for the tests and
holds the construction-time helpers (JSON path compiler, ``JsonPath``, ``Regex``) declared at
the end of this file.

JSON: ``json_path_find`` and ``json_unescape`` live in ``extract_json.pxd`` (a lazy skipping
scanner; see there) and are re-exported here, so the engine cimports everything from
``_fastpath.extract``.

HTTP. A line ends at LF and one CR before the LF belongs to the line ending (the grammar of
``http1.pxd``). ``find_head_end`` finds the empty line; ``find_header`` scans header lines
(skipping the status line when ``start == 0``) up to the empty line and returns ``*next`` to
resume from, for repeated headers (Set-Cookie); ``is_chunked`` reads the last coding of all
Transfer-Encoding headers; ``dechunk`` decodes a chunked body in place (the write position
never passes the read one), with the chunk grammar of ``http1.pxd``.

Regex. ``regex_find``/``regex_find_n`` run a compiled POSIX ERE (``regex.h``) and report group 1
when it took part in the match, else the whole match.

Cookies. The jar is the value of a ``Cookie`` request header, ``a=1; b=2``;
``cookie_jar_update`` applies one ``Set-Cookie`` value to it in place: RFC 6265 section 5.2
parsing of the name-value pair (split at the first ``=``, blanks trimmed, empty name ignored)
and of ``Max-Age`` (the last valid one wins; <= 0 removes the cookie). Other attributes,
``Expires`` included, are ignored; names are compared case-sensitively.
"""

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memmove

from _fastpath.extract_json cimport (
    EX_BAD, JP_FOUND, JP_INDEX, JP_KEY, JP_MALFORMED, JP_MAX_DEPTH, JP_NOT_FOUND,
    jp_step, json_path_find, json_skip_value, json_unescape,
)
from _fastpath.http1 cimport h1_hexval, h1_is_ows, h1_lower
from _fastpath.includes.regex cimport regex_t, regmatch_t, regoff_t, regexec, REG_STARTEND


cdef extern from *:
    """
    #define CHAPERON_EX_MAX_CHUNK (((long long)1) << 50)
    """
    # Largest chunk size accepted, as in http1.pxd: keeps the arithmetic far from overflow.
    const int64_t EX_MAX_CHUNK "CHAPERON_EX_MAX_CHUNK"


# ------------------------------------------------------------------------------------ HTTP

cdef inline bint ex_casecmp(const unsigned char* a, const unsigned char* b,
                            size_t n) noexcept nogil:
    """ASCII case-insensitive equality of a[:n] and b[:n]."""
    cdef size_t k
    for k in range(n):
        if h1_lower(a[k]) != h1_lower(b[k]):
            return 0
    return 1


cdef inline int find_head_end(const char* resp, size_t n, size_t* head_len) noexcept nogil:
    """0 and *head_len (through the empty line) if resp[:n] holds the end of a head, else -1.

    The empty line is CRLF CRLF, or any LF followed by LF or CRLF (lines as in http1.pxd).
    """
    cdef size_t i = 0
    cdef size_t j
    cdef const char* p
    while i < n:
        p = <const char*>memchr(resp + i, 10, n - i)
        if p == NULL:
            return -1
        j = <size_t>(p - resp)
        if j + 1 < n and resp[j + 1] == 10:
            head_len[0] = j + 2
            return 0
        if j + 2 < n and resp[j + 1] == 13 and resp[j + 2] == 10:
            head_len[0] = j + 3
            return 0
        i = j + 1
    return -1


cdef inline int find_header(const char* head, size_t n, const char* name, size_t name_len,
                            size_t start, const char** value, size_t* value_len,
                            size_t* next) noexcept nogil:
    """Find the first header line at or after ``start`` (0: after the status line) named
    ``name`` (case-insensitive), up to the empty line. 0 found (*value trimmed of SP/HT,
    *next = offset after that line), -1 not."""
    cdef const unsigned char* h = <const unsigned char*>head
    cdef size_t i = start
    cdef size_t e, le, nxt, vs, ve
    cdef const char* p
    if name_len == 0:
        return -1
    if i == 0:
        p = <const char*>memchr(head, 10, n)
        if p == NULL:
            return -1
        i = <size_t>(p - head) + 1
    while i < n:
        p = <const char*>memchr(head + i, 10, n - i)
        e = n if p == NULL else <size_t>(p - head)
        nxt = n if p == NULL else e + 1
        le = e
        if le > i and h[le - 1] == 13:
            le -= 1
        if le == i:
            return -1       # the empty line: end of the head
        if (le - i > name_len and h[i + name_len] == 58
                and ex_casecmp(h + i, <const unsigned char*>name, name_len)):
            vs = i + name_len + 1
            ve = le
            while vs < ve and h1_is_ows(h[vs]):
                vs += 1
            while ve > vs and h1_is_ows(h[ve - 1]):
                ve -= 1
            value[0] = head + vs
            value_len[0] = ve - vs
            next[0] = nxt
            return 0
        i = nxt
    return -1


cdef inline int is_chunked(const char* head, size_t n) noexcept nogil:
    """1 if the last coding of the Transfer-Encoding header(s) is ``chunked``, else 0."""
    cdef const unsigned char* v
    cdef const char* value
    cdef size_t vl, a, b, e
    cdef size_t pos = 0
    cdef int last = 0
    while find_header(head, n, b"transfer-encoding", 17, pos, &value, &vl, &pos) == 0:
        v = <const unsigned char*>value
        a = 0
        while a < vl:
            e = a
            while e < vl and v[e] != 44:
                e += 1
            b = e
            while a < b and h1_is_ows(v[a]):
                a += 1
            while b > a and h1_is_ows(v[b - 1]):
                b -= 1
            if b > a:
                last = b - a == 7 and ex_casecmp(v + a, <const unsigned char*>b"chunked", 7)
            a = e + 1
    return last


cdef inline ssize_t dechunk(char* body, size_t n) noexcept nogil:
    """Decode the chunked body[:n] in place; return the decoded length, or -1 if it is
    malformed or incomplete. Extensions and trailers are skipped; bytes after the end of the
    chunked body are left alone."""
    cdef const unsigned char* s = <const unsigned char*>body
    cdef size_t r = 0
    cdef size_t w = 0
    cdef size_t digits, e
    cdef int64_t size
    cdef int d
    cdef const char* p
    while True:
        size = 0
        digits = 0
        while r < n:
            d = h1_hexval(s[r])
            if d < 0:
                break
            size = size * 16 + d
            if size > EX_MAX_CHUNK:
                return -1
            digits += 1
            r += 1
        if digits == 0:
            return -1
        while r < n and h1_is_ows(s[r]):
            r += 1
        if r < n and s[r] == 59:        # ';' extension: up to the LF
            p = <const char*>memchr(body + r, 10, n - r)
            if p == NULL:
                return -1
            r = <size_t>(p - body)
        elif r < n and s[r] == 13:
            r += 1
        if r >= n or s[r] != 10:
            return -1
        r += 1
        if size == 0:
            break
        if <uint64_t>(n - r) < <uint64_t>size:
            return -1
        memmove(body + w, body + r, <size_t>size)
        w += <size_t>size
        r += <size_t>size
        if r < n and s[r] == 10:
            r += 1
        elif r + 1 < n and s[r] == 13 and s[r + 1] == 10:
            r += 2
        else:
            return -1
    while True:     # trailer lines, unchecked, up to the empty line
        p = <const char*>memchr(body + r, 10, n - r)
        if p == NULL:
            return -1
        e = <size_t>(p - body)
        if e == r or (e == r + 1 and s[r] == 13):
            return <ssize_t>w
        r = e + 1


# ----------------------------------------------------------------------------------- regex

cdef inline int regex_pick(const regmatch_t* m, size_t* start, size_t* len) noexcept nogil:
    if m[1].rm_so >= 0:
        start[0] = <size_t>m[1].rm_so
        len[0] = <size_t>(m[1].rm_eo - m[1].rm_so)
    else:
        start[0] = <size_t>m[0].rm_so
        len[0] = <size_t>(m[0].rm_eo - m[0].rm_so)
    return 0


cdef inline int regex_find(const regex_t* re, const char* text, size_t* start,
                           size_t* len) noexcept nogil:
    """Search the NUL-terminated text. 0 found: group 1 if the regex has one that took part
    in the match, else the whole match, as offset/length; -1 no match. ``re`` must not be
    compiled with REG_NOSUB."""
    cdef regmatch_t m[2]
    if regexec(re, text, 2, m, 0) != 0:
        return -1
    return regex_pick(m, start, len)


cdef inline int regex_find_n(const regex_t* re, const char* text, size_t n, size_t* start,
                             size_t* len) noexcept nogil:
    """As regex_find over text[:n] (NUL bytes are ordinary characters) with REG_STARTEND;
    where the libc lacks it (HAVE_REG_STARTEND == 0), text[n] must be NUL. n < 2**31."""
    cdef regmatch_t m[2]
    if n > 0x7FFFFFFF:
        return -1
    m[0].rm_so = 0
    m[0].rm_eo = <regoff_t>n
    if regexec(re, text, 2, m, REG_STARTEND) != 0:
        return -1
    return regex_pick(m, start, len)


# --------------------------------------------------------------------------------- cookies

cdef inline int cookie_max_age(const unsigned char* v, size_t n) noexcept nogil:
    """A Max-Age value (RFC 6265 5.2.2: ["-"] DIGIT+): 1 if <= 0 (expire now), 0 if > 0, -1 if
    it is not valid (the attribute is then ignored)."""
    cdef size_t k = 0
    cdef bint neg = 0
    cdef bint nonzero = 0
    if n > 0 and v[0] == 45:
        neg = 1
        k = 1
    if k >= n:
        return -1
    while k < n:
        if not (48 <= v[k] <= 57):
            return -1
        if v[k] != 48:
            nonzero = 1
        k += 1
    return 1 if (neg or not nonzero) else 0


cdef inline int cookie_parse(const unsigned char* sc, size_t n, size_t* name_end,
                             size_t* value_start, size_t* value_end,
                             bint* remove) noexcept nogil:
    """Parse a Set-Cookie value: the name is sc[0:*name_end] (leading blanks are the caller's
    to skip), the value sc[*value_start:*value_end]. -1 if the cookie is to be ignored."""
    cdef size_t pair_end, eq, a, b, e, an_end, av
    cdef int age
    cdef const unsigned char* p = <const unsigned char*>memchr(sc, 59, n)
    pair_end = n if p == NULL else <size_t>(p - sc)
    p = <const unsigned char*>memchr(sc, 61, pair_end)
    if p == NULL:
        return -1
    eq = <size_t>(p - sc)
    b = eq
    while b > 0 and h1_is_ows(sc[b - 1]):
        b -= 1
    if b == 0:
        return -1
    name_end[0] = b
    a = eq + 1
    e = pair_end
    while a < e and h1_is_ows(sc[a]):
        a += 1
    while e > a and h1_is_ows(sc[e - 1]):
        e -= 1
    value_start[0] = a
    value_end[0] = e
    remove[0] = 0
    a = pair_end
    while a < n:            # attributes: only the last valid Max-Age matters
        a += 1
        p = <const unsigned char*>memchr(sc + a, 59, n - a)
        e = n if p == NULL else <size_t>(p - sc)
        while a < e and h1_is_ows(sc[a]):
            a += 1
        p = <const unsigned char*>memchr(sc + a, 61, e - a)
        if p != NULL:
            an_end = <size_t>(p - sc)
            av = an_end + 1
            while an_end > a and h1_is_ows(sc[an_end - 1]):
                an_end -= 1
            if an_end - a == 7 and ex_casecmp(sc + a, <const unsigned char*>b"max-age", 7):
                b = e
                while av < b and h1_is_ows(sc[av]):
                    av += 1
                while b > av and h1_is_ows(sc[b - 1]):
                    b -= 1
                age = cookie_max_age(sc + av, b - av)
                if age >= 0:        # the last valid Max-Age wins
                    remove[0] = age
        a = e
    return 0


cdef inline int cookie_jar_update(char* jar, size_t* jar_len, size_t cap,
                                  const char* set_cookie_value, size_t n) noexcept nogil:
    """Apply one Set-Cookie value to the jar ``a=1; b=2`` (jar[:*jar_len], room for ``cap``
    bytes, no NUL written): replace or append ``name=value``, or remove the cookie for a
    Max-Age <= 0. 0 done (also when the Set-Cookie is ignored as malformed), -1 it would not
    fit in ``cap`` (jar unchanged)."""
    cdef const unsigned char* sc = <const unsigned char*>set_cookie_value
    cdef unsigned char* j = <unsigned char*>jar
    cdef size_t jl = jar_len[0]
    cdef size_t name_start = 0
    cdef size_t name_end = 0, vs = 0, ve = 0, es = 0, ee = 0, te = 0
    cdef size_t name_len, val_len, i, ne, ds, de, new_len
    cdef ssize_t prev_te = -1
    cdef bint remove = 0
    cdef bint found = 0
    cdef const unsigned char* p
    while name_start < n and h1_is_ows(sc[name_start]):
        name_start += 1
    if cookie_parse(sc + name_start, n - name_start, &name_end, &vs, &ve, &remove) != 0:
        return 0
    name_len = name_end
    val_len = ve - vs
    sc += name_start
    i = 0
    while i < jl:
        while i < jl and h1_is_ows(j[i]):
            i += 1
        es = i
        p = <const unsigned char*>memchr(j + i, 59, jl - i)
        ee = jl if p == NULL else <size_t>(p - j)
        te = ee
        while te > es and h1_is_ows(j[te - 1]):
            te -= 1
        p = <const unsigned char*>memchr(j + es, 61, te - es)
        ne = te if p == NULL else <size_t>(p - j)
        while ne > es and h1_is_ows(j[ne - 1]):
            ne -= 1
        if ne - es == name_len and name_len and memcmp(j + es, sc, name_len) == 0:
            found = 1
            break
        if te > es:
            prev_te = <ssize_t>te
        i = ee + 1
    if remove:
        if not found:
            return 0
        if ee < jl:             # a later entry follows: drop "name=value;" and the blanks
            ds = es
            de = ee + 1
            while de < jl and h1_is_ows(j[de]):
                de += 1
        elif prev_te >= 0:      # the last entry: drop from the end of the previous one
            ds = <size_t>prev_te
            de = jl
        else:
            ds = 0
            de = jl
        memmove(j + ds, j + de, jl - de)
        jar_len[0] = jl - (de - ds)
        return 0
    if found:
        new_len = jl - (te - es) + name_len + 1 + val_len
        if new_len > cap:
            return -1
        memmove(j + es + name_len + 1 + val_len, j + te, jl - te)
        es += name_len      # the name is already there
    else:
        es = jl
        new_len = jl + name_len + 1 + val_len
        if jl:
            new_len += 2
        if new_len > cap:
            return -1
        if jl:
            j[es] = 59
            j[es + 1] = 32
            es += 2
        memcpy(j + es, sc, name_len)
        es += name_len
    j[es] = 61
    memcpy(j + es + 1, sc + vs, val_len)
    jar_len[0] = new_len
    return 0


# ------------------------------------------------------------- construction-time helpers

cdef class JsonPath:
    """A compiled JSON path: ``steps[:nsteps]`` (keys point into memory this object owns)."""
    cdef jp_step* steps
    cdef int nsteps
    cdef readonly str path


cdef class Regex:
    """A compiled POSIX ERE; ``&self.re`` is what regex_find takes (see extract.pyx)."""
    cdef regex_t re
    cdef bint compiled
    cdef readonly bytes pattern
    cdef readonly int groups
