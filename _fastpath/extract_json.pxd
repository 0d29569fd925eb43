# cython: language_level=3
"""The JSON half of ``extract.pxd``: a skipping scanner that finds one value by path.

``extract.pxd`` re-exports everything here; cimport from ``_fastpath.extract``.

Theory of operation
-------------------
``json_path_find`` walks a compiled path (``jp_step``: object key or array index) over the
document (RFC 8259). At each level it reads the members or elements one by one, skips the
values it does not want with ``json_skip_value`` and descends into the one it wants. No tree is
built and nothing after the value found is read, so the cost is the bytes before the value
plus the value itself.

``json_skip_value`` is iterative: one bit per open container (object or array) in a small
stack, at most ``JP_MAX_DEPTH`` containers open in all (the path's own levels count). Every
read is bounds-checked against ``n``, and everything scanned is checked strictly: string
escapes, no raw control characters in strings, number syntax, ``true``/``false``/``null``,
separators. A syntax error before or inside the value found is ``JP_MALFORMED``; one after it
is not seen (the scanner is lazy), so -2 means "malformed", but 0 and -1 do not prove the
whole document well-formed. Positions are ``size_t``; ``EX_BAD`` marks a syntax error.

Document keys are compared with the path's (unescaped) keys after decoding their escapes on
the fly. ``json_unescape`` decodes a string body to UTF-8 with the same escape decoder: an
escape never decodes to more bytes than it takes (``\\uXXXX`` 6 -> at most 3, a surrogate pair
12 -> 4, a lone surrogate 6 -> U+FFFD's 3), so ``out`` needs ``n`` bytes and may be ``s``.
Bytes outside escapes are copied as they are (UTF-8 is not validated).
"""

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memmove

from _fastpath.http1 cimport h1_hexval


cdef extern from *:
    """
    #define CHAPERON_EX_BAD ((size_t)-1)
    """
    const size_t EX_BAD "CHAPERON_EX_BAD"          # position result meaning "syntax error"


cdef enum:
    JP_KEY = 1
    JP_INDEX = 2

cdef enum:
    JP_FOUND = 0
    JP_NOT_FOUND = -1
    JP_MALFORMED = -2
    JP_MAX_DEPTH = 512
    JP_DEPTH_WORDS = 8      # JP_MAX_DEPTH / 64: the words of json_skip_value's bit stack


cdef struct jp_step:
    int32_t kind            # JP_KEY or JP_INDEX
    int64_t index           # JP_INDEX: element number (>= 0)
    const char* key         # JP_KEY: the key, UTF-8, not escaped (may contain NUL)
    size_t key_len


# ------------------------------------------------------------------------------------ JSON

cdef inline size_t json_ws(const unsigned char* s, size_t n, size_t i) noexcept nogil:
    while i < n and (s[i] == 32 or s[i] == 10 or s[i] == 13 or s[i] == 9):
        i += 1
    return i


cdef inline int32_t json_hex4(const unsigned char* s, size_t n, size_t i) noexcept nogil:
    """The value of the 4 hex digits at s[i:i+4], -1 if they are not that."""
    cdef int32_t v = 0
    cdef int d
    cdef size_t k
    if i > n or n - i < 4:
        return -1
    for k in range(i, i + 4):
        d = h1_hexval(s[k])
        if d < 0:
            return -1
        v = v * 16 + d
    return v


cdef inline size_t ex_utf8(int32_t cp, unsigned char* buf) noexcept nogil:
    if cp < 0x80:
        buf[0] = <unsigned char>cp
        return 1
    if cp < 0x800:
        buf[0] = <unsigned char>(0xC0 | (cp >> 6))
        buf[1] = <unsigned char>(0x80 | (cp & 0x3F))
        return 2
    if cp < 0x10000:
        buf[0] = <unsigned char>(0xE0 | (cp >> 12))
        buf[1] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
        buf[2] = <unsigned char>(0x80 | (cp & 0x3F))
        return 3
    buf[0] = <unsigned char>(0xF0 | (cp >> 18))
    buf[1] = <unsigned char>(0x80 | ((cp >> 12) & 0x3F))
    buf[2] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
    buf[3] = <unsigned char>(0x80 | (cp & 0x3F))
    return 4


