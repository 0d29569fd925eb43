# cython: language_level=3
"""<openssl/sha.h>, <openssl/evp.h>: the two libcrypto calls of the WebSocket handshake.

``ws.pxd`` needs SHA-1 and base64 once per connection (the ``Sec-WebSocket-Accept`` check and
the client's key). The one-shot ``SHA1()`` is not deprecated in OpenSSL 3.x (only the
``SHA1_Init``/``_Update``/``_Final`` family is) and both calls are thread-safe, so they may run
without the GIL. Modules that cimport these link ``libcrypto``.
"""


cdef extern from "openssl/sha.h" nogil:
    enum:
        SHA_DIGEST_LENGTH

    # Returns md, or NULL on failure (3.x fetches the digest from a provider).
    unsigned char* SHA1(const unsigned char* d, size_t n, unsigned char* md)


cdef extern from "openssl/evp.h" nogil:
    # Base64 without line breaks: writes 4 * ceil(n / 3) characters and a NUL; returns the
    # number of characters (without the NUL).
    int EVP_EncodeBlock(unsigned char* t, const unsigned char* f, int n)
