# cython: language_level=3
"""Sans-IO WebSocket (RFC 6455) client codec: C-level state machines over byte buffers.

Theory of operation
-------------------
Three independent pieces, all ``cdef inline ... noexcept nogil`` over plain C memory, which the
engine compiles into its own loop (``ws.pyx`` wraps them for tests; ``tests/unit/_ref_ws.py`` is
the pure-Python reference):

* **Handshake.** The client's ``Sec-WebSocket-Key`` is 16 random bytes in base64
  (``ws_key_encode``); the server must answer 101 with ``Upgrade: websocket``, ``upgrade`` in
  its ``Connection`` list and ``Sec-WebSocket-Accept`` = base64(SHA-1(key + GUID))
  (``ws_accept_for``; libcrypto does SHA-1 and base64). ``ws_handshake_feed`` gathers the
  response head, in pieces of any size, into the 8 KiB buffer of ``ws_handshake`` and checks
  each line when its LF arrives (one CR before the LF is dropped): 0 need more, 1 valid
  (``*consumed`` ends at the blank line; what follows is frames), -1 invalid (``h.error``;
  ``h.status`` once read). We offer no extension, so a server choosing one is refused;
  ``Sec-WebSocket-Protocol`` is not examined.
* **Decoder (server -> client).** ``ws_decode`` gathers a frame header (2..10 bytes) in
  ``d.hdr`` across calls, checks the first two bytes at once and the extended length when
  complete. Payload goes to ``d.msg`` (data frames; the message grows frame by frame, room is
  reserved when a header arrives and never beyond ``d.limit``) or to ``d.ctl`` (control frames,
  <= 125 bytes, also between fragments of a message). A call returns at the first complete
  event, ``*consumed`` saying how much input it used; the caller calls again with the rest.
  Violations are sticky ``WS_EV_ERROR`` with a static ``d.error``. After ``WS_EV_CLOSE`` the
  server may send nothing: later input is consumed and ignored. Text is *not* checked for
  valid UTF-8 (a load generator only counts it); non-minimal length encodings are accepted;
  close codes are reported, not range-checked.
* **Encoder (client -> server).** ``ws_frame_header`` writes a masked client header (FIN, 7/16/
  64-bit length, then ``mask_key`` big-endian as the 4 mask bytes); ``ws_mask`` XORs a payload
  in place 8 bytes at a time, given the payload offset of its first byte, so a payload may be
  masked in pieces (e.g. straight into a send buffer).

Ownership: ``d.msg.data`` belongs to the decoder (``realloc``; ``ws_decoder_free`` frees it). A
message's bytes stay valid until ``ws_message_done`` or the next ``ws_decode`` call (which drops
a message not marked done). To keep a message without copying, take ``d.msg.data``, set
``d.msg.data = NULL; d.msg.cap = 0`` and call ``ws_message_done``. A buffer grown past
``d.keep_cap`` is freed when its message is done, so idle connections hold little memory.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

from _fastpath.http1 cimport h1_lower
from _fastpath.includes.crypto cimport SHA1, EVP_EncodeBlock


cdef enum:  # events returned by ws_decode
    WS_EV_NONE = 0      # all input consumed, need more bytes
    WS_EV_TEXT = 1      # a complete text message is in d.msg.data[0:d.msg.len]
    WS_EV_BINARY = 2    # same, binary
    WS_EV_PING = 3      # payload in d.ctl[0:d.ctl_len] (<= 125 bytes)
    WS_EV_PONG = 4      # same
    WS_EV_CLOSE = 5     # d.close_code (1005 when absent); reason in d.ctl[2:d.ctl_len]
    WS_EV_ERROR = 6     # protocol violation; d.error is a static C string saying what
    WS_EV_NOMEM = 7     # realloc failed (sticky, like an error)

cdef enum:  # opcodes
    WS_OP_CONT = 0, WS_OP_TEXT = 1, WS_OP_BINARY = 2
    WS_OP_CLOSE = 8, WS_OP_PING = 9, WS_OP_PONG = 10

cdef enum:
    WS_MAX_CTL = 125                # control frame payload limit
    WS_MAX_HEADER = 14              # 2 + 8 (64-bit length) + 4 (mask)
    WS_KEEP_CAP = 65536             # default d.keep_cap
    WS_MAX_HANDSHAKE = 8192         # response head limit, blank line included
    WS_ACCEPT_LEN = 28              # base64 of a 20-byte SHA-1
    WS_KEY_LEN = 24                 # base64 of 16 bytes
    WS_MAX_KEY = 128                # longest key ws_accept_for takes

cdef enum:  # decoder states
    WSD_HEADER = 0, WSD_PAYLOAD = 1, WSD_CLOSED = 2, WSD_ERROR = 3

cdef enum:  # handshake flags: what the header lines said so far
    WSH_STATUS_SEEN = 1, WSH_UPGRADE_OK = 2, WSH_UPGRADE_BAD = 4, WSH_CONN_UPGRADE = 8
    WSH_ACCEPT_OK = 16, WSH_ACCEPT_BAD = 32, WSH_EXTENSION = 64


cdef struct ws_buf:
    unsigned char* data
    size_t len
    size_t cap


cdef struct ws_decoder:
    int state                       # WSD_*
    int opcode                      # of the frame being read
    int fin
    int frag_opcode                 # WS_OP_TEXT/BINARY of an open fragmented message, else 0
    int msg_ready                   # d.msg holds a delivered message not yet marked done
    int nomem
    size_t hdr_len                  # header bytes gathered
    size_t hdr_need                 # header bytes this frame needs (2, 4 or 10)
    uint64_t payload_len
    uint64_t remaining              # payload bytes still expected
    ws_buf msg
    unsigned char hdr[WS_MAX_HEADER]
    unsigned char ctl[WS_MAX_CTL]
    size_t ctl_len
    int close_code
    const char* error
    size_t limit                    # largest message accepted
    size_t keep_cap                 # larger msg buffers are freed once their message is done


cdef struct ws_handshake:
    int state                       # 0 gathering, 1 valid, -1 invalid
    int status
    int flags                       # WSH_*
    const char* error
    size_t len
    size_t line_start
    size_t expected_len
    char expected[WS_ACCEPT_LEN + 1]
    unsigned char head[WS_MAX_HANDSHAKE]


# ---------------------------------------------------------------- decoder

cdef inline void ws_decoder_init(ws_decoder* d, size_t limit) noexcept nogil:
    memset(d, 0, sizeof(ws_decoder))    # WSD_HEADER, no message, msg.data NULL
    d.hdr_need = 2
    d.limit = limit
    d.keep_cap = WS_KEEP_CAP


cdef inline void ws_decoder_free(ws_decoder* d) noexcept nogil:
    free(d.msg.data)
    d.msg.data = NULL
    d.msg.len = 0
    d.msg.cap = 0


cdef inline void ws_message_done(ws_decoder* d) noexcept nogil:
    d.msg.len = 0
    d.msg_ready = 0
    if d.msg.cap > d.keep_cap:
        ws_decoder_free(d)


cdef inline int ws_fail(ws_decoder* d, const char* why) noexcept nogil:
    d.state = WSD_ERROR
    d.error = why
    return WS_EV_ERROR


cdef inline int ws_header_start(ws_decoder* d) noexcept nogil:
    """The first two header bytes are in: check them and say how many more are needed."""
    cdef unsigned char b0 = d.hdr[0]
    cdef unsigned char b1 = d.hdr[1]
    cdef int op = b0 & 0x0F
    cdef unsigned char len7 = b1 & 0x7F
    d.fin = (b0 & 0x80) != 0
    d.opcode = op
    if b0 & 0x70:
        return ws_fail(d, b"reserved bits set (no extension was negotiated)")
    if not (op == WS_OP_CONT or op == WS_OP_TEXT or op == WS_OP_BINARY
            or op == WS_OP_CLOSE or op == WS_OP_PING or op == WS_OP_PONG):
        return ws_fail(d, b"unknown opcode")
    if b1 & 0x80:
        return ws_fail(d, b"masked frame from the server")
    if op >= WS_OP_CLOSE:
        if not d.fin:
            return ws_fail(d, b"fragmented control frame")
        if len7 > WS_MAX_CTL:
            return ws_fail(d, b"control frame payload over 125 bytes")
        if op == WS_OP_CLOSE and len7 == 1:
            return ws_fail(d, b"close frame with a 1-byte payload")
    elif op == WS_OP_CONT:
        if d.frag_opcode == 0:
            return ws_fail(d, b"continuation frame without a message in progress")
    elif d.frag_opcode != 0:
        return ws_fail(d, b"new data frame inside a fragmented message")
    if len7 == 126:
        d.hdr_need = 4
    elif len7 == 127:
        d.hdr_need = 10
    return WS_EV_NONE


cdef inline int ws_header_done(ws_decoder* d) noexcept nogil:
    """The whole header is in: find the payload length, make room, start the payload."""
    cdef uint64_t n = d.hdr[1] & 0x7F
    cdef size_t need, cap
    cdef unsigned char* p
    cdef int k
    if n == 126:
        n = (<uint64_t>d.hdr[2] << 8) | d.hdr[3]
    elif n == 127:
        if d.hdr[2] & 0x80:
            return ws_fail(d, b"64-bit payload length with the high bit set")
        n = 0
        for k in range(2, 10):
            n = (n << 8) | d.hdr[k]
    if d.opcode < WS_OP_CLOSE:
        # d.msg.len <= d.limit always holds, so the subtraction cannot wrap.
        if n > <uint64_t>(d.limit - d.msg.len):
            return ws_fail(d, b"message too big")
        need = d.msg.len + <size_t>n
        if need > d.msg.cap:
            cap = d.msg.cap * 2
            if cap < 256:
                cap = 256
            if cap < need or cap > d.limit:
                cap = need
            p = <unsigned char*>realloc(d.msg.data, cap)
            if p == NULL:
                d.nomem = 1
                ws_fail(d, b"out of memory")
                return WS_EV_NOMEM
            d.msg.data = p
            d.msg.cap = cap
    else:
        d.ctl_len = 0
    d.payload_len = n
    d.remaining = n
    d.state = WSD_PAYLOAD
    return WS_EV_NONE


cdef inline int ws_frame_done(ws_decoder* d) noexcept nogil:
    """A frame's payload is complete: the event it makes, if any."""
    cdef int op = d.opcode
    d.state = WSD_HEADER
    d.hdr_len = 0
    d.hdr_need = 2
    if op < WS_OP_CLOSE:
        if op == WS_OP_CONT:
            op = d.frag_opcode
        if not d.fin:
            d.frag_opcode = op
            return WS_EV_NONE
        d.frag_opcode = 0
        d.msg_ready = 1
        return WS_EV_TEXT if op == WS_OP_TEXT else WS_EV_BINARY
    if op == WS_OP_PING:
        return WS_EV_PING
    if op == WS_OP_PONG:
        return WS_EV_PONG
    d.close_code = (d.ctl[0] << 8) | d.ctl[1] if d.ctl_len >= 2 else 1005
    d.state = WSD_CLOSED
    return WS_EV_CLOSE