cdef inline size_t json_decode_escape(const unsigned char* s, size_t n, size_t i,
                                      unsigned char* buf, size_t* m) noexcept nogil:
    """Decode the escape at s[i] (a backslash) into buf (4 bytes); return the next position.

    Never more bytes out than in: a bad or truncated escape yields its backslash alone.
    """
    cdef int32_t cp, lo
    cdef unsigned char c
    m[0] = 1
    buf[0] = 92
    if i + 1 >= n:
        return i + 1
    c = s[i + 1]
    if c == 117:    # u
        cp = json_hex4(s, n, i + 2)
        if cp < 0:
            return i + 1
        i += 6
        if 0xD800 <= cp <= 0xDBFF:
            lo = -1
            if i + 6 <= n and s[i] == 92 and s[i + 1] == 117:
                lo = json_hex4(s, n, i + 2)
            if 0xDC00 <= lo <= 0xDFFF:
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                i += 6
            else:
                cp = 0xFFFD     # lone high surrogate
        elif 0xDC00 <= cp <= 0xDFFF:
            cp = 0xFFFD         # lone low surrogate
        m[0] = ex_utf8(cp, buf)
        return i
    if c == 34 or c == 92 or c == 47:
        buf[0] = c
    elif c == 98:
        buf[0] = 8
    elif c == 102:
        buf[0] = 12
    elif c == 110:
        buf[0] = 10
    elif c == 114:
        buf[0] = 13
    elif c == 116:
        buf[0] = 9
    else:
        return i + 1
    return i + 2


cdef inline size_t json_unescape(const char* s, size_t n, char* out) noexcept nogil:
    """Decode a JSON string body (between the quotes) to UTF-8 in ``out`` (room for ``n``
    bytes; ``out == s`` is allowed); return the decoded length."""
    cdef const unsigned char* us = <const unsigned char*>s
    cdef unsigned char buf[4]
    cdef size_t r = 0
    cdef size_t w = 0
    cdef size_t run, m
    cdef const char* p
    while r < n:
        p = <const char*>memchr(s + r, 92, n - r)
        run = (n if p == NULL else <size_t>(p - s)) - r
        if run:
            memmove(out + w, s + r, run)
            w += run
            r += run
        if r >= n:
            break
        r = json_decode_escape(us, n, r, buf, &m)
        memcpy(out + w, buf, m)
        w += m
    return w


cdef inline size_t json_skip_string(const unsigned char* s, size_t n, size_t i,
                                    bint* escaped) noexcept nogil:
    """s[i] is '"': the position after the closing quote, or EX_BAD. Sets *escaped if the
    string holds an escape (never clears it)."""
    cdef unsigned char c
    i += 1
    while i < n:
        c = s[i]
        if c == 34:
            return i + 1
        if c == 92:
            escaped[0] = 1
            if i + 1 >= n:
                return EX_BAD
            c = s[i + 1]
            if c == 117:
                if json_hex4(s, n, i + 2) < 0:
                    return EX_BAD
                i += 6
            elif (c == 34 or c == 92 or c == 47 or c == 98 or c == 102 or c == 110
                  or c == 114 or c == 116):
                i += 2
            else:
                return EX_BAD
        elif c < 32:
            return EX_BAD
        else:
            i += 1
    return EX_BAD


cdef inline size_t json_skip_digits(const unsigned char* s, size_t n, size_t i) noexcept nogil:
    """At least one digit at s[i]: the position after the run, else EX_BAD."""
    if i >= n or not (48 <= s[i] <= 57):
        return EX_BAD
    while i < n and 48 <= s[i] <= 57:
        i += 1
    return i


