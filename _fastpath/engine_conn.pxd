# cython: language_level=3
"""Where an engine connection goes: ``target_t``."""

from libc.stdint cimport int32_t

from _fastpath.includes.socket cimport sockaddr_storage, socklen_t


cdef enum:
    SERVER_NAME_SIZE = 256  # a DNS name is at most 253 characters


cdef struct target_t:
    sockaddr_storage addr
    socklen_t addrlen
    int family
    int32_t tls                         # HTTPS: a TLS handshake follows the TCP connect
    char server_name[SERVER_NAME_SIZE]  # TLS: SNI (host names only) and the verified identity
