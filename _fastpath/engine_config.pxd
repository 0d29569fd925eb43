# cython: language_level=3
"""The run's settings, shared read-only by the engine threads: ``config_t`` and the arrival
schedule's ``stage_t``.

Theory of operation
-------------------
One ``config_t`` lives inside ``Engine`` (so it never moves) and every ``thread_t`` points at
it. It is written before the threads start; afterwards only the atomics below change
(``cancel``, ``warm_pending``, ``origin_ready``), and, in the open model, ``start_ns`` /
``end_ns`` / ``teardown_end_ns`` once, before ``origin_ready`` publishes them (release).
Its arrays (``ops``, ``targets``, ``stages``) are calloc'ed by ``Engine._allocate`` and freed
in ``Engine._free``.
"""

from libc.stdint cimport int32_t, int64_t

from _fastpath.engine_conn cimport target_t
from _fastpath.engine_plan cimport op_t


# One stage of the arrival schedule: the rate goes linearly from r0 to r1 (per ns) over dur_ns;
# n0 arrivals are due before it starts, n1 before it ends (the integral of the rate).
cdef struct stage_t:
    int64_t start_ns        # offset from the engine start
    int64_t dur_ns
    double r0
    double r1
    double n0
    double n1

cdef struct config_t:
    op_t* ops               # init ops, then the run ops, then the teardown ops
    int32_t nops            # all of them
    int32_t run_first       # = the number of init ops
    int32_t run_end         # the teardown ops are [run_end, nops)
    int32_t nmetrics
    target_t* targets
    int64_t iterations
    int64_t start_ns
    int64_t end_ns
    int64_t connect_timeout_ns
    int64_t request_timeout_ns
    int32_t open_model
    int32_t nthreads        # arrival k goes to thread k % nthreads
    stage_t* stages
    int32_t nstages
    int64_t total_ns        # open model: length of the schedule
    int64_t scenario_timeout_ns     # 0: none
    int64_t start_delay_ns
    int64_t start_random_delay_ns
    int64_t teardown_end_ns # end_ns + request_timeout_ns (saturated): the cut-off of teardowns
    int64_t graceful_stop_ns    # how long ops in flight at end_ns may finish (INT64_MAX: no cut)
    int64_t hard_end_ns     # end_ns + graceful_stop_ns (saturated): ops still in flight (not
                            # teardown's) are abandoned then; set with end_ns
    int cancel
    # Open model warm-up: the threads connect their slots, then the last one to finish sets
    # start_ns/end_ns/teardown_end_ns and publishes them with ``origin_ready`` (release).
    int32_t warm_op         # the first HTTP op of init + run (its target is warmed), -1: none
    int32_t origin_fixed    # start(origin_ns) was given one: start_ns = origin_req
    int64_t origin_req
    int warm_pending        # threads still warming up (atomic)
    int origin_ready        # start_ns and the end are set (atomic; always 1 in the closed model)
    # The stateful language (engine_state.pxi); all 0 for plain plans (no ``sx_t`` then).
    int32_t stateful        # sessions carry an ``sx_t``
    int32_t nvars
    int32_t nchildren       # child slots per session
    int32_t nconns          # WebSocket connections per session
    int32_t nsignals
    int32_t has_retry       # some op is a RETRY: errors look for a retry frame
    size_t max_capture      # bytes of a response kept for extraction
    int64_t session_id_base # the first session's (or arrival's) number
    int64_t first_arrival   # open model: the schedule resumes at this arrival (a takeover)