cdef inline int ws_decode(ws_decoder* d, const unsigned char* data, size_t n,
                          size_t* consumed) noexcept nogil:
    """Feed ``n`` bytes from the server; see the module docstring for the protocol."""
    cdef size_t i = 0
    cdef size_t take
    cdef int ev
    consumed[0] = 0
    if d.state == WSD_ERROR:
        return WS_EV_NOMEM if d.nomem else WS_EV_ERROR
    if d.msg_ready:
        ws_message_done(d)
    while i < n:
        if d.state == WSD_HEADER:
            take = d.hdr_need - d.hdr_len
            if take > n - i:
                take = n - i
            memcpy(d.hdr + d.hdr_len, data + i, take)
            d.hdr_len += take
            i += take
            if d.hdr_len < d.hdr_need:
                break
            if d.hdr_len == 2:
                ev = ws_header_start(d)
                if ev != WS_EV_NONE:
                    consumed[0] = i
                    return ev
                if d.hdr_need > 2:
                    continue
            ev = ws_header_done(d)
            if ev == WS_EV_NONE and d.remaining == 0:
                ev = ws_frame_done(d)
            if ev != WS_EV_NONE:
                consumed[0] = i
                return ev
        elif d.state == WSD_PAYLOAD:
            take = n - i
            if <uint64_t>take > d.remaining:
                take = <size_t>d.remaining
            if d.opcode < WS_OP_CLOSE:
                memcpy(d.msg.data + d.msg.len, data + i, take)
                d.msg.len += take
            else:
                memcpy(d.ctl + d.ctl_len, data + i, take)
                d.ctl_len += take
            i += take
            d.remaining -= take
            if d.remaining == 0:
                ev = ws_frame_done(d)
                if ev != WS_EV_NONE:
                    consumed[0] = i
                    return ev
        else:   # WSD_CLOSED: the server may send nothing after its close frame
            break
    consumed[0] = n
    return WS_EV_NONE


