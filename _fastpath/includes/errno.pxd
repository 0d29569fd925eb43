# cython: language_level=3
"""<errno.h>: the codes the engine maps to error kinds (Cython's libc.errno has most;
listed here so the engine cimports from one place)."""


cdef extern from "errno.h" nogil:
    int errno
    enum:
        EINTR
        EAGAIN
        EWOULDBLOCK
        EINPROGRESS
        ECONNRESET
        ECONNABORTED
        ECONNREFUSED
        EPIPE
        ETIMEDOUT
        EMFILE
        ENOSYS
        EPERM
