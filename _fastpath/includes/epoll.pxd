# cython: language_level=3
"""<sys/epoll.h>: the readiness API the engine's event loop is built on."""

from libc.stdint cimport uint32_t, uint64_t

from _fastpath.includes.time cimport timespec


cdef extern from "sys/epoll.h" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLRDHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)


# epoll_pwait2 (Linux >= 5.11) takes a nanosecond timeout, where epoll_wait's is in
# milliseconds. Called through syscall(2) so the build does not need glibc >= 2.35; on older
# kernels it fails with ENOSYS and the engine falls back to epoll_wait. The kernel reads a
# struct __kernel_timespec, which is struct timespec on 64-bit Linux (the engine's platform).
cdef extern from *:
    """
    #include <sys/epoll.h>
    #include <sys/syscall.h>
    #include <time.h>
    #include <unistd.h>
    #ifndef SYS_epoll_pwait2
    #define SYS_epoll_pwait2 441
    #endif
    static inline int chaperon_epoll_pwait2(int epfd, struct epoll_event* events, int maxevents,
                                            const struct timespec* timeout) {
        return (int)syscall(SYS_epoll_pwait2, epfd, events, maxevents, timeout, (void*)0, 0);
    }
    """
    int epoll_pwait2 "chaperon_epoll_pwait2" (int epfd, epoll_event* events, int maxevents,
                                              const timespec* timeout) nogil