# ---------------------------------------------------------------- encoder

cdef inline size_t ws_frame_header_ex(unsigned char* out, int opcode, bint fin,
                                      uint64_t payload_len, uint32_t mask_key) noexcept nogil:
    """A masked client frame header into ``out`` (room for WS_MAX_HEADER); returns its size."""
    cdef size_t p
    cdef int k
    out[0] = (0x80 if fin else 0) | (opcode & 0x0F)
    if payload_len < 126:
        out[1] = 0x80 | <unsigned char>payload_len
        p = 2
    elif payload_len <= 0xFFFF:
        out[1] = 0x80 | 126
        out[2] = <unsigned char>(payload_len >> 8)
        out[3] = <unsigned char>payload_len
        p = 4
    else:
        out[1] = 0x80 | 127
        for k in range(8):
            out[2 + k] = <unsigned char>(payload_len >> (56 - 8 * k))
        p = 10
    for k in range(4):
        out[p + k] = <unsigned char>(mask_key >> (24 - 8 * k))
    return p + 4


cdef inline size_t ws_frame_header(unsigned char* out, int opcode, uint64_t payload_len,
                                   uint32_t mask_key) noexcept nogil:
    """A final (FIN) masked client frame header; returns its size (6, 8 or 14)."""
    return ws_frame_header_ex(out, opcode, True, payload_len, mask_key)


