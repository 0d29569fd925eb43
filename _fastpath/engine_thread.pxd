# cython: language_level=3
"""An engine thread: ``thread_t`` (its sessions, epoll set, timer heap, metrics) and the
loop's limits.

Theory of operation
-------------------
One ``thread_t`` per engine thread, in a calloc'ed array inside ``Engine``; the thread's loop
(``thread_loop`` in ``engine.pyx``) is the only code that touches it while it runs, except
``Engine.swap`` and ``Engine.tls_error``, which take ``lock`` (held by the loop while it
processes one epoll batch). It owns one epoll set and one ``SSL_CTX`` (``io``, which its
connections share), one receive buffer shared by its sessions (``rbuf``, ``RBUF_SIZE`` bytes:
every connection of the thread reads into it and its user parses the bytes before the next
read), a binary min-heap of parked sessions (``heap``, at most one entry per session), the
ready stack (sessions woken by another one), the free-slot stack (open model) and two sets of
per-metric accumulators. Everything is allocated by ``Engine._allocate`` and freed in
``Engine._free``; the ``SSL_CTX`` (one per thread, only when a target uses TLS) is freed there
after every connection made from it.
"""

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

from _fastpath.engine_config cimport config_t
from _fastpath.engine_conn cimport io_t
from _fastpath.engine_metrics cimport mstats_t
from _fastpath.engine_session cimport session_t
from _fastpath.includes.epoll cimport epoll_event
from _fastpath.includes.pthread cimport pthread_mutex_t


cdef enum:
    MAX_EVENTS = 512
    RBUF_SIZE = 65536
    MAX_WAIT_MS = 50
    ARRIVAL_BATCH = 4096  # arrivals one wake may start before I/O gets its turn again
    WARM_WINDOW = 256   # open model warm-up: connects (and handshakes) in flight per thread

cdef extern from *:
    """
    #define CHAPERON_SCAN_NS 10000000LL
    #define CHAPERON_SPIN_NS 10000LL
    #define CHAPERON_TIMER_SLACK_NS 1000L
    """
    const int64_t SCAN_NS "CHAPERON_SCAN_NS"
    # a timer due sooner than this is treated as due (a sleep that short costs more than it saves)
    const int64_t SPIN_NS "CHAPERON_SPIN_NS"
    # timer slack of an open-model engine thread (the kernel's default is 50 us)
    const long TIMER_SLACK_NS "CHAPERON_TIMER_SLACK_NS"


# A session has at most one heap entry, exactly while it is DELAY, YIELD or STARTING; only the
# entry's wake-up moves it on (it wakes early, at its stop_ns, to be stopped), so no entry is
# ever stale and the heap never holds more than ``nsessions`` entries.
cdef struct heap_ent:
    int64_t wake_ns
    uint32_t index

cdef struct thread_t:
    config_t* cfg
    session_t* sessions
    int32_t nsessions       # sessions (closed) or slots (open); children follow them
    int32_t nslots          # nsessions * (1 + nchildren)
    int32_t tid             # the thread's number (0 .. nthreads - 1)
    uint32_t* ready         # stack of sessions woken by another one (child end, signal)
    int32_t children        # child sessions running
    int32_t nready
    int32_t active
    int32_t cur             # stats[cur] is recorded into; flipped by swap under ``lock``
    mstats_t* stats[2]
    mstats_t* rec
    pthread_mutex_t lock
    int lock_ok
    heap_ent* heap
    int32_t heap_len
    unsigned char* rbuf
    epoll_event* events
    int use_pwait2          # epoll_pwait2 (ns timeout) works; cleared on ENOSYS
    int64_t next_scan_ns
    uint64_t rng            # xorshift64* state of the start delays (never 0)
    uint32_t* free_slots    # open model: stack of free session indices
    int32_t nfree
    int32_t stage           # stage of the next arrival
    int64_t next_k          # global index of this thread's next arrival
    int64_t next_due_ns     # its due time (absolute), INT64_MAX when the schedule is over
    int64_t sessions_dropped
    int64_t sessions_timed_out
    int64_t sessions_failed
    int64_t sessions_started
    int64_t sessions_completed
    int64_t requests_sent
    int64_t responses
    int64_t iterations
    int64_t errors
    int32_t warming         # open model warm-up: slots whose connect/handshake is in flight
    int fatal_errno
    int done
    io_t io                 # the epoll set, the SSL_CTX and the latest TLS error text
