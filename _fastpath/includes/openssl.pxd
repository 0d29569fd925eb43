# cython: language_level=3
"""<openssl/ssl.h>, <openssl/err.h>, <openssl/x509v3.h>: the TLS client API of ``tls.pyx``.

Written against OpenSSL 1.1.1 and 3.x (the build refuses anything older). Several of these
names are macros in the headers (``SSL_CTX_set_mode``, ``SSL_set_tlsext_host_name``,
``SSL_get_app_data`` ...); Cython emits them as calls, which the C preprocessor expands.
"""

from libc.stdint cimport uint64_t


cdef extern from *:
    """
    #include <openssl/opensslv.h>
    #if OPENSSL_VERSION_NUMBER < 0x10101000L
    #error "Chaperon's TLS layer needs OpenSSL 1.1.1 or newer"
    #endif
    #include <openssl/ssl.h>
    /* 3.0+: a peer that closes without close_notify reads as a clean EOF. 1.1.1 has no such
       option; EOF then surfaces as SSL_ERROR_SYSCALL with errno 0, also mapped to "closed". */
    #ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    #define CHAPERON_SSL_OP_IGNORE_UNEXPECTED_EOF SSL_OP_IGNORE_UNEXPECTED_EOF
    #else
    #define CHAPERON_SSL_OP_IGNORE_UNEXPECTED_EOF 0
    #endif
    """
    const uint64_t SSL_OP_IGNORE_UNEXPECTED_EOF "CHAPERON_SSL_OP_IGNORE_UNEXPECTED_EOF"


cdef extern from "openssl/ssl.h" nogil:
    ctypedef struct SSL_CTX:
        pass
    ctypedef struct SSL:
        pass
    ctypedef struct SSL_SESSION:
        pass
    ctypedef struct SSL_METHOD:
        pass
    ctypedef struct X509_VERIFY_PARAM:
        pass

    ctypedef int (*SSL_new_session_cb)(SSL* ssl, SSL_SESSION* sess) noexcept nogil

    enum:
        SSL_VERIFY_NONE
        SSL_VERIFY_PEER
        SSL_ERROR_NONE
        SSL_ERROR_SSL
        SSL_ERROR_WANT_READ
        SSL_ERROR_WANT_WRITE
        SSL_ERROR_SYSCALL
        SSL_ERROR_ZERO_RETURN
        SSL_SESS_CACHE_CLIENT
        SSL_SESS_CACHE_NO_INTERNAL_STORE
        SSL_SENT_SHUTDOWN
        SSL_RECEIVED_SHUTDOWN

    # option / mode bits (64-bit options in 3.x, unsigned long in 1.1.1)
    const uint64_t SSL_OP_NO_RENEGOTIATION
    const long SSL_MODE_ENABLE_PARTIAL_WRITE
    const long SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER

    const SSL_METHOD* TLS_client_method()

    SSL_CTX* SSL_CTX_new(const SSL_METHOD* method)
    void SSL_CTX_free(SSL_CTX* ctx)
    uint64_t SSL_CTX_set_options(SSL_CTX* ctx, uint64_t op)
    long SSL_CTX_set_mode(SSL_CTX* ctx, long mode)                      # macro
    void SSL_CTX_set_read_ahead(SSL_CTX* ctx, int yes)                   # macro
    long SSL_CTX_set_session_cache_mode(SSL_CTX* ctx, long mode)        # macro
    void SSL_CTX_sess_set_new_cb(SSL_CTX* ctx, SSL_new_session_cb cb)
    void SSL_CTX_set_verify(SSL_CTX* ctx, int mode, void* callback)
    int SSL_CTX_load_verify_locations(SSL_CTX* ctx, const char* cafile, const char* capath)
    int SSL_CTX_set_default_verify_paths(SSL_CTX* ctx)
    int SSL_CTX_set_alpn_protos(SSL_CTX* ctx, const unsigned char* protos, unsigned int len)

    SSL* SSL_new(SSL_CTX* ctx)
    void SSL_free(SSL* ssl)
    int SSL_set_fd(SSL* ssl, int fd)
    void SSL_set_connect_state(SSL* ssl)
    int SSL_set_tlsext_host_name(SSL* ssl, const char* name)            # macro
    int SSL_set1_host(SSL* ssl, const char* hostname)
    void SSL_set_hostflags(SSL* ssl, unsigned int flags)
    X509_VERIFY_PARAM* SSL_get0_param(SSL* ssl)
    int SSL_set_app_data(SSL* ssl, void* arg)                           # macro
    void* SSL_get_app_data(const SSL* ssl)                              # macro
    int SSL_set_session(SSL* ssl, SSL_SESSION* session)
    int SSL_session_reused(const SSL* ssl)
    int SSL_do_handshake(SSL* ssl)
    int SSL_read(SSL* ssl, void* buf, int num)
    int SSL_write(SSL* ssl, const void* buf, int num)
    int SSL_has_pending(const SSL* ssl)
    int SSL_get_error(const SSL* ssl, int ret)
    void SSL_set_shutdown(SSL* ssl, int mode)
    long SSL_get_verify_result(const SSL* ssl)
    void SSL_get0_alpn_selected(const SSL* ssl, const unsigned char** data, unsigned int* len)
    const char* SSL_get_version(const SSL* ssl)

    void SSL_SESSION_free(SSL_SESSION* session)
    int SSL_SESSION_is_resumable(const SSL_SESSION* session)


cdef extern from "openssl/err.h" nogil:
    unsigned long ERR_get_error()
    void ERR_clear_error()
    void ERR_error_string_n(unsigned long e, char* buf, size_t len)


cdef extern from "openssl/x509.h" nogil:
    enum:
        X509_V_OK
    const char* X509_verify_cert_error_string(long n)


cdef extern from "openssl/x509v3.h" nogil:
    enum:
        X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
    int X509_VERIFY_PARAM_set1_ip_asc(X509_VERIFY_PARAM* param, const char* ipasc)
