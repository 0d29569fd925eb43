# cython: language_level=3
"""What an engine thread records, per metric key: ``mstats_t`` and the error kinds it counts.

Theory of operation
-------------------
Each engine thread (``engine_thread.pxd``) holds two arrays of ``mstats_t``, one per metric
key, and records into ``stats[cur]`` under its mutex; ``Engine.swap`` flips ``cur`` and merges
the idle array (double buffering: no lock per request). A failure is counted once, in
``by_kind[K_*]`` and ``errors``; the kinds are the engine's ``ERROR_KINDS`` in this order.
The histograms are HdrHistogram cores (``histogram.pxd``) allocated by ``Engine._allocate``
and freed in ``Engine._free``.
"""

from libc.stdint cimport int64_t

from _fastpath.histogram cimport hdr_core


cdef enum:
    K_CONNECT = 0
    K_TIMEOUT = 1
    K_RESET = 2
    K_CLOSED = 3        # EOF before the response was complete (or an unparsable response)
    K_4XX = 4
    K_5XX = 5
    K_TLS = 6           # handshake, certificate verification or TLS protocol failure
    K_EXTRACT = 7       # an extraction found nothing, or a template used an unset variable
    K_ABORT = 8         # an abort step
    K_PROTOCOL = 9      # WebSocket handshake or framing violation
    K_PYTHON = 10       # a python step raised
    NKINDS = 11

cdef extern from *:
    """
    #define CHAPERON_HIST_HIGHEST 3600000000LL
    """
    const int64_t HIST_HIGHEST "CHAPERON_HIST_HIGHEST"


cdef struct mstats_t:
    hdr_core hist           # latency: completion - intended start (== service in the closed model)
    hdr_core service        # open model only: completion - actual start (counts NULL otherwise)
    int64_t count
    int64_t errors
    int64_t by_kind[NKINDS]