cdef inline void ws_mask(unsigned char* data, size_t n, uint32_t mask_key,
                         size_t offset) noexcept nogil:
    """XOR ``data`` with the mask; ``offset`` = position of ``data[0]`` in the payload."""
    cdef unsigned char k[8]
    cdef uint64_t pattern, w
    cdef size_t i = 0
    cdef size_t j
    # k[j] is the key byte for payload position offset + j; the pattern repeats every 4.
    for j in range(8):
        k[j] = <unsigned char>(mask_key >> (24 - 8 * ((j + offset) & 3)))
    memcpy(&pattern, k, 8)
    while i + 8 <= n:
        memcpy(&w, data + i, 8)
        w ^= pattern
        memcpy(data + i, &w, 8)
        i += 8
    while i < n:
        data[i] ^= k[i & 7]
        i += 1


# ---------------------------------------------------------------- handshake keys

cdef inline void ws_key_encode(const unsigned char* raw, char* out) noexcept nogil:
    """``raw``: 16 random bytes; ``out``: room for 25 (24 base64 characters and a NUL)."""
    EVP_EncodeBlock(<unsigned char*>out, raw, 16)


cdef inline int ws_accept_for(const char* key, size_t key_len, char* out) noexcept nogil:
    """``out`` (room for 29) = base64(SHA-1(key + GUID)); 0 ok, -1 key too long / no SHA-1."""
    cdef unsigned char buf[WS_MAX_KEY + 36]
    cdef unsigned char md[20]
    if key_len > WS_MAX_KEY:
        return -1
    memcpy(buf, key, key_len)
    memcpy(buf + key_len, b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36)
    if SHA1(buf, key_len + 36, md) == NULL:
        return -1
    EVP_EncodeBlock(<unsigned char*>out, md, 20)
    return 0


