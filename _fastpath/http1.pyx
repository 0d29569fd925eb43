# cython: language_level=3
"""Python-visible wrapper around the C HTTP/1.1 response parser of ``http1.pxd``.

The engine compiles the inline parser into its own loop; this module exists so the very same
state machine can be tested from Python without a network (``tests/unit/test_http1.py``).
"""

from _fastpath.http1 cimport (
    h1_parser, h1_init, h1_feed, h1_feed_eof, H1_DONE, H1_ERROR, H1S_DONE, H1S_ERROR,
)


class HttpParseError(ValueError):
    """The bytes fed are not a valid HTTP/1.x response (or the peer closed too early)."""


cdef class ResponseParser:
    """Incremental parser for one response; ``reset`` it for the next one.

    ``feed(data)`` returns how many bytes of ``data`` belong to the response (fewer than
    ``len(data)`` only once it is complete); it raises ``HttpParseError`` on malformed input.
    ``feed_eof()`` reports that the peer closed the connection.
    """

    cdef h1_parser p

    def __cinit__(self, bint no_body=False):
        h1_init(&self.p, no_body)

    def reset(self, bint no_body=False) -> None:
        h1_init(&self.p, no_body)

    def feed(self, data) -> int:
        cdef const unsigned char[::1] view = memoryview(data).cast("B")
        cdef size_t consumed = 0
        cdef int rc
        if self.p.state == H1S_ERROR:
            raise HttpParseError("parser is in the error state")
        if view.shape[0] == 0:
            return 0
        rc = h1_feed(&self.p, &view[0], <size_t>view.shape[0], &consumed)
        if rc == H1_ERROR:
            raise HttpParseError("malformed HTTP/1.x response")
        return consumed

    def feed_eof(self) -> None:
        if self.p.state == H1S_ERROR:
            raise HttpParseError("parser is in the error state")
        if h1_feed_eof(&self.p) != H1_DONE:
            raise HttpParseError("connection closed before the response was complete")

    @property
    def complete(self) -> bool:
        return self.p.state == H1S_DONE

    @property
    def error(self) -> bool:
        return self.p.state == H1S_ERROR

    @property
    def status_code(self) -> int:
        """The status code once the status line is read (0 before)."""
        return self.p.status

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request (meaningful once complete)."""
        return self.p.state == H1S_DONE and self.p.keep_alive != 0
