# cython: language_level=3
"""A session's WebSocket connection: ``ws_conn_t`` (the code is ``engine_ws.pxi``)."""

from libc.stdint cimport int32_t

from _fastpath.tls cimport tls_conn, tls_resume
from _fastpath.ws cimport ws_decoder, ws_handshake


cdef enum:
    WS_MAX_MESSAGE = 16777216   # larger messages are a protocol error; max_capture bounds the inbox
    WC_CLOSED = 0
    WC_CONNECTING = 1
    WC_HS_WRITE = 2
    WC_HS_READ = 3
    WC_OPEN = 4
    WC_CLOSING = 5
    WC_TLS = 6              # wss: the TLS handshake after the TCP connect

cdef struct ws_conn_t:
    int fd
    int32_t state
    int32_t epout           # EPOLLOUT armed
    int32_t broken          # the server closed it, or broke the protocol: its ops fail
    int32_t target
    tls_conn tls            # wss (``tls.ssl`` NULL for ws://)
    tls_resume resume       # the last TLS session this connection's server offered
    ws_handshake* hs        # during the handshake only
    ws_decoder dec
    unsigned char* inbox    # queued messages: [uint32 length][payload] ...
    size_t in_head
    size_t in_len
    size_t in_cap
    unsigned char* out      # bytes still to send
    size_t out_pos
    size_t out_len
    size_t out_cap