cdef inline size_t json_skip_number(const unsigned char* s, size_t n, size_t i) noexcept nogil:
    if s[i] == 45:      # -
        i += 1
    if i < n and s[i] == 48:
        i += 1
    else:
        i = json_skip_digits(s, n, i)
        if i == EX_BAD:
            return EX_BAD
    if i < n and s[i] == 46:    # .
        i = json_skip_digits(s, n, i + 1)
        if i == EX_BAD:
            return EX_BAD
    if i < n and (s[i] == 101 or s[i] == 69):   # e E
        i += 1
        if i < n and (s[i] == 43 or s[i] == 45):
            i += 1
        i = json_skip_digits(s, n, i)
    return i


cdef inline size_t json_skip_literal(const unsigned char* s, size_t n, size_t i) noexcept nogil:
    cdef const char* word
    cdef size_t k
    if s[i] == 116:
        word = b"true"
        k = 4
    elif s[i] == 102:
        word = b"false"
        k = 5
    elif s[i] == 110:
        word = b"null"
        k = 4
    else:
        return EX_BAD
    if n - i < k or memcmp(s + i, word, k) != 0:
        return EX_BAD
    return i + k


cdef inline size_t json_member_key(const unsigned char* s, size_t n, size_t i) noexcept nogil:
    """Skip ``"key" ws : ws`` at s[i]; return where the member's value starts, or EX_BAD."""
    cdef bint esc = 0
    if i >= n or s[i] != 34:
        return EX_BAD
    i = json_skip_string(s, n, i, &esc)
    if i == EX_BAD:
        return EX_BAD
    i = json_ws(s, n, i)
    if i >= n or s[i] != 58:
        return EX_BAD
    return json_ws(s, n, i + 1)


cdef inline size_t json_skip_value(const unsigned char* s, size_t n, size_t i,
                                   int depth0) noexcept nogil:
    """Skip the value starting at s[i] inside ``depth0`` open containers; return the position
    after it, or EX_BAD (syntax error, truncated, or nested deeper than JP_MAX_DEPTH)."""
    cdef uint64_t objs[JP_DEPTH_WORDS]      # bit d: open container d is an object
    cdef int d = 0
    cdef unsigned char c, close
    cdef bint esc = 0
    cdef bint is_obj
    while True:
        # here s[i] should start a value
        if i >= n:
            return EX_BAD
        c = s[i]
        if c == 123 or c == 91:     # { [
            if depth0 + d >= JP_MAX_DEPTH:
                return EX_BAD
            is_obj = c == 123
            if is_obj:
                objs[d >> 6] |= (<uint64_t>1) << (d & 63)
            else:
                objs[d >> 6] &= ~((<uint64_t>1) << (d & 63))
            d += 1
            i = json_ws(s, n, i + 1)
            if i >= n:
                return EX_BAD
            if s[i] == (125 if is_obj else 93):
                i += 1
                d -= 1
            elif is_obj:
                i = json_member_key(s, n, i)
                if i == EX_BAD:
                    return EX_BAD
                continue
            else:
                continue
        elif c == 34:
            i = json_skip_string(s, n, i, &esc)
        elif c == 45 or 48 <= c <= 57:
            i = json_skip_number(s, n, i)
        else:
            i = json_skip_literal(s, n, i)
        if i == EX_BAD:
            return EX_BAD
        # a value ended: close containers until one has a next member or element
        while True:
            if d == 0:
                return i
            i = json_ws(s, n, i)
            if i >= n:
                return EX_BAD
            is_obj = (objs[(d - 1) >> 6] >> ((d - 1) & 63)) & 1
            close = 125 if is_obj else 93
            if s[i] == close:
                i += 1
                d -= 1
            elif s[i] == 44:    # ,
                i = json_ws(s, n, i + 1)
                if is_obj:
                    i = json_member_key(s, n, i)
                    if i == EX_BAD:
                        return EX_BAD
                break
            else:
                return EX_BAD


