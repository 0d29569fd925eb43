# cython: language_level=3
"""Sans-IO HTTP/1.1 *response* parser: a C-level state machine over byte buffers.

Theory of operation
-------------------
A load generator only needs three facts per response: the status code, whether the connection
may be reused, and where the response ends. ``h1_feed`` is fed the bytes of one response in
pieces of any size (a split may fall anywhere, even inside ``\\r\\n``); it keeps everything it
needs in the small ``h1_parser`` struct (no buffering of input, no allocation) and returns
``H1_AGAIN`` (need more), ``H1_DONE`` (``*consumed`` bytes of this piece belong to the
response; the rest do not) or ``H1_ERROR`` (malformed). ``h1_feed_eof`` tells it the peer
closed: that completes a read-until-close body and is an error anywhere else.

Grammar (shared with the Python reference ``tests/unit/_ref_http.py``):

* A line ends at LF; one CR right before the LF is part of the line ending.
* Status line ``HTTP/1.<d> <3 digits>[ <anything>]``, code 100..599. ``HTTP/1.0`` defaults to
  close, ``HTTP/1.x`` (x > 0) to keep-alive; ``Connection: close`` / ``keep-alive`` override.
* Header lines ``name:value``; the name is an RFC 9110 token. Only ``Content-Length``
  (digits, surrounded by optional SP/HT), ``Transfer-Encoding`` and ``Connection``
  (comma-separated, case-insensitive tokens) are examined; other values are skipped with
  ``memchr``. Obsolete line folding is an error. The head is limited to ``H1_MAX_HEAD`` bytes.
* Interim 1xx responses (except 101) are skipped. No body after a HEAD request, for 101, 204
  and 304. Otherwise: Transfer-Encoding whose last coding is ``chunked`` -> chunked (sizes in
  hex, extensions after ``;``, trailers skipped); any other Transfer-Encoding or neither header
  -> read until close; else Content-Length. Conflicting Content-Length values are an error.

Everything is ``cdef inline``, so the engine compiles the parser into its own loop; the
Python-visible wrapper for tests lives in ``http1.pyx``.
"""

from libc.stdint cimport int32_t, int64_t
from libc.string cimport memchr, memcmp


cdef extern from *:
    """
    /* RFC 9110 tchar: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA */
    static const unsigned char chaperon_h1_tchar[256] = {
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    0,1,0,1,1,1,1,1,0,0,1,1,0,1,1,0,1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,0,
    0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,0,0,0,1,1,
    1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,0,1,0,1,0,
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0};
    """
    const unsigned char chaperon_h1_tchar[256]


cdef enum:
    H1_AGAIN = 0
    H1_DONE = 1
    H1_ERROR = -1

cdef enum:
    H1_MAX_HEAD = 65536
    H1_TOK_CAP = 24

# Largest Content-Length / chunk size accepted (2**50): keeps the arithmetic far from overflow.
cdef extern from *:
    """
    #define CHAPERON_H1_MAX_BODY (((long long)1) << 50)
    """
    const int64_t CHAPERON_H1_MAX_BODY

# flags
cdef enum:
    H1F_NO_BODY = 1         # the request was HEAD
    H1F_HTTP10 = 2
    H1F_HAS_CL = 4
    H1F_TE = 8              # a non-empty Transfer-Encoding was seen
    H1F_CHUNKED = 16        # ... and its last coding so far is "chunked"
    H1F_CLOSE = 32          # Connection: close
    H1F_KEEP_ALIVE = 64     # Connection: keep-alive
    H1F_TOK_OTHER = 128     # current token can match no keyword (too long / inner blanks)
    H1F_IN_HEAD = 256       # still inside status line + headers

# header ids
cdef enum:
    H1H_OTHER = 0
    H1H_CL = 1
    H1H_TE = 2
    H1H_CONN = 3

# line kinds (what a line ending finishes)
cdef enum:
    H1L_STATUS = 0
    H1L_HEADER = 1
    H1L_HEAD_END = 2
    H1L_CHUNK_SIZE = 3
    H1L_CHUNK_DATA_END = 4

