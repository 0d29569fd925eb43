# cython: language_level=3
"""<time.h>: the monotonic clock (nanoseconds are the engine's unit of time)."""


cdef extern from "time.h" nogil:
    ctypedef int clockid_t

    struct timespec:
        long tv_sec
        long tv_nsec

    enum:
        CLOCK_MONOTONIC

    int clock_gettime(clockid_t clk, timespec* ts)
