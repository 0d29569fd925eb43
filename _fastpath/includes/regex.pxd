# cython: language_level=3
"""<regex.h>: POSIX extended regular expressions, used by ``extract.pxd`` to take values out of
response bodies.

``regoff_t`` is ``int`` in glibc (``ssize_t`` with ``_REGEX_LARGE_OFFSETS``) and ``regoff_t``
in musl; Cython emits the C name, so the declared type only has to be close enough.

``REG_STARTEND`` (BSD, glibc) bounds the subject by ``pmatch[0]`` instead of a NUL, so a
response body can be searched where it lies. libcs without it (musl) get 0 here and
``CHAPERON_HAVE_REG_STARTEND`` 0: the subject must then be NUL-terminated.
"""


cdef extern from "regex.h" nogil:
    ctypedef ssize_t regoff_t

    ctypedef struct regex_t:
        size_t re_nsub      # number of parenthesized subexpressions

    ctypedef struct regmatch_t:
        regoff_t rm_so      # -1 when the group did not take part in the match
        regoff_t rm_eo

    enum:
        # regcomp flags
        REG_EXTENDED
        REG_ICASE
        REG_NEWLINE
        REG_NOSUB
        # regexec flags
        REG_NOTBOL
        REG_NOTEOL
        # return codes
        REG_NOMATCH
        REG_BADPAT
        REG_ESPACE

    int regcomp(regex_t* preg, const char* pattern, int cflags)
    int regexec(const regex_t* preg, const char* string, size_t nmatch, regmatch_t* pmatch,
                int eflags)
    size_t regerror(int errcode, const regex_t* preg, char* errbuf, size_t errbuf_size)
    void regfree(regex_t* preg)


cdef extern from *:
    """
    #include <regex.h>
    #ifdef REG_STARTEND
    #define CHAPERON_REG_STARTEND REG_STARTEND
    #define CHAPERON_HAVE_REG_STARTEND 1
    #else
    #define CHAPERON_REG_STARTEND 0
    #define CHAPERON_HAVE_REG_STARTEND 0
    #endif
    """
    const int REG_STARTEND "CHAPERON_REG_STARTEND"
    const int HAVE_REG_STARTEND "CHAPERON_HAVE_REG_STARTEND"