# states
cdef enum:
    H1S_VERSION = 0         # matching "HTTP/" (sub = bytes matched)
    H1S_MAJOR = 1
    H1S_DOT = 2
    H1S_MINOR = 3
    H1S_SP = 4
    H1S_CODE = 5            # sub = digits so far
    H1S_AFTER_CODE = 6
    H1S_REASON = 7
    H1S_LINE_START = 8      # start of a header line or of the empty line ending the head
    H1S_NAME = 9
    H1S_VALUE_OWS = 10
    H1S_VALUE_SKIP = 11
    H1S_CL = 12
    H1S_CL_OWS = 13
    H1S_TOKEN_OWS = 14
    H1S_TOKEN = 15
    H1S_CR = 16             # saw CR, LF must follow; ``line`` says which line it ends
    H1S_CHUNK_SIZE = 17
    H1S_CHUNK_OWS = 18
    H1S_CHUNK_EXT = 19
    H1S_CHUNK_DATA = 20
    H1S_CHUNK_DATA_END = 21
    H1S_TRAILER_START = 22
    H1S_TRAILER_CR = 23
    H1S_TRAILER_LINE = 24
    H1S_BODY_CL = 25
    H1S_BODY_EOF = 26
    H1S_DONE = 27
    H1S_ERROR = 28


cdef struct h1_parser:
    int32_t state
    int32_t status          # 0 until the status line is read
    int32_t flags
    int32_t header          # H1H_* of the current header line
    int32_t line            # H1L_* finished by the pending LF (state H1S_CR)
    int32_t sub             # literal position / digit count / pending blanks in a token
    int32_t tok_len
    int32_t head_bytes
    int32_t keep_alive      # valid once done
    int64_t cl              # Content-Length value
    int64_t num             # number being parsed
    int64_t remaining       # body or chunk bytes left
    unsigned char tok[H1_TOK_CAP]


cdef inline void h1_init(h1_parser* p, bint no_body) noexcept nogil:
    p.state = H1S_VERSION
    p.status = 0
    p.flags = H1F_IN_HEAD | (H1F_NO_BODY if no_body else 0)
    p.header = H1H_OTHER
    p.line = H1L_STATUS
    p.sub = 0
    p.tok_len = 0
    p.head_bytes = 0
    p.keep_alive = 0
    p.cl = 0
    p.num = 0
    p.remaining = 0


cdef inline bint h1_is_ows(unsigned char c) noexcept nogil:
    return c == 32 or c == 9


