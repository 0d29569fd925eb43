# cython: language_level=3
"""The request engine's Python face: ``cdef class Engine`` (implemented in ``engine.pyx``).

Theory of operation
-------------------
``Engine`` owns every piece of C memory the engine threads use, each declared in its own
``.pxd`` (as uvloop keeps one per handle):

* ``engine_plan.pxd``     the plan: ``op_t`` and its templates and extractors;
* ``engine_config.pxd``   the run's settings, shared read-only by the threads: ``config_t``;
* ``engine_conn.pxd``     the one connection type of HTTP and WebSocket (``conn_t``), its
                          target (``target_t``) and a thread's I/O context (``io_t``);
* ``engine_session.pxd``  a session slot: ``session_t`` (with its HTTP connection), its
                          frames and stateful part;
* ``engine_ws.pxd``       a session's WebSocket connection: ``ws_conn_t`` (a ``conn_t`` and
                          the WebSocket state);
* ``engine_thread.pxd``   an engine thread: ``thread_t``, its heap and loop limits;
* ``engine_metrics.pxd``  what a thread records: ``mstats_t`` and the error kinds.

``_fastpath/includes/*.pxd`` declare the C APIs (epoll, sockets, OpenSSL ...); ``tls.pxd``,
``http1.pxd`` and ``ws.pxd`` are the TLS layer and the sans-IO codecs the engine uses.
All of it is plain C memory allocated by ``Engine._allocate`` and freed in ``Engine._free``,
and so are the OpenSSL objects it points to (one ``SSL_CTX`` per thread, one ``SSL`` per TLS
connection, one resumable ``SSL_SESSION`` per connection slot: see ``tls.pxd`` for who frees
what).
"""

from libc.stdint cimport int32_t, int64_t

from _fastpath.engine_config cimport config_t
from _fastpath.engine_session cimport session_t, sx_t
from _fastpath.engine_thread cimport thread_t


cdef class Engine:
    cdef config_t cfg
    cdef char* reqbuf
    cdef session_t* sessions
    cdef int32_t nsessions
    cdef thread_t* threads
    cdef int32_t nthreads
    cdef int64_t duration_ns
    cdef bint initialized
    cdef bint started
    cdef bint closed
    cdef list keys
    cdef list py_threads
    cdef dict final_stats
    cdef object _final_tls_error
    cdef object _final_origin_ns
    cdef sx_t* sx
    cdef int64_t _session_id_base
    cdef list var_names
    cdef list _keep             # Python objects ops point into (templates, regexes, callables)

    cdef _allocate(self, list addrs, object builder, int32_t nsessions, int32_t nthreads,
                   int64_t iterations, int64_t connect_timeout_ns, int64_t request_timeout_ns,
                   list stages, object tls_ca_file, bint tls_insecure)
    cdef _allocate_state(self, int32_t nslots)
    cdef void _free(self) noexcept
    cdef _raise_fatal(self)
    cdef _check_open(self)
