# cython: language_level=3
"""<sys/socket.h>, <netinet/in.h>, <netinet/tcp.h>: non-blocking TCP client sockets."""

from libc.stdint cimport uint16_t, uint32_t


cdef extern from "sys/socket.h" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    enum:
        AF_INET
        AF_INET6
        SOCK_STREAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        SOL_SOCKET
        SO_ERROR
        MSG_NOSIGNAL

    int socket(int domain, int type, int protocol)
    int connect(int fd, const sockaddr* addr, socklen_t addrlen)
    ssize_t send(int fd, const void* buf, size_t n, int flags)
    ssize_t recv(int fd, void* buf, size_t n, int flags)
    int setsockopt(int fd, int level, int optname, const void* optval, socklen_t optlen)
    int getsockopt(int fd, int level, int optname, void* optval, socklen_t* optlen)


cdef extern from "netinet/in.h" nogil:
    enum:
        IPPROTO_TCP

    struct in_addr:
        uint32_t s_addr

    struct in6_addr:
        unsigned char s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

    uint16_t htons(uint16_t v)


cdef extern from "netinet/tcp.h" nogil:
    enum:
        TCP_NODELAY