# ---------------------------------------------------------------- handshake response

cdef inline void ws_handshake_init(ws_handshake* h, const char* expected_accept) noexcept nogil:
    cdef size_t i = 0
    while i < WS_ACCEPT_LEN and expected_accept[i] != 0:
        h.expected[i] = expected_accept[i]
        i += 1
    h.expected[i] = 0
    h.expected_len = i
    h.state = 0
    h.status = 0
    h.flags = 0
    h.error = NULL
    h.len = 0
    h.line_start = 0


cdef inline bint ws_ieq(const unsigned char* s, size_t n, const char* lower) noexcept nogil:
    """Whether s[0:n] equals the NUL-terminated lowercase ``lower``, ignoring ASCII case."""
    cdef size_t i
    for i in range(n):
        if lower[i] == 0 or h1_lower(s[i]) != <unsigned char>lower[i]:
            return False
    return lower[n] == 0


cdef inline void ws_trim(const unsigned char* s, size_t* a, size_t* b) noexcept nogil:
    """Shrink s[a:b] past leading and trailing SP/HT."""
    while a[0] < b[0] and (s[a[0]] == 32 or s[a[0]] == 9):
        a[0] += 1
    while b[0] > a[0] and (s[b[0] - 1] == 32 or s[b[0] - 1] == 9):
        b[0] -= 1


cdef inline bint ws_digit(unsigned char c) noexcept nogil:
    return 48 <= c <= 57


cdef inline bint ws_tchar(unsigned char c) noexcept nogil:
    """RFC 9110 token character."""
    if ws_digit(c) or 65 <= c <= 90 or 97 <= c <= 122:
        return True
    return memchr(b"!#$%&'*+-.^_`|~", c, 15) != NULL


cdef inline int ws_hs_fail(ws_handshake* h, const char* why) noexcept nogil:
    h.state = -1
    h.error = why
    return -1


cdef inline int ws_hs_status_line(ws_handshake* h, const unsigned char* s, size_t n) noexcept nogil:
    """``HTTP/1.<d> <3 digits>[ <reason>]``; anything but 101 fails."""
    if (n < 12 or s[5] != 49 or s[6] != 46 or not ws_digit(s[7]) or s[8] != 32
            or not (ws_digit(s[9]) and ws_digit(s[10]) and ws_digit(s[11]))
            or (n > 12 and s[12] != 32)):
        return ws_hs_fail(h, b"malformed status line")
    h.status = (s[9] - 48) * 100 + (s[10] - 48) * 10 + (s[11] - 48)
    h.flags |= WSH_STATUS_SEEN
    if h.status != 101:
        return ws_hs_fail(h, b"status is not 101")
    return 0