cdef inline bint json_key_equals(const unsigned char* k, size_t kn, bint escaped,
                                 const unsigned char* key, size_t key_len) noexcept nogil:
    """Whether the document key body k[:kn] (escaped) decodes to key[:key_len]."""
    cdef unsigned char buf[4]
    cdef size_t p = 0
    cdef size_t q = 0
    cdef size_t m
    if not escaped:
        return kn == key_len and memcmp(k, key, kn) == 0
    while p < kn:
        if k[p] != 92:
            if q >= key_len or k[p] != key[q]:
                return 0
            p += 1
            q += 1
        else:
            p = json_decode_escape(k, kn, p, buf, &m)
            if key_len - q < m or memcmp(buf, key + q, m) != 0:
                return 0
            q += m
    return q == key_len


cdef inline int json_wrong_type(unsigned char c) noexcept nogil:
    """A step met a value of another kind: not found if it starts a valid value."""
    if (c == 123 or c == 91 or c == 34 or c == 45 or 48 <= c <= 57 or c == 116 or c == 102
            or c == 110):
        return JP_NOT_FOUND
    return JP_MALFORMED


cdef inline int json_path_find(const char* doc, size_t n, const jp_step* steps, int nsteps,
                               const char** out, size_t* out_len,
                               int* is_string) noexcept nogil:
    """Find the value at ``steps`` in doc[:n]. 0 found (*out/*out_len: the value's text; for a
    string its body inside the quotes, still escaped, and *is_string = 1), -1 not found, -2
    malformed. See the module docstring."""
    cdef const unsigned char* s = <const unsigned char*>doc
    cdef size_t i = json_ws(s, n, 0)
    cdef size_t e, ks
    cdef int k
    cdef int64_t j
    cdef bint esc, hit
    cdef unsigned char c
    for k in range(nsteps):
        if i >= n:
            return JP_MALFORMED
        c = s[i]
        if steps[k].kind == JP_KEY:
            if c != 123:
                return json_wrong_type(c)
        elif steps[k].kind == JP_INDEX:
            if c != 91:
                return json_wrong_type(c)
            if steps[k].index < 0:
                return JP_NOT_FOUND
        else:
            return JP_NOT_FOUND
        if k + 1 > JP_MAX_DEPTH:
            return JP_MALFORMED
        i = json_ws(s, n, i + 1)
        if i >= n:
            return JP_MALFORMED
        if s[i] == (125 if c == 123 else 93):
            return JP_NOT_FOUND     # empty container
        j = 0
        while True:
            # at a member's key (object) or an element (array)
            if c == 123:
                if s[i] != 34:
                    return JP_MALFORMED
                esc = 0
                ks = i + 1
                e = json_skip_string(s, n, i, &esc)
                if e == EX_BAD:
                    return JP_MALFORMED
                hit = json_key_equals(s + ks, e - 1 - ks, esc,
                                      <const unsigned char*>steps[k].key, steps[k].key_len)
                i = json_ws(s, n, e)
                if i >= n or s[i] != 58:
                    return JP_MALFORMED
                i = json_ws(s, n, i + 1)
            else:
                hit = j == steps[k].index
            if hit:
                break
            e = json_skip_value(s, n, i, k + 1)
            if e == EX_BAD:
                return JP_MALFORMED
            i = json_ws(s, n, e)
            if i >= n:
                return JP_MALFORMED
            if s[i] == 44:
                i = json_ws(s, n, i + 1)
                if i >= n:
                    return JP_MALFORMED
                j += 1
            elif s[i] == (125 if c == 123 else 93):
                return JP_NOT_FOUND
            else:
                return JP_MALFORMED
    if i >= n:
        return JP_MALFORMED
    esc = 0
    if s[i] == 34:
        e = json_skip_string(s, n, i, &esc)
        if e == EX_BAD:
            return JP_MALFORMED
        out[0] = doc + i + 1
        out_len[0] = e - i - 2
        is_string[0] = 1
        return JP_FOUND
    e = json_skip_value(s, n, i, nsteps)
    if e == EX_BAD:
        return JP_MALFORMED
    out[0] = doc + i
    out_len[0] = e - i
    is_string[0] = 0
    return JP_FOUND
