# cython: language_level=3
"""A session's WebSocket connection: ``ws_conn_t``, a ``conn_t`` (``engine_conn.pxd``) with
the WebSocket state on top (the code and its theory of operation: ``engine_ws.pxi``).

Ownership: ``hs`` (during the handshake), ``inbox`` and ``out`` are malloc'ed/realloc'ed by
the engine thread and freed in ``ws_free`` (Engine._free), once; ``conn`` borrows ``out`` as
its pending write, and owns its socket and TLS objects as ``engine_conn.pxd`` says.
"""

from libc.stdint cimport int32_t

from _fastpath.engine_conn cimport conn_t
from _fastpath.ws cimport ws_decoder, ws_handshake


cdef enum:
    WS_MAX_MESSAGE = 16777216   # larger messages are a protocol error; max_capture bounds the inbox
    WC_CLOSED = 0
    WC_CONNECTING = 1       # the connection is on its way (TCP, then TLS for wss: conn.state)
    WC_HS_WRITE = 2         # the upgrade request is being sent
    WC_HS_READ = 3          # the 101 response is awaited
    WC_OPEN = 4
    WC_CLOSING = 5          # our close frame sent, the server's awaited

cdef struct ws_conn_t:
    conn_t conn             # the socket, TLS (wss) and the pending write (a view of ``out``)
    int32_t state           # WC_*
    int32_t broken          # the server closed it, or broke the protocol: its ops fail
    ws_handshake* hs        # during the handshake only
    ws_decoder dec
    unsigned char* inbox    # queued messages: [uint32 length][payload] ...
    size_t in_head
    size_t in_len
    size_t in_cap
    unsigned char* out      # bytes to send (request, frames): ``conn.wbuf`` while pending
    size_t out_cap
