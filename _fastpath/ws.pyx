# cython: language_level=3
"""Python-visible wrappers around the C WebSocket codec of ``ws.pxd``.

The engine compiles the inline codec into its own loop; this module exists so the very same
state machines can be tested from Python without a network (``tests/unit/test_ws_codec.py``).
Events are tuples: ``("text", bytes)``, ``("binary", bytes)``, ``("ping", bytes)``,
``("pong", bytes)``, ``("close", code)``, ``("error", reason)``, ``("nomem", reason)``.
"""

from libc.stdint cimport uint32_t, uint64_t

from _fastpath.ws cimport (
    ws_decoder, ws_decoder_init, ws_decoder_free, ws_message_done, ws_decode,
    ws_frame_header_ex, ws_mask, ws_key_encode, ws_accept_for,
    ws_handshake, ws_handshake_init, ws_handshake_feed,
    WS_EV_NONE, WS_EV_TEXT, WS_EV_BINARY, WS_EV_PING, WS_EV_PONG, WS_EV_CLOSE, WS_EV_ERROR,
    WS_EV_NOMEM, WS_MAX_HEADER, WS_ACCEPT_LEN, WS_KEY_LEN, WSD_ERROR,
)

# ws_decode / ws_handshake_feed get a valid pointer even for empty input.
cdef unsigned char _EMPTY[1]


cdef const unsigned char* _bytes_ptr(const unsigned char[::1] view) except NULL:
    return &view[0] if view.shape[0] > 0 else _EMPTY


cdef class Decoder:
    """Incremental decoder of the server's frames; ``limit`` is the largest message accepted.

    ``feed(data)`` returns every event the bytes complete, in order (it stops after an error).
    ``step(data)`` makes one ``ws_decode`` call: ``(event or None, consumed)``; unlike ``feed``
    it leaves a message in place (the next call drops it), as an engine that ignores it would.
    """

    cdef ws_decoder d

    def __cinit__(self, size_t limit=1 << 20):
        ws_decoder_init(&self.d, limit)

    def __dealloc__(self):
        ws_decoder_free(&self.d)

    cdef object _event(self, int ev):
        if ev == WS_EV_TEXT or ev == WS_EV_BINARY:
            payload = self.d.msg.data[:self.d.msg.len] if self.d.msg.len else b""
            return ("text" if ev == WS_EV_TEXT else "binary", payload)
        if ev == WS_EV_PING or ev == WS_EV_PONG:
            return ("ping" if ev == WS_EV_PING else "pong", self.d.ctl[:self.d.ctl_len])
        if ev == WS_EV_CLOSE:
            return ("close", self.d.close_code)
        if ev == WS_EV_ERROR or ev == WS_EV_NOMEM:
            return ("error" if ev == WS_EV_ERROR else "nomem", self.d.error.decode("ascii"))
        raise AssertionError(f"unknown event {ev}")

    def step(self, data) -> tuple:
        cdef const unsigned char[::1] view = memoryview(data).cast("B")
        cdef size_t n = <size_t>view.shape[0]
        cdef size_t consumed = 0
        cdef int ev = ws_decode(&self.d, _bytes_ptr(view), n, &consumed)
        if ev == WS_EV_NONE:
            return None, consumed
        return self._event(ev), consumed

    def feed(self, data) -> list:
        cdef const unsigned char[::1] view = memoryview(data).cast("B")
        cdef const unsigned char* p = _bytes_ptr(view)
        cdef size_t n = <size_t>view.shape[0]
        cdef size_t pos = 0
        cdef size_t consumed = 0
        cdef int ev
        events = []
        while True:
            ev = ws_decode(&self.d, p + pos, n - pos, &consumed)
            if consumed > n - pos:
                raise AssertionError("ws_decode consumed more than it was given")
            pos += consumed
            if ev == WS_EV_NONE:
                if pos != n:
                    raise AssertionError("WS_EV_NONE before all input was consumed")
                return events
            events.append(self._event(ev))
            if ev == WS_EV_TEXT or ev == WS_EV_BINARY:
                ws_message_done(&self.d)
            elif ev == WS_EV_ERROR or ev == WS_EV_NOMEM:
                return events

    def message_done(self) -> None:
        ws_message_done(&self.d)

    @property
    def close_reason(self) -> bytes:
        """The reason of the last close frame (bytes after its code)."""
        return self.d.ctl[2:self.d.ctl_len] if self.d.ctl_len > 2 else b""

    @property
    def error(self) -> bool:
        return self.d.state == WSD_ERROR

    @property
    def buffer_capacity(self) -> int:
        return self.d.msg.cap


def frame_header(int opcode, uint64_t payload_len, uint32_t mask_key, bint fin=True) -> bytes:
    cdef unsigned char out[WS_MAX_HEADER]
    cdef size_t k = ws_frame_header_ex(out, opcode, fin, payload_len, mask_key)
    return out[:k]


def mask(data, uint32_t mask_key, size_t offset=0) -> bytes:
    """``data`` XORed with the mask, its first byte at ``offset`` in the payload."""
    cdef bytearray out = bytearray(data)
    cdef unsigned char[::1] view = out
    if len(out):
        ws_mask(&view[0], <size_t>len(out), mask_key, offset)
    return bytes(out)


def encode_frame(int opcode, payload, uint32_t mask_key, bint fin=True) -> bytes:
    """A complete masked client frame."""
    return frame_header(opcode, len(payload), mask_key, fin) + mask(payload, mask_key, 0)


def key_encode(raw) -> str:
    """``Sec-WebSocket-Key`` for 16 raw bytes."""
    cdef const unsigned char[::1] view = memoryview(raw).cast("B")
    cdef char out[WS_KEY_LEN + 1]
    if view.shape[0] != 16:
        raise ValueError("a WebSocket key is 16 bytes")
    ws_key_encode(&view[0], out)
    return out[:WS_KEY_LEN].decode("ascii")


def accept_for(key) -> str:
    """``Sec-WebSocket-Accept`` for a key (str or bytes)."""
    cdef bytes raw = key.encode("ascii") if isinstance(key, str) else bytes(key)
    cdef char out[WS_ACCEPT_LEN + 1]
    if ws_accept_for(raw, <size_t>len(raw), out) != 0:
        raise ValueError("key too long (or SHA-1 unavailable)")
    return out[:WS_ACCEPT_LEN].decode("ascii")


cdef class Handshake:
    """Checks the server's handshake response against the accept value we expect.

    ``feed(data)`` -> ``(rc, consumed, error or None, status)``; rc 0 need more, 1 valid
    (``consumed`` ends at the blank line), -1 invalid.
    """

    cdef ws_handshake h
    cdef bytes expected

    def __cinit__(self, expected_accept):
        self.expected = (
            expected_accept.encode("ascii") if isinstance(expected_accept, str)
            else bytes(expected_accept)
        )
        ws_handshake_init(&self.h, self.expected)

    def feed(self, data) -> tuple:
        cdef const unsigned char[::1] view = memoryview(data).cast("B")
        cdef size_t consumed = 0
        cdef int rc = ws_handshake_feed(
            &self.h, _bytes_ptr(view), <size_t>view.shape[0], &consumed
        )
        error = self.h.error.decode("ascii") if rc < 0 else None
        return rc, consumed, error, self.h.status