cdef inline int ws_hs_header_line(ws_handshake* h, const unsigned char* s, size_t n) noexcept nogil:
    """``name:value``; the headers the handshake depends on set flags."""
    cdef size_t colon = 0
    cdef size_t a, b, e, t
    while colon < n and ws_tchar(s[colon]):
        colon += 1
    if colon == 0 or colon == n or s[colon] != 58:
        return ws_hs_fail(h, b"malformed header line")
    a = colon + 1
    b = n
    ws_trim(s, &a, &b)
    if ws_ieq(s, colon, b"upgrade"):
        h.flags |= WSH_UPGRADE_OK if ws_ieq(s + a, b - a, b"websocket") else WSH_UPGRADE_BAD
    elif ws_ieq(s, colon, b"connection"):
        while a < b:            # comma-separated tokens
            t = a
            while t < b and s[t] != 44:
                t += 1
            e = t               # s[a:e] is one token
            ws_trim(s, &a, &e)
            if ws_ieq(s + a, e - a, b"upgrade"):
                h.flags |= WSH_CONN_UPGRADE
            a = t + 1
    elif ws_ieq(s, colon, b"sec-websocket-accept"):
        if b > a and b - a == h.expected_len and memcmp(s + a, h.expected, h.expected_len) == 0:
            h.flags |= WSH_ACCEPT_OK
        else:
            h.flags |= WSH_ACCEPT_BAD
    elif ws_ieq(s, colon, b"sec-websocket-extensions"):
        if b > a:
            h.flags |= WSH_EXTENSION
    return 0


cdef inline int ws_hs_head_end(ws_handshake* h) noexcept nogil:
    """The blank line arrived: the verdict on the headers seen."""
    cdef int f = h.flags
    if (f & WSH_UPGRADE_BAD) or not (f & WSH_UPGRADE_OK):
        return ws_hs_fail(h, b"missing or wrong Upgrade header")
    if not (f & WSH_CONN_UPGRADE):
        return ws_hs_fail(h, b"Connection header lacks the upgrade token")
    if (f & WSH_ACCEPT_BAD) or not (f & WSH_ACCEPT_OK):
        return ws_hs_fail(h, b"missing or wrong Sec-WebSocket-Accept")
    if f & WSH_EXTENSION:
        return ws_hs_fail(h, b"server chose an extension we did not offer")
    h.state = 1
    return 1


cdef inline int ws_handshake_feed(ws_handshake* h, const unsigned char* data, size_t n,
                                  size_t* consumed) noexcept nogil:
    """Feed the server's response; 0 need more, 1 valid, -1 invalid (module docstring)."""
    cdef size_t i = 0
    cdef size_t take, k, line_len
    cdef const unsigned char* q
    cdef const unsigned char* line
    cdef const char* prefix = b"HTTP/"
    consumed[0] = 0
    if h.state != 0:
        return h.state
    while i < n:
        if h.len == WS_MAX_HANDSHAKE:
            return ws_hs_fail(h, b"response head too big")
        take = n - i
        if take > WS_MAX_HANDSHAKE - h.len:
            take = WS_MAX_HANDSHAKE - h.len
        q = <const unsigned char*>memchr(data + i, 10, take)
        if q != NULL:
            take = <size_t>(q - (data + i)) + 1
        memcpy(h.head + h.len, data + i, take)
        # Fail early on something that is not HTTP at all.
        k = h.len
        while k < 5 and k < h.len + take:
            if h.head[k] != <unsigned char>prefix[k]:
                return ws_hs_fail(h, b"not an HTTP response")
            k += 1
        h.len += take
        i += take
        if q == NULL:
            continue
        line = h.head + h.line_start
        line_len = h.len - 1 - h.line_start
        if line_len > 0 and line[line_len - 1] == 13:
            line_len -= 1
        h.line_start = h.len
        if not (h.flags & WSH_STATUS_SEEN):
            if ws_hs_status_line(h, line, line_len) < 0:
                return -1
        elif line_len == 0:
            if ws_hs_head_end(h) < 0:
                return -1
            consumed[0] = i
            return 1
        elif ws_hs_header_line(h, line, line_len) < 0:
            return -1
    consumed[0] = n
    return 0
