# cython: language_level=3
"""<sys/prctl.h>: per-thread timer slack (how late the kernel may fire a thread's timers)."""


cdef extern from "sys/prctl.h" nogil:
    enum:
        PR_SET_TIMERSLACK

    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
              unsigned long arg5)