cdef inline int h1_hexval(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef inline unsigned char h1_lower(unsigned char c) noexcept nogil:
    if 65 <= c <= 90:
        return c + 32
    return c


cdef inline void h1_end_token(h1_parser* p) noexcept nogil:
    cdef bint plain = (p.flags & H1F_TOK_OTHER) == 0
    if p.tok_len > 0:
        if p.header == H1H_TE:
            p.flags |= H1F_TE
            if plain and p.tok_len == 7 and memcmp(p.tok, b"chunked", 7) == 0:
                p.flags |= H1F_CHUNKED
            else:
                p.flags &= ~H1F_CHUNKED
        elif p.header == H1H_CONN and plain:
            if p.tok_len == 5 and memcmp(p.tok, b"close", 5) == 0:
                p.flags |= H1F_CLOSE
            elif p.tok_len == 10 and memcmp(p.tok, b"keep-alive", 10) == 0:
                p.flags |= H1F_KEEP_ALIVE
    p.tok_len = 0
    p.sub = 0
    p.flags &= ~H1F_TOK_OTHER


cdef inline int32_t h1_end_header_line(h1_parser* p) noexcept nogil:
    if p.header == H1H_CL:
        if p.sub == 0:
            return H1S_ERROR
        if (p.flags & H1F_HAS_CL) and p.cl != p.num:
            return H1S_ERROR
        p.cl = p.num
        p.flags |= H1F_HAS_CL
    elif p.header != H1H_OTHER:
        h1_end_token(p)
    return H1S_LINE_START


cdef inline int32_t h1_head_end(h1_parser* p) noexcept nogil:
    """The empty line ending the head was read: choose how the body is framed."""
    cdef int32_t st = p.status
    cdef bint ka
    if 100 <= st < 200 and st != 101:
        # interim response: start over with the next status line
        h1_init(p, (p.flags & H1F_NO_BODY) != 0)
        return H1S_VERSION
    p.flags &= ~H1F_IN_HEAD
    if p.flags & H1F_HTTP10:
        ka = (p.flags & H1F_KEEP_ALIVE) != 0 and (p.flags & H1F_CLOSE) == 0
    else:
        ka = (p.flags & H1F_CLOSE) == 0
    if (p.flags & H1F_NO_BODY) or st == 204 or st == 304 or st == 101:
        p.keep_alive = ka and st != 101
        return H1S_DONE
    if p.flags & H1F_TE:
        if p.flags & H1F_CHUNKED:
            p.keep_alive = ka
            p.num = 0
            p.sub = 0
            return H1S_CHUNK_SIZE
        p.keep_alive = 0
        return H1S_BODY_EOF
    if p.flags & H1F_HAS_CL:
        p.keep_alive = ka
        if p.cl == 0:
            return H1S_DONE
        p.remaining = p.cl
        return H1S_BODY_CL
    p.keep_alive = 0
    return H1S_BODY_EOF


cdef inline int32_t h1_line_end(h1_parser* p) noexcept nogil:
    """An LF ended a line of kind ``p.line``; return the next state."""
    cdef int32_t kind = p.line
    if kind == H1L_STATUS:
        return H1S_LINE_START
    if kind == H1L_HEADER:
        return h1_end_header_line(p)
    if kind == H1L_HEAD_END:
        return h1_head_end(p)
    if kind == H1L_CHUNK_SIZE:
        if p.num == 0:
            return H1S_TRAILER_START
        p.remaining = p.num
        return H1S_CHUNK_DATA
    # H1L_CHUNK_DATA_END
    p.num = 0
    p.sub = 0
    return H1S_CHUNK_SIZE


cdef inline int h1_feed(h1_parser* p, const unsigned char* data, size_t n,
                        size_t* consumed) noexcept nogil:
    """Feed ``n`` bytes; see the module docstring for the return values."""
    cdef size_t i = 0
    cdef size_t hs = 0          # where the head bytes of this call start
    cdef size_t take
    cdef unsigned char c
    cdef int32_t st = p.state
    cdef int d
    cdef const unsigned char* q
    cdef const char* version = b"HTTP/"
    consumed[0] = 0
    if st == H1S_DONE:
        return H1_DONE
    if st == H1S_ERROR:
        return H1_ERROR
    while i < n:
        if st == H1S_BODY_CL or st == H1S_CHUNK_DATA:
            take = n - i
            if <int64_t>take > p.remaining:
                take = <size_t>p.remaining
            p.remaining -= <int64_t>take
            i += take
            if p.remaining == 0:
                if st == H1S_BODY_CL:
                    st = H1S_DONE
                    break
                st = H1S_CHUNK_DATA_END
            continue
        if st == H1S_BODY_EOF:
            i = n
            break
        if st == H1S_VALUE_SKIP or st == H1S_REASON or st == H1S_CHUNK_EXT or st == H1S_TRAILER_LINE:
            q = <const unsigned char*>memchr(data + i, 10, n - i)
            if q == NULL:
                i = n
                break
            i = <size_t>(q - data)
            if st == H1S_TRAILER_LINE:
                st = H1S_TRAILER_START
                i += 1
                continue
            if st == H1S_VALUE_SKIP:
                p.line = H1L_HEADER
            elif st == H1S_REASON:
                p.line = H1L_STATUS
            else:
                p.line = H1L_CHUNK_SIZE
            st = H1S_CR       # the LF at data[i] is handled just below
        c = data[i]
        if st == H1S_CR:
            if c != 10:
                st = H1S_ERROR
                break
            if p.line == H1L_HEAD_END:
                p.head_bytes += <int32_t>(i + 1 - hs)
                if p.head_bytes > H1_MAX_HEAD:
                    st = H1S_ERROR
                    break
            st = h1_line_end(p)
            i += 1
            if st == H1S_VERSION:           # interim 1xx: a new head starts here
                hs = i
            elif st == H1S_DONE or st == H1S_ERROR:
                break
            continue
        if st == H1S_LINE_START:
            if chaperon_h1_tchar[c]:
                p.tok[0] = h1_lower(c)
                p.tok_len = 1
                st = H1S_NAME
            elif c == 13:
                p.line = H1L_HEAD_END
                st = H1S_CR
            elif c == 10:
                p.line = H1L_HEAD_END
                st = H1S_CR
                continue
            else:
                st = H1S_ERROR
                break
        elif st == H1S_NAME:
            if chaperon_h1_tchar[c]:
                if p.tok_len < H1_TOK_CAP:
                    p.tok[p.tok_len] = h1_lower(c)
                p.tok_len += 1
            elif c == 58:   # ':'
                p.header = H1H_OTHER
                if p.tok_len == 14 and memcmp(p.tok, b"content-length", 14) == 0:
                    p.header = H1H_CL
                elif p.tok_len == 17 and memcmp(p.tok, b"transfer-encoding", 17) == 0:
                    p.header = H1H_TE
                elif p.tok_len == 10 and memcmp(p.tok, b"connection", 10) == 0:
                    p.header = H1H_CONN
                p.tok_len = 0
                p.sub = 0
                p.num = 0
                p.flags &= ~H1F_TOK_OTHER
                st = H1S_VALUE_SKIP if p.header == H1H_OTHER else H1S_VALUE_OWS
            else:
                st = H1S_ERROR
                break
        elif st == H1S_VALUE_OWS:
            if not h1_is_ows(c):
                st = H1S_CL if p.header == H1H_CL else H1S_TOKEN_OWS
                continue
        elif st == H1S_CL:
            if 48 <= c <= 57:
                p.num = p.num * 10 + (c - 48)
                p.sub += 1
                if p.num > CHAPERON_H1_MAX_BODY:
                    st = H1S_ERROR
                    break
            elif h1_is_ows(c):
                st = H1S_CL_OWS
            elif c == 13:
                p.line = H1L_HEADER
                st = H1S_CR
            elif c == 10:
                p.line = H1L_HEADER
                st = H1S_CR
                continue
            else:
                st = H1S_ERROR
                break
        elif st == H1S_CL_OWS:
            if h1_is_ows(c):
                pass
            elif c == 13:
                p.line = H1L_HEADER
                st = H1S_CR
            elif c == 10:
                p.line = H1L_HEADER
                st = H1S_CR
                continue
            else:
                st = H1S_ERROR
                break
        elif st == H1S_TOKEN_OWS or st == H1S_TOKEN:
            if c == 44:     # ','
                h1_end_token(p)
                st = H1S_TOKEN_OWS
            elif c == 13:
                p.line = H1L_HEADER
                st = H1S_CR
            elif c == 10:
                p.line = H1L_HEADER
                st = H1S_CR
                continue
            elif h1_is_ows(c):
                if st == H1S_TOKEN:
                    p.sub += 1      # pending blanks: trailing ones are dropped
            else:
                st = H1S_TOKEN
                if p.sub > 0:
                    p.flags |= H1F_TOK_OTHER
                    p.sub = 0
                if p.tok_len < H1_TOK_CAP:
                    p.tok[p.tok_len] = h1_lower(c)
                    p.tok_len += 1
                else:
                    p.flags |= H1F_TOK_OTHER
        elif st == H1S_VERSION:
            if c != <unsigned char>version[p.sub]:
                st = H1S_ERROR
                break
            p.sub += 1
            if p.sub == 5:
                st = H1S_MAJOR
        elif st == H1S_MAJOR:
            if c != 49:     # '1'
                st = H1S_ERROR
                break
            st = H1S_DOT
        elif st == H1S_DOT:
            if c != 46:
                st = H1S_ERROR
                break
            st = H1S_MINOR
        elif st == H1S_MINOR:
            if not (48 <= c <= 57):
                st = H1S_ERROR
                break
            if c == 48:
                p.flags |= H1F_HTTP10
            st = H1S_SP
        elif st == H1S_SP:
            if c != 32:
                st = H1S_ERROR
                break
            p.sub = 0
            p.status = 0
            st = H1S_CODE
        elif st == H1S_CODE:
            if not (48 <= c <= 57):
                st = H1S_ERROR
                break
            p.status = p.status * 10 + (c - 48)
            p.sub += 1
            if p.sub == 3:
                if p.status < 100 or p.status > 599:
                    st = H1S_ERROR
                    break
                st = H1S_AFTER_CODE
        elif st == H1S_AFTER_CODE:
            if c == 32:
                st = H1S_REASON
            elif c == 13:
                p.line = H1L_STATUS
                st = H1S_CR
            elif c == 10:
                p.line = H1L_STATUS
                st = H1S_CR
                continue
            else:
                st = H1S_ERROR
                break
        elif st == H1S_CHUNK_SIZE:
            d = h1_hexval(c)
            if d >= 0:
                p.num = p.num * 16 + d
                p.sub += 1
                if p.num > CHAPERON_H1_MAX_BODY:
                    st = H1S_ERROR
                    break
            elif p.sub == 0:
                st = H1S_ERROR
                break
            elif c == 59:   # ';'
                st = H1S_CHUNK_EXT
            elif h1_is_ows(c):
                st = H1S_CHUNK_OWS
            elif c == 13:
                p.line = H1L_CHUNK_SIZE
                st = H1S_CR
            elif c == 10:
                p.line = H1L_CHUNK_SIZE
                st = H1S_CR
                continue
            else:
                st = H1S_ERROR
                break
        elif st == H1S_CHUNK_OWS:
            if h1_is_ows(c):
                pass
            elif c == 59:
                st = H1S_CHUNK_EXT
            elif c == 13:
                p.line = H1L_CHUNK_SIZE
                st = H1S_CR
            elif c == 10:
                p.line = H1L_CHUNK_SIZE
                st = H1S_CR
                continue
            else:
                st = H1S_ERROR
                break
        elif st == H1S_CHUNK_DATA_END:
            if c == 13:
                p.line = H1L_CHUNK_DATA_END
                st = H1S_CR
            elif c == 10:
                p.line = H1L_CHUNK_DATA_END
                st = H1S_CR
                continue
            else:
                st = H1S_ERROR
                break
        elif st == H1S_TRAILER_START:
            if c == 13:
                st = H1S_TRAILER_CR
            elif c == 10:
                st = H1S_DONE
                i += 1
                break
            else:
                st = H1S_TRAILER_LINE
                continue
        elif st == H1S_TRAILER_CR:
            if c == 10:
                st = H1S_DONE
                i += 1
                break
            st = H1S_TRAILER_LINE
            continue
        else:
            st = H1S_ERROR
            break
        i += 1

    p.state = st
    if st == H1S_ERROR:
        return H1_ERROR
    if st == H1S_DONE:
        consumed[0] = i
        return H1_DONE
    if p.flags & H1F_IN_HEAD:
        p.head_bytes += <int32_t>(n - hs)
        if p.head_bytes > H1_MAX_HEAD:
            p.state = H1S_ERROR
            return H1_ERROR
    consumed[0] = n
    return H1_AGAIN


cdef inline int h1_feed_eof(h1_parser* p) noexcept nogil:
    """The peer closed: H1_DONE completes a read-until-close body, anything else is H1_ERROR."""
    if p.state == H1S_BODY_EOF or p.state == H1S_DONE:
        p.state = H1S_DONE
        return H1_DONE
    p.state = H1S_ERROR
    return H1_ERROR
