# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: libraries = z
"""HDR histogram (HdrHistogram layout) with O(1) recording without the GIL.

Theory of operation
-------------------
Layout (Gil Tene's HdrHistogram, identical to the Java, C and ``hdrh`` libraries): with ``s``
significant figures, a *sub-bucket* range of ``sub_bucket_count = 2**ceil(log2(2 * 10**s))``
slots (2048 for s=3) keeps values apart to better than ``10**-s`` relative. Bucket 0 covers
``[0, sub_bucket_count << unit_magnitude)`` at unit resolution (``unit_magnitude`` =
``floor(log2(lowest))``); each further bucket ``b`` doubles the range and the slot width
(``2**(b + unit_magnitude)``) and only needs its upper half, since its lower half is the whole
previous bucket. Hence ``counts_len = (bucket_count + 1) * sub_bucket_count / 2`` (23,552 int64
counters, 184 KiB, for 1 us .. 1 h at 3 figures). The index of a value is a ``clz`` and a few
shifts (``hdr_counts_index_for`` in histogram.pxd), inline so the engine records from ``nogil``
code without calls. Everything a query returns is a slot bound, as in the other libraries:
percentiles give the slot's highest equivalent value (lowest for percentile 0), ``min``/``max``
the lowest/highest equivalent of the extremes, ``mean``/``stddev`` use slot midpoints.

Encoding (HdrHistogram V2): ``encode()`` writes the compressed form (what
``encodeIntoCompressedByteBuffer`` writes), ``encode(compressed=False)`` the bare payload (what
``encodeIntoByteBuffer`` writes, and what the compressed form wraps):

    compressed: u32 cookie 0x1c849314 | u32 length of the zlib data | zlib(payload)
    payload:    u32 cookie 0x1c849313 | u32 varint bytes | u32 normalizing index offset (0)
                | u32 significant figures | u64 lowest | u64 highest | f64 conversion ratio (1.0)
                | counts[0 .. index(max)] as ZigZag LEB128 varints (big-endian header fields)

The uncompressed form is over twice the bytes (a 2,000-value delta: ~1 KB compressed, 2.3 KB
not) but costs no zlib to read, which is most of the cost of merging a compressed delta: it is
meant for worker-to-master deltas, where bytes are cheap and the master merges thousands a
second. Java's ``decodeFromByteBuffer`` reads both forms; ``hdrh`` and HdrHistogram_c read
only the compressed one, so whatever users see (``Metric.hdr``) stays compressed.

A run of k zero counters is written as the single varint -k. The varints are the
"LEB128-64b9B" variant of the reference: at most 9 bytes, the ninth carrying 8 full bits. The
cookies' 0x10 bit is the word-size nibble of older versions; like the reference decoders we
mask it (0xf0) when reading. The base64 text form used by ``hdrh`` and HdrHistogram logs is
the same bytes base64-encoded; ``decode`` accepts all four (either form, raw or base64).

Merging without decoding: ``add_encoded`` (and its two halves, ``InflatedHistogram`` to
inflate, if compressed, and check, ``add_inflated`` to add) walks the varints straight into an
existing histogram, so a merge costs in proportion to the encoded size, not to the 184 KiB
layout; see the section "adding an encoding without decoding it" below.

Decoding treats its input as hostile: every length and header field is checked before use,
zlib output is bounded by the announced payload length (an uncompressed payload must be
exactly that long), and the counts array is capped at ``MAX_DECODED_COUNTS`` slots, so
garbage gives ``ValueError`` and never a large allocation.
"""

import base64
import binascii
import struct
import zlib
from array import array
from collections.abc import Iterable

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t, INT64_MAX
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from libc.math cimport ceil, log2, pow, sqrt

# Cookies as written by the reference implementations (base | 0x10).
_ENCODING_COOKIE_BASE = 0x1C849303
_COMPRESSED_COOKIE_BASE = 0x1C849304
ENCODING_COOKIE = _ENCODING_COOKIE_BASE | 0x10
COMPRESSED_COOKIE = _COMPRESSED_COOKIE_BASE | 0x10
_OUTER = struct.Struct(">II")
_PAYLOAD_HEADER = struct.Struct(">IIIIQQd")  # 40 bytes
# Largest counts array a decoded header may ask for (32 MiB of counters). 1 us .. 1 h needs
# 23,552 slots at 3 figures and 2.1 M at 5; anything bigger is not one of ours.
MAX_DECODED_COUNTS = 1 << 22


cdef enum:
    # A varint is at most 9 bytes, and no slot costs more than one varint.
    MAX_VARINT_BYTES = 9
    PAYLOAD_HEADER_SIZE = 40  # _PAYLOAD_HEADER.size
    # Results of the nogil decoder, turned into ValueError by Histogram.decode.
    DEC_OK = 0
    DEC_TRUNCATED_VARINT = -1
    DEC_TOO_MANY_COUNTS = -2
    DEC_TOTAL_OVERFLOW = -3


# --- the C core (declared in histogram.pxd, exported to engine.pyx) -------------------------

cdef int hdr_core_init(hdr_core* h, int64_t lowest, int64_t highest, int sig_figs) noexcept nogil:
    """Set up an empty histogram; ``h`` must not own counts yet. Returns -1 on bad bounds or
    when out of memory (``h.counts`` is then NULL, and ``hdr_core_free`` is still safe)."""
    if _layout_init(h, lowest, highest, sig_figs) != 0:
        return -1
    h.counts = <int64_t*>calloc(h.counts_len, sizeof(int64_t))
    if h.counts == NULL:
        return -1
    return 0


cdef int _layout_init(hdr_core* h, int64_t lowest, int64_t highest, int sig_figs) noexcept nogil:
    """hdr_core_init without the counts: zero ``h`` and fill in the layout (and the empty
    min/max) only, so a header can be checked without allocating. -1 on bad bounds."""
    cdef int64_t largest_single_unit
    cdef int32_t sub_bucket_count_magnitude
    cdef int64_t smallest_untrackable
    cdef int32_t buckets_needed
    memset(h, 0, sizeof(hdr_core))
    # highest // 2 < lowest is highest < 2 * lowest without overflowing for lowest >= 2**62.
    if lowest < 1 or sig_figs < 1 or sig_figs > 5 or highest // 2 < lowest:
        return -1
    h.lowest_trackable = lowest
    h.highest_trackable = highest
    h.significant_figures = sig_figs
    largest_single_unit = 2 * <int64_t>pow(10, sig_figs)
    sub_bucket_count_magnitude = <int32_t>ceil(log2(<double>largest_single_unit))
    h.sub_bucket_half_count_magnitude = (
        sub_bucket_count_magnitude if sub_bucket_count_magnitude > 1 else 1) - 1
    # floor(log2(lowest)) exactly: the double log2 rounds up just below 2**k for k >= 48.
    h.unit_magnitude = 63 - chaperon_clzll(<unsigned long long>lowest)
    # The top slot's value must still fit an int64 shift (the C library's same check).
    if h.unit_magnitude + h.sub_bucket_half_count_magnitude > 61:
        return -1
    h.sub_bucket_count = <int32_t>1 << (h.sub_bucket_half_count_magnitude + 1)
    h.sub_bucket_half_count = h.sub_bucket_count // 2
    h.sub_bucket_mask = (<int64_t>h.sub_bucket_count - 1) << h.unit_magnitude
    smallest_untrackable = (<int64_t>h.sub_bucket_count) << h.unit_magnitude
    buckets_needed = 1
    while smallest_untrackable <= highest:
        if smallest_untrackable > INT64_MAX // 2:
            buckets_needed += 1
            break
        smallest_untrackable <<= 1
        buckets_needed += 1
    h.bucket_count = buckets_needed
    h.counts_len = (h.bucket_count + 1) * h.sub_bucket_half_count
    h.min_value = INT64_MAX
    h.max_value = 0
    return 0


cdef void hdr_core_free(hdr_core* h) noexcept nogil:
    if h.counts != NULL:
        free(h.counts)
        h.counts = NULL


cdef void hdr_core_reset(hdr_core* h) noexcept nogil:
    if h.counts != NULL:
        memset(h.counts, 0, h.counts_len * sizeof(int64_t))
    h.total_count = 0
    h.min_value = INT64_MAX
    h.max_value = 0


cdef int hdr_core_add(hdr_core* dst, const hdr_core* src) noexcept nogil:
    # Same counts_len, unit and sub-bucket size means slot i is the same value range in both.
    # An empty src (min INT64_MAX, max 0) leaves dst's min/max alone; an empty dst takes src's.
    cdef int32_t i
    cdef int64_t* d = dst.counts
    cdef const int64_t* s = src.counts
    if (dst.counts_len != src.counts_len or dst.unit_magnitude != src.unit_magnitude
            or dst.sub_bucket_half_count_magnitude != src.sub_bucket_half_count_magnitude):
        return -1
    # Through local pointers: the builds use -fno-strict-aliasing, so stores via dst.counts
    # would make the compiler reload the struct fields and give up vectorizing.
    for i in range(src.counts_len):
        d[i] += s[i]
    dst.total_count += src.total_count
    if src.min_value < dst.min_value:
        dst.min_value = src.min_value
    if src.max_value > dst.max_value:
        dst.max_value = src.max_value
    return 0


# --- slot arithmetic (private) ---------------------------------------------------------------

cdef inline int32_t _bucket_of_index(const hdr_core* h, int32_t index) noexcept nogil:
    cdef int32_t bucket_index = (index >> h.sub_bucket_half_count_magnitude) - 1
    return bucket_index if bucket_index > 0 else 0


cdef inline int64_t _value_from_index(const hdr_core* h, int32_t index) noexcept nogil:
    """Lowest value of slot ``index`` (hdrh's get_value_from_index)."""
    cdef int32_t bucket_index = (index >> h.sub_bucket_half_count_magnitude) - 1
    cdef int64_t sub_bucket_index = (
        (index & (h.sub_bucket_half_count - 1)) + h.sub_bucket_half_count)
    if bucket_index < 0:
        sub_bucket_index -= h.sub_bucket_half_count
        bucket_index = 0
    return sub_bucket_index << (bucket_index + h.unit_magnitude)


cdef inline int64_t _slot_width(const hdr_core* h, int32_t index) noexcept nogil:
    return (<int64_t>1) << (_bucket_of_index(h, index) + h.unit_magnitude)


cdef inline int64_t _highest_equivalent(const hdr_core* h, int32_t index) noexcept nogil:
    return _value_from_index(h, index) + _slot_width(h, index) - 1


cdef inline int64_t _median_equivalent(const hdr_core* h, int32_t index) noexcept nogil:
    return _value_from_index(h, index) + (_slot_width(h, index) >> 1)


cdef inline int64_t _target_count(double percentile, int64_t total) noexcept nogil:
    # Same float expression and truncation as hdrh's get_target_count_at_percentile, so
    # results agree to the last slot.
    cdef int64_t count
    if percentile > 100.0:
        percentile = 100.0
    count = <int64_t>(percentile * <double>total / 100.0 + 0.5)
    return count if count > 1 else 1


cdef void _percentiles(const hdr_core* h, const double* sorted_ps, int64_t* out,
                       Py_ssize_t n) noexcept nogil:
    """Values at ascending percentiles ``sorted_ps`` in one pass; 0 when empty."""
    cdef Py_ssize_t k = 0
    cdef int32_t i
    cdef int64_t running = 0
    cdef int64_t target
    for k in range(n):
        out[k] = 0
    if h.total_count == 0 or n == 0:
        return
    k = 0
    target = _target_count(sorted_ps[0], h.total_count)
    for i in range(h.counts_len):
        running += h.counts[i]
        while running >= target:
            out[k] = _highest_equivalent(h, i) if sorted_ps[k] != 0.0 else _value_from_index(h, i)
            k += 1
            if k == n:
                return
            target = _target_count(sorted_ps[k], h.total_count)


cdef inline int _check_percentile(double p) except -1:
    if not 0.0 <= p <= 100.0:  # also rejects NaN
        raise ValueError(f"percentile must be in [0, 100], not {p}")
    return 0


# --- varint codec (private, nogil) ---------------------------------------------------------

cdef inline Py_ssize_t _put_varint(uint8_t* out, int64_t value) noexcept nogil:
    # ZigZag, then 7 bits per byte low first; the 9th byte (if reached) takes the last 8 bits.
    cdef uint64_t v = (<uint64_t>value << 1) ^ <uint64_t>(value >> 63)
    cdef Py_ssize_t n = 0
    while n < 8:
        if (v >> 7) == 0:
            out[n] = <uint8_t>v
            return n + 1
        out[n] = <uint8_t>((v & 0x7F) | 0x80)
        v >>= 7
        n += 1
    out[8] = <uint8_t>v
    return 9


cdef Py_ssize_t _encode_counts(const hdr_core* h, int32_t limit, uint8_t* out) noexcept nogil:
    """Write counts[0:limit] to ``out`` (room for 9 * limit bytes); returns bytes written."""
    cdef Py_ssize_t pos = 0
    cdef int32_t i = 0
    cdef int64_t count, zeros
    # Every zero run, even of length 1, is written as -run, as HdrHistogram_c and hdrh do
    # (Java writes a lone zero as 0; decoders accept both), so our bytes equal hdrh's.
    while i < limit:
        count = h.counts[i]
        i += 1
        if count == 0:
            zeros = 1
            while i < limit and h.counts[i] == 0:
                zeros += 1
                i += 1
            count = -zeros
        pos += _put_varint(out + pos, count)
    return pos


cdef int _decode_counts(hdr_core* h, const uint8_t* data, Py_ssize_t length) noexcept nogil:
    """Fill an empty ``h`` from varints; sets total/min/max. Returns a DEC_* code."""
    cdef Py_ssize_t pos = 0
    cdef int32_t index = 0
    cdef int32_t first = -1, last = -1
    cdef uint64_t v, run
    cdef int shift
    cdef int64_t count
    cdef int64_t total = 0
    while pos < length:
        v = 0
        shift = 0
        while True:
            if pos >= length:
                return DEC_TRUNCATED_VARINT
            if shift == 56:
                v |= (<uint64_t>data[pos]) << 56
                pos += 1
                break
            v |= (<uint64_t>(data[pos] & 0x7F)) << shift
            pos += 1
            if not (data[pos - 1] & 0x80):
                break
            shift += 7
        if v & 1:
            # Negative: a run of (v >> 1) + 1 zero slots. Kept unsigned so -2**63 can't overflow.
            run = (v >> 1) + 1
            if run > <uint64_t>(h.counts_len - index):
                return DEC_TOO_MANY_COUNTS
            index += <int32_t>run
            continue
        count = <int64_t>(v >> 1)
        if index >= h.counts_len:
            return DEC_TOO_MANY_COUNTS
        if count != 0:
            if count > INT64_MAX - total:
                return DEC_TOTAL_OVERFLOW
            total += count
            h.counts[index] = count
            if first < 0:
                first = index
            last = index
        index += 1
    h.total_count = total
    if total > 0:
        # The slot bounds, as hdrh and Java set them when decoding (so a decoded max is the
        # top of its slot even where the recorded value was 0 in a slot 0 wider than 1).
        h.min_value = _value_from_index(h, first)
        h.max_value = _highest_equivalent(h, last)
    return DEC_OK


# --- adding an encoding without decoding it (private, nogil) ---------------------------------
#
# Histogram.decode + add costs a 184 KiB counts array (allocated, zeroed, then walked by add)
# per encoded delta; the master merges a delta per key per worker per second. add_encoded and
# InflatedHistogram instead inflate the zlib data with zlib's C API into a payload-sized
# buffer (an uncompressed encoding is read where it lies, no copy), check the header and every
# varint first (_read_and_scan: nothing is written anywhere until the whole input is known
# good), then walk the varints once more adding into the target's counts (_add_scanned). Zero
# runs are skipped, so the cost follows the encoded size, not the layout. Whatever the fast
# path refuses is handed to ``decode``, so malformed input gets exactly decode's ValueError (and
# input only decode accepts still works).

cdef extern from "zlib.h" nogil:
    ctypedef struct z_stream:
        unsigned char* next_in
        unsigned int avail_in
        unsigned char* next_out
        unsigned int avail_out
    int inflateInit(z_stream* strm)
    int inflate(z_stream* strm, int flush)
    int inflateEnd(z_stream* strm)
    enum:
        Z_OK
        Z_STREAM_END
        Z_NO_FLUSH
        Z_FINISH


cdef enum:
    # Results of _read_and_scan / _add_scanned (any refusal goes to decode for its error).
    ADD_OK = 0
    ADD_REFUSED = -1
    ADD_LAYOUT_DIFFERS = -2
    ADD_TOTAL_OVERFLOW = -3
    OUTER_HEADER_SIZE = 8  # _OUTER.size
    # The module constants of the same names, for nogil code.
    # Above this many varint bytes add_inflated releases the GIL (a 2,000-value delta is ~2 KB),
    # and so do add_encoded and InflatedHistogram for an uncompressed encoding: without zlib,
    # reading one is a walk over the varints like add_inflated's.
    _NOGIL_ADD_BYTES = 64 * 1024
    # add_encoded and InflatedHistogram release the GIL from this many compressed bytes on. A
    # typical delta (~1 KB, ~10 us of zlib) is cheaper to inflate holding it: measured with
    # bench/master_scale.py (300 streams of 50 keys), releasing it per delta cost the master
    # twice the merge CPU in GIL hand-offs between the stream threads.
    _NOGIL_INFLATE_BYTES = 16 * 1024
    _COMPRESSED_COOKIE_BASE_C = 0x1C849304
    _ENCODING_COOKIE_BASE_C = 0x1C849303
    MAX_DECODED_COUNTS_C = 1 << 22


cdef struct _scanned:
    hdr_core layout          # the header's layout; counts stays NULL
    const uint8_t* varints   # the payload's varints: in ``payload``, or in the caller's bytes
    Py_ssize_t payload_len   # varint bytes
    uint8_t* payload         # inflated varints, malloc'd (payload_len + 1 bytes), owned; NULL
                             # for an uncompressed encoding (read in place)
    int64_t total
    int32_t first            # first and last non-zero slot, -1 when total is 0
    int32_t last


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return ((<uint32_t>p[0]) << 24) | ((<uint32_t>p[1]) << 16) | ((<uint32_t>p[2]) << 8) | p[3]


cdef inline uint64_t _be64(const uint8_t* p) noexcept nogil:
    return ((<uint64_t>_be32(p)) << 32) | _be32(p + 4)


cdef inline int _read_varint_tail(const uint8_t* data, Py_ssize_t length, Py_ssize_t* pos,
                                  uint64_t* v) noexcept nogil:
    """Finish a varint whose first byte (in ``v``, continuation bit set) was read; -1 if the
    data ends first. The rare path: zero runs and counts of 64 and more."""
    cdef Py_ssize_t p = pos[0]
    cdef uint64_t value = v[0] & 0x7F
    cdef int shift = 7
    while True:
        if p >= length:
            return -1
        if shift == 56:
            value |= (<uint64_t>data[p]) << 56
            p += 1
            break
        value |= (<uint64_t>(data[p] & 0x7F)) << shift
        p += 1
        if not (data[p - 1] & 0x80):
            break
        shift += 7
    pos[0] = p
    v[0] = value
    return 0


cdef uint64_t NO_SLOT = <uint64_t>-1


cdef int _scan_counts(_scanned* s) noexcept nogil:
    """_decode_counts's checks over ``s.varints`` without writing counts: fills total, first
    and last. Returns a DEC_* code (which one, when several apply, is unspecified: callers
    only tell DEC_OK from the rest and let ``decode`` name the error).

    Runs and counts alternate at random in real deltas, so the loop is branch-free on the
    kind of varint (a mispredicted branch per varint doubled its cost). One-byte varints
    (counts under 64, runs of up to 64 slots: nearly all of a latency delta) skip the slot and
    total tests: each moves ``index`` by at most 64 and ``total`` by at most 63, so neither
    can wrap before the tests after the loop (payload_len <= 9 * 2**22). Longer varints are
    tested where they occur, which keeps index <= counts_len and total <= INT64_MAX before
    any of them is added."""
    cdef const uint8_t* data = s.varints
    cdef Py_ssize_t length = s.payload_len
    cdef Py_ssize_t pos = 0
    cdef uint64_t counts_len = <uint64_t>s.layout.counts_len
    cdef uint64_t index = 0
    cdef uint64_t first = NO_SLOT, last = NO_SLOT
    cdef uint64_t v, half, is_run, count, step, nonzero
    cdef uint64_t total = 0
    while pos < length:
        v = data[pos]
        pos += 1
        if v & 0x80:
            if _read_varint_tail(data, length, &pos, &v) != 0:
                return DEC_TRUNCATED_VARINT
            half = v >> 1
            if v & 1:
                # A run of half + 1 slots must end by counts_len.
                if index > counts_len or half >= counts_len - index:
                    return DEC_TOO_MANY_COUNTS
            elif total > <uint64_t>INT64_MAX or half > <uint64_t>INT64_MAX - total:
                return DEC_TOTAL_OVERFLOW
        # ZigZag: odd is a run of (v >> 1) + 1 zero slots, even a count of v >> 1.
        half = v >> 1
        is_run = -(v & 1)                      # all ones for a run
        count = half & ~is_run
        step = 1 + (half & is_run)             # a count takes one slot, a run half + 1
        total += count
        # last = index if count else last, as a mask: a branch here is mispredicted as often
        # as the kind of varint (gcc turns the conditional form into one).
        nonzero = -(<uint64_t>(count != 0))
        last = (index & nonzero) | (last & ~nonzero)
        if first == NO_SLOT and count != 0:
            first = index
        index += step
    # index only grows, so every slot written (each below the index after it) is in range.
    if index > counts_len:
        return DEC_TOO_MANY_COUNTS
    if total > <uint64_t>INT64_MAX:
        return DEC_TOTAL_OVERFLOW
    s.total = <int64_t>total
    s.first = -1 if first == NO_SLOT else <int32_t>first
    s.last = -1 if last == NO_SLOT else <int32_t>last
    return DEC_OK


cdef int _check_payload_header(const uint8_t* header, _scanned* s,
                               uint32_t* payload_len) noexcept nogil:
    """The 40-byte payload header's checks (all of _check_header's): fills ``s.layout`` and
    ``payload_len``; ADD_OK or ADD_REFUSED."""
    cdef uint32_t length = _be32(header + 4)
    cdef int32_t sig = <int32_t>_be32(header + 12)
    cdef uint64_t lowest = _be64(header + 16)
    cdef uint64_t highest = _be64(header + 24)
    if ((_be32(header) & ~(<uint32_t>0xF0)) != _ENCODING_COOKIE_BASE_C or _be32(header + 8) != 0
            or lowest > <uint64_t>INT64_MAX or highest > <uint64_t>INT64_MAX):
        return ADD_REFUSED
    if _layout_init(&s.layout, <int64_t>lowest, <int64_t>highest, sig) != 0:
        return ADD_REFUSED
    if (s.layout.counts_len > MAX_DECODED_COUNTS_C
            or length > <uint64_t>s.layout.counts_len * MAX_VARINT_BYTES):
        return ADD_REFUSED
    payload_len[0] = length
    return ADD_OK


cdef int _read_and_scan(const uint8_t* data, Py_ssize_t length, _scanned* s) noexcept nogil:
    """Check a V2 encoding, either form, into ``s`` (all of decode's checks, or stricter);
    ``s`` must be zeroed. ADD_OK or ADD_REFUSED. ``s.varints`` may point into ``data``, which
    must then outlive ``s``; ``s.payload`` may be set either way and is the caller's to free."""
    cdef uint32_t payload_len
    if length >= 4 and (_be32(data) & ~(<uint32_t>0xF0)) == _ENCODING_COOKIE_BASE_C:
        # Uncompressed: the payload itself, exactly as long as its header says.
        if length < PAYLOAD_HEADER_SIZE:
            return ADD_REFUSED
        if _check_payload_header(data, s, &payload_len) != ADD_OK:
            return ADD_REFUSED
        if <Py_ssize_t>payload_len != length - PAYLOAD_HEADER_SIZE:
            return ADD_REFUSED
        s.varints = data + PAYLOAD_HEADER_SIZE
        s.payload_len = payload_len
    elif _inflate(data, length, s) != ADD_OK:
        return ADD_REFUSED
    if _scan_counts(s) != DEC_OK:
        return ADD_REFUSED
    return ADD_OK


cdef int _inflate(const uint8_t* data, Py_ssize_t length, _scanned* s) noexcept nogil:
    """Check and inflate a V2 compressed encoding's payload into ``s.payload`` (the varints
    only, not scanned yet); ADD_OK or ADD_REFUSED."""
    cdef uint8_t header[PAYLOAD_HEADER_SIZE]
    cdef z_stream z
    cdef int rc
    cdef uint32_t payload_len
    if length < OUTER_HEADER_SIZE:
        return ADD_REFUSED
    if (_be32(data) & ~(<uint32_t>0xF0)) != _COMPRESSED_COOKIE_BASE_C:
        return ADD_REFUSED
    if <Py_ssize_t>_be32(data + 4) != length - OUTER_HEADER_SIZE:
        return ADD_REFUSED
    memset(&z, 0, sizeof(z))
    if inflateInit(&z) != Z_OK:
        return ADD_REFUSED
    try:
        z.next_in = <unsigned char*>(data + OUTER_HEADER_SIZE)
        z.avail_in = <unsigned int>(length - OUTER_HEADER_SIZE)
        # The header first (40 bytes): its payload length bounds the rest of the output.
        z.next_out = header
        z.avail_out = PAYLOAD_HEADER_SIZE
        rc = inflate(&z, Z_NO_FLUSH)
        if (rc != Z_OK and rc != Z_STREAM_END) or z.avail_out != 0:
            return ADD_REFUSED
        if _check_payload_header(header, s, &payload_len) != ADD_OK:
            return ADD_REFUSED
        # One byte more than announced, to see a payload longer than its header says.
        s.payload = <uint8_t*>malloc(payload_len + 1)
        if s.payload == NULL:
            return ADD_REFUSED
        s.varints = s.payload
        s.payload_len = payload_len
        if rc != Z_STREAM_END:
            z.next_out = s.payload
            z.avail_out = payload_len + 1
            rc = inflate(&z, Z_FINISH)
        # Exactly payload_len bytes, the stream's end reached, no bytes after it.
        if rc != Z_STREAM_END or z.avail_out != 1 or z.avail_in != 0:
            if not (rc == Z_STREAM_END and payload_len == 0 and z.avail_in == 0):
                return ADD_REFUSED
    finally:
        inflateEnd(&z)
    return ADD_OK


cdef inline bint _worth_releasing_gil(const uint8_t* data, Py_ssize_t length) noexcept nogil:
    """Whether reading this encoding is long enough to read it without the GIL."""
    if length >= 4 and (_be32(data) & ~(<uint32_t>0xF0)) == _ENCODING_COOKIE_BASE_C:
        return length > _NOGIL_ADD_BYTES
    return length >= _NOGIL_INFLATE_BYTES


cdef int _add_scanned(hdr_core* h, const _scanned* s) noexcept nogil:
    """Add a scanned payload into ``h``: ADD_OK, or ADD_LAYOUT_DIFFERS / ADD_TOTAL_OVERFLOW
    with ``h`` unchanged."""
    cdef const uint8_t* data = s.varints
    cdef Py_ssize_t length = s.payload_len
    cdef Py_ssize_t pos = 0
    cdef int64_t* counts = h.counts
    cdef uint64_t index = 0
    cdef uint64_t v, half, is_run
    cdef int64_t value
    # The same test as hdr_core_add: then slot i is the same value range in both.
    if (h.counts_len != s.layout.counts_len or h.unit_magnitude != s.layout.unit_magnitude
            or h.sub_bucket_half_count_magnitude != s.layout.sub_bucket_half_count_magnitude):
        return ADD_LAYOUT_DIFFERS
    if s.total > INT64_MAX - h.total_count:
        return ADD_TOTAL_OVERFLOW
    if s.total == 0:
        return ADD_OK
    # The varints were checked by _scan_counts: no bounds or overflow tests needed here, and
    # counts[index] is in range even on a run's varint (which adds 0 before the run's slots).
    while pos < length:
        v = data[pos]
        pos += 1
        if v & 0x80:
            _read_varint_tail(data, length, &pos, &v)
        half = v >> 1
        is_run = -(v & 1)
        counts[index] += <int64_t>(half & ~is_run)
        index += 1 + (half & is_run)
    h.total_count += s.total
    # The decoded histogram's min/max are its slot bounds (see _decode_counts); add's rule.
    value = _value_from_index(&s.layout, s.first)
    if value < h.min_value:
        h.min_value = value
    value = _highest_equivalent(&s.layout, s.last)
    if value > h.max_value:
        h.max_value = value
    return ADD_OK


cdef void _sub_scanned(hdr_core* h, const _scanned* s) noexcept nogil:
    """Take back an ``_add_scanned`` of ``s`` from ``h``'s counts (total, min and max are the
    caller's to restore)."""
    cdef const uint8_t* data = s.varints
    cdef Py_ssize_t length = s.payload_len
    cdef Py_ssize_t pos = 0
    cdef uint64_t* counts = <uint64_t*>h.counts
    cdef uint64_t index = 0
    cdef uint64_t v, half, is_run
    if s.total == 0:
        return
    while pos < length:
        v = data[pos]
        pos += 1
        if v & 0x80:
            _read_varint_tail(data, length, &pos, &v)
        half = v >> 1
        is_run = -(v & 1)
        counts[index] -= half & ~is_run
        index += 1 + (half & is_run)


# --- the Chaperon delta encoding (worker -> master, private) -----------------------------------
#
# What a worker sends every interval, per metric key, and the master merges 100,000 times an
# interval at 1000 workers x 50 keys: built to be added with one byte per non-zero slot.
#
#     u32 magic "CHD1" | u32 significant figures | u64 lowest | u64 highest | u64 total count
#     | u32 count bits k (1..7) | u32 entry bytes | entries                  (big-endian header)
#
# The entries walk the slots from 0 upwards. Each names the next non-zero slot by its gap
# (zero slots skipped since the previous entry's slot + 1) and its count. An entry is one byte
# ``gap << k | count`` when both fit (gap <= 255 >> k, count < 2**k) and the byte is not 0xFF;
# otherwise 0xFF followed by gap and count as unsigned LEB128 varints (at most 10 bytes each).
# The encoder picks the k that gives the fewest bytes: 3 for a 2,000-value latency delta
# (1,450 non-zero slots in ~1,470 bytes; the V2 varints take ~2,250 and twice the walking).
#
# Reading checks everything while adding (one pass, ``_apply_delta``): every slot written is
# inside the counts array (one-byte entries move by at most ``reach`` slots, so runs of them
# are checked in blocks), and afterwards the counts must add up to the header's total and the
# first and last entries must be non-zero (they are the min and max slots). A delta that fails
# is subtracted again (``_unapply_delta``: uint64 arithmetic, so even a wrapped slot comes back
# exactly), so the target is unchanged.

cdef enum:
    DELTA_MAGIC_C = 0x43484431  # "CHD1"
    DELTA_HEADER_SIZE = 40
    DELTA_ESCAPE = 0xFF
    MAX_UVARINT_BYTES = 10
    # _read_delta / _apply_delta refusals (besides ADD_LAYOUT_DIFFERS and ADD_TOTAL_OVERFLOW)
    DELTA_TRUNCATED = -10
    DELTA_BAD_LAYOUT = -11
    DELTA_BAD_LENGTH = -12
    DELTA_BAD_BITS = -13
    DELTA_BAD_ENTRY = -14
    DELTA_BAD_TOTAL = -15

DELTA_MAGIC = b"CHD1"

_DELTA_ERRORS = {
    DELTA_TRUNCATED: "truncated Chaperon delta header",
    DELTA_BAD_LAYOUT: "Chaperon delta layout (lowest, highest, significant figures) is invalid "
                      "or too large",
    DELTA_BAD_LENGTH: "Chaperon delta entries length differs from its header's",
    DELTA_BAD_BITS: "Chaperon delta count bits not in 1..7",
    DELTA_BAD_ENTRY: "Chaperon delta entry past the last slot, or a truncated or overlong varint",
    DELTA_BAD_TOTAL: "Chaperon delta counts do not add up to its total (or a zero first or last "
                     "entry)",
}


cdef struct _delta:
    hdr_core layout          # the header's layout; counts stays NULL
    const uint8_t* entries   # in the caller's bytes, which must outlive this
    Py_ssize_t entries_len
    int64_t total
    int count_bits
    int32_t first            # first and last slot, set by a successful _apply_delta
    int32_t last


cdef inline void _put_be32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline void _put_be64(uint8_t* p, uint64_t v) noexcept nogil:
    _put_be32(p, <uint32_t>(v >> 32))
    _put_be32(p + 4, <uint32_t>v)


cdef inline int _uvarint_size(uint64_t v) noexcept nogil:
    cdef int n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline Py_ssize_t _put_uvarint(uint8_t* out, uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 0
    while v >= 0x80:
        out[n] = <uint8_t>((v & 0x7F) | 0x80)
        v >>= 7
        n += 1
    out[n] = <uint8_t>v
    return n + 1


cdef inline int _read_uvarint(const uint8_t* data, Py_ssize_t length, Py_ssize_t* pos,
                              uint64_t* out) noexcept nogil:
    """An unsigned LEB128 varint of at most 10 bytes (protobuf's); -1 if truncated or longer."""
    cdef Py_ssize_t p = pos[0]
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if p >= length or shift >= 7 * MAX_UVARINT_BYTES:
            return -1
        b = data[p]
        p += 1
        value |= (<uint64_t>(b & 0x7F)) << shift if shift < 64 else 0
        if not (b & 0x80):
            break
        shift += 7
    pos[0] = p
    out[0] = value
    return 0


cdef inline bint _delta_fits(uint64_t gap, uint64_t count, int k) noexcept nogil:
    return gap <= <uint64_t>(255 >> k) and count < (<uint64_t>1 << k) and (
        ((gap << k) | count) != DELTA_ESCAPE)


cdef int _delta_count_bits(const hdr_core* h, int32_t limit, Py_ssize_t* size) noexcept nogil:
    """The count bits (1..7) that encode counts[0:limit] in the fewest entry bytes; their
    number in ``size``."""
    cdef Py_ssize_t sizes[8]
    cdef int32_t i
    cdef int k, best = 3
    cdef uint64_t index = 0, gap, count
    cdef Py_ssize_t escape
    for k in range(8):
        sizes[k] = 0
    for i in range(limit):
        if h.counts[i] == 0:
            continue
        count = <uint64_t>h.counts[i]
        gap = <uint64_t>i - index
        escape = 1 + _uvarint_size(gap) + _uvarint_size(count)
        for k in range(1, 8):
            sizes[k] += 1 if _delta_fits(gap, count, k) else escape
        index = <uint64_t>i + 1
    for k in range(1, 8):
        if sizes[k] < sizes[best]:
            best = k
    size[0] = sizes[best]
    return best


cdef Py_ssize_t _encode_delta_entries(const hdr_core* h, int32_t limit, int k,
                                      uint8_t* out) noexcept nogil:
    cdef int32_t i
    cdef uint64_t index = 0, gap, count
    cdef Py_ssize_t pos = 0
    for i in range(limit):
        if h.counts[i] == 0:
            continue
        count = <uint64_t>h.counts[i]
        gap = <uint64_t>i - index
        if _delta_fits(gap, count, k):
            out[pos] = <uint8_t>((gap << k) | count)
            pos += 1
        else:
            out[pos] = DELTA_ESCAPE
            pos += 1
            pos += _put_uvarint(out + pos, gap)
            pos += _put_uvarint(out + pos, count)
        index = <uint64_t>i + 1
    return pos


cdef inline bint _is_delta(const uint8_t* data, Py_ssize_t length) noexcept nogil:
    return length >= 4 and _be32(data) == DELTA_MAGIC_C


cdef int _read_delta(const uint8_t* data, Py_ssize_t length, _delta* d) noexcept nogil:
    """Check a Chaperon delta's header into ``d`` (the entries are checked when applied).
    ADD_OK or a DELTA_* refusal."""
    cdef uint64_t lowest, highest, total
    cdef uint32_t bits, entries_len
    memset(d, 0, sizeof(_delta))
    if length < DELTA_HEADER_SIZE or _be32(data) != DELTA_MAGIC_C:
        return DELTA_TRUNCATED
    lowest = _be64(data + 8)
    highest = _be64(data + 16)
    total = _be64(data + 24)
    bits = _be32(data + 32)
    entries_len = _be32(data + 36)
    if (lowest > <uint64_t>INT64_MAX or highest > <uint64_t>INT64_MAX
            or _be32(data + 4) > 5
            or _layout_init(&d.layout, <int64_t>lowest, <int64_t>highest,
                            <int>_be32(data + 4)) != 0
            or d.layout.counts_len > MAX_DECODED_COUNTS_C):
        return DELTA_BAD_LAYOUT
    if bits < 1 or bits > 7:
        return DELTA_BAD_BITS
    if <Py_ssize_t>entries_len != length - DELTA_HEADER_SIZE:
        return DELTA_BAD_LENGTH
    if total > <uint64_t>INT64_MAX or (total == 0) != (entries_len == 0):
        return DELTA_BAD_TOTAL
    d.entries = data + DELTA_HEADER_SIZE
    d.entries_len = entries_len
    d.total = <int64_t>total
    d.count_bits = <int>bits
    d.first = d.last = -1
    return ADD_OK


cdef void _unapply_delta(hdr_core* h, const _delta* d, Py_ssize_t stop) noexcept nogil:
    """Subtract from ``h``'s counts the entries of ``d`` before byte ``stop`` (all of which
    _apply_delta added, so all are good)."""
    cdef const uint8_t* data = d.entries
    cdef uint64_t* counts = <uint64_t*>h.counts
    cdef int k = d.count_bits
    cdef uint64_t mask = (<uint64_t>1 << k) - 1
    cdef uint64_t index = 0, b, gap = 0, count = 0
    cdef Py_ssize_t pos = 0
    while pos < stop:
        b = data[pos]
        pos += 1
        if b == DELTA_ESCAPE:
            _read_uvarint(data, stop, &pos, &gap)
            _read_uvarint(data, stop, &pos, &count)
        else:
            gap = b >> k
            count = b & mask
        index += gap
        counts[index] -= count
        index += 1


cdef int _apply_delta(hdr_core* h, _delta* d) noexcept nogil:
    """Add a delta read by _read_delta into ``h``, checking its entries as it goes (see the
    section's comment). ADD_OK; or a refusal (ADD_LAYOUT_DIFFERS, ADD_TOTAL_OVERFLOW,
    DELTA_BAD_ENTRY, DELTA_BAD_TOTAL) with ``h`` unchanged."""
    cdef const uint8_t* data = d.entries
    cdef Py_ssize_t length = d.entries_len
    cdef Py_ssize_t pos = 0, block_end, entry
    cdef uint64_t* counts = <uint64_t*>h.counts
    cdef uint64_t counts_len = <uint64_t>h.counts_len
    cdef int k = d.count_bits
    cdef uint64_t mask = (<uint64_t>1 << k) - 1
    # A one-byte entry moves the slot index by at most this much (its gap, then 1).
    cdef uint64_t reach = (<uint64_t>255 >> k) + 1
    cdef uint64_t declared = <uint64_t>d.total
    cdef uint64_t index = 0, total = 0, b, gap = 0, count = 0, first = 0
    cdef int64_t value
    if (h.counts_len != d.layout.counts_len or h.unit_magnitude != d.layout.unit_magnitude
            or h.sub_bucket_half_count_magnitude != d.layout.sub_bucket_half_count_magnitude):
        return ADD_LAYOUT_DIFFERS
    if d.total > INT64_MAX - h.total_count:
        return ADD_TOTAL_OVERFLOW
    if length == 0:
        return ADD_OK  # total 0 (_read_delta's check)
    # Invariant: index <= counts_len. The first (counts_len - index) // reach one-byte entries
    # from here cannot write past the array, so they run without a test (the escape test
    # ends the block early); the entry after a block is checked on its own.
    while pos < length:
        block_end = pos + <Py_ssize_t>((counts_len - index) // reach)
        if block_end > length:
            block_end = length
        while pos < block_end:
            b = data[pos]
            if b == DELTA_ESCAPE:
                break
            pos += 1
            count = b & mask
            index += b >> k
            counts[index] += count
            total += count
            index += 1
        if pos >= length:
            break
        entry = pos
        b = data[pos]
        pos += 1
        if b == DELTA_ESCAPE:
            if (_read_uvarint(data, length, &pos, &gap) != 0
                    or _read_uvarint(data, length, &pos, &count) != 0):
                _unapply_delta(h, d, entry)
                return DELTA_BAD_ENTRY
        else:
            gap = b >> k
            count = b & mask
        # total stays <= declared <= INT64_MAX here, so one-byte counts (< 128 each, at most
        # 2**32 of them) cannot wrap it between these tests.
        if gap >= counts_len - index or total > declared or count > declared - total:
            _unapply_delta(h, d, entry)
            return DELTA_BAD_ENTRY if gap >= counts_len - index else DELTA_BAD_TOTAL
        index += gap
        counts[index] += count
        total += count
        index += 1
    # ``count`` is the last entry's; the first entry is read again (it is known good).
    pos = 0
    b = data[0]
    if b == DELTA_ESCAPE:
        pos = 1
        _read_uvarint(data, length, &pos, &first)
        _read_uvarint(data, length, &pos, &b)
    else:
        first = b >> k
        b &= mask
    if total != declared or count == 0 or b == 0:
        _unapply_delta(h, d, length)
        return DELTA_BAD_TOTAL
    d.first = <int32_t>first
    d.last = <int32_t>(index - 1)
    h.total_count += d.total
    # The slot bounds, as for a decoded V2 encoding (see _decode_counts).
    value = _value_from_index(&d.layout, d.first)
    if value < h.min_value:
        h.min_value = value
    value = _highest_equivalent(&d.layout, d.last)
    if value > h.max_value:
        h.max_value = value
    return ADD_OK


def _as_encoded_bytes(data: object) -> bytes:
    """Raw encoded bytes (either form) from raw bytes or their base64 text (str or bytes)."""
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("HdrHistogram text must be base64 (ASCII)") from None
    try:
        raw = bytes(memoryview(data))  # not bytes(data): bytes(10**12) allocates a terabyte
    except TypeError:
        raise ValueError(f"cannot decode a histogram from {type(data).__name__}") from None
    if len(raw) >= 4 and ((int.from_bytes(raw[:4], "big") & ~0xF0) in (
            _COMPRESSED_COOKIE_BASE, _ENCODING_COOKIE_BASE) or raw[:4] == DELTA_MAGIC):
        return raw
    # Not raw: must be base64 (the cookies 0x1c849314/3 encode as "HISTFA"/"HISTEw").
    try:
        return base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not an HdrHistogram V2 encoding: bad cookie and not base64") from None


def _inflate_payload(compressed: bytes) -> tuple:
    """Decompress the V2 payload, reading the header before trusting its length."""
    d = zlib.decompressobj()
    try:
        header = d.decompress(compressed, _PAYLOAD_HEADER.size)
        if len(header) < _PAYLOAD_HEADER.size:
            raise ValueError("truncated HdrHistogram payload header")
        fields = _check_header(header)
        payload_len = fields[1]
        # At most payload_len + 1 bytes: one more than allowed shows excess without inflating it.
        counts = d.decompress(d.unconsumed_tail, payload_len + 1)
    except zlib.error as e:
        raise ValueError(f"bad zlib data in HdrHistogram encoding: {e}") from None
    if len(counts) != payload_len:
        raise ValueError(
            f"HdrHistogram payload length is {len(counts)}, header says {payload_len}")
    if not d.eof:
        raise ValueError("truncated zlib stream in HdrHistogram encoding")
    if d.unused_data:
        raise ValueError("trailing bytes after the zlib stream in HdrHistogram encoding")
    return fields, counts


def _split_payload(raw: bytes) -> tuple:
    """The header fields and varints of an uncompressed V2 encoding (the bare payload)."""
    if len(raw) < _PAYLOAD_HEADER.size:
        raise ValueError("truncated HdrHistogram payload header")
    fields = _check_header(raw)
    counts = raw[_PAYLOAD_HEADER.size:]
    if len(counts) != fields[1]:
        raise ValueError(
            f"HdrHistogram payload length is {len(counts)}, header says {fields[1]}")
    return fields, counts


def _check_header(header: bytes) -> tuple:
    # The conversion ratio only matters to Java's DoubleHistogram; integer decoders ignore it.
    cookie, payload_len, normalizing, sig, lowest, highest, _ratio = (
        _PAYLOAD_HEADER.unpack_from(header))
    if (cookie & ~0xF0) != _ENCODING_COOKIE_BASE:
        raise ValueError(f"bad HdrHistogram V2 payload cookie 0x{cookie:08x}")
    if normalizing != 0:
        raise ValueError("HdrHistogram normalizing index offset is not supported (must be 0)")
    if not 1 <= sig <= 5:
        raise ValueError(f"HdrHistogram significant figures {sig} not in 1..5")
    if lowest < 1 or highest > INT64_MAX or highest < 2 * lowest:
        raise ValueError(f"HdrHistogram bounds lowest={lowest} highest={highest} are invalid")
    # Layout size from the header alone, before allocating anything.
    counts_len = _counts_len_for(lowest, highest, sig)
    if counts_len is None or counts_len > MAX_DECODED_COUNTS:
        raise ValueError(
            f"HdrHistogram layout lowest={lowest} highest={highest} sig={sig} too large")
    if payload_len > counts_len * MAX_VARINT_BYTES:
        raise ValueError(f"HdrHistogram payload length {payload_len} too large for its layout")
    return cookie, payload_len, sig, lowest, highest


def _counts_len_for(lowest: int, highest: int, sig: int) -> object:
    """counts_len of a valid header's layout, computed as hdr_core_init does but without
    allocating (None if the layout is one hdr_core_init refuses)."""
    sub_bucket_half_count_magnitude = (2 * 10**sig - 1).bit_length() - 1
    unit_magnitude = lowest.bit_length() - 1
    if unit_magnitude + sub_bucket_half_count_magnitude > 61:
        return None
    smallest_untrackable = 1 << (sub_bucket_half_count_magnitude + 1 + unit_magnitude)
    buckets = 1
    while smallest_untrackable <= highest:
        if smallest_untrackable > INT64_MAX // 2:
            buckets += 1
            break
        smallest_untrackable <<= 1
        buckets += 1
    return (buckets + 1) << sub_bucket_half_count_magnitude


def _decode_delta(bytes raw) -> Histogram:
    """Histogram.decode of a Chaperon delta (raw bytes)."""
    cdef _delta d
    cdef const uint8_t* src = <const uint8_t*>PyBytes_AS_STRING(raw)
    cdef int rc = _read_delta(src, len(raw), &d)
    if rc != ADD_OK:
        raise ValueError(_DELTA_ERRORS[rc])
    cdef Histogram result = Histogram(d.layout.lowest_trackable, d.layout.highest_trackable,
                                      d.layout.significant_figures)
    rc = _apply_delta(&result.core, &d)
    if rc != ADD_OK:
        raise ValueError(_DELTA_ERRORS[rc])
    return result


# --- Python API ------------------------------------------------------------------------------

cdef class InflatedHistogram:
    """An HdrHistogram V2 encoding (either form), checked, and inflated if compressed, but
    not added anywhere yet.

    ``InflatedHistogram(data)`` does the expensive half of ``Histogram.add_encoded`` (zlib if
    compressed, every header and varint check; without the GIL for large inputs, see
    ``_NOGIL_INFLATE_BYTES`` and ``_NOGIL_ADD_BYTES``) and ``Histogram.add_inflated`` the cheap
    half (one walk over the varints), so a caller can inflate outside its lock and add inside
    it, and knows the input is good before changing anything. Malformed input raises
    ``decode``'s ValueError. Immutable: any thread may add it, to any number of histograms.
    """

    cdef _scanned scan
    # The encoding's bytes while scan.varints points into them (an uncompressed encoding).
    cdef bytes source
    # Set only when the fast path refused what ``decode`` accepted: the decoded histogram.
    cdef Histogram decoded

    def __cinit__(self, data: object):
        cdef bytes raw = data if type(data) is bytes else _as_encoded_bytes(data)
        cdef const uint8_t* src = <const uint8_t*>PyBytes_AS_STRING(raw)
        cdef Py_ssize_t src_len = len(raw)
        cdef int rc
        memset(&self.scan, 0, sizeof(_scanned))
        if _worth_releasing_gil(src, src_len):
            with nogil:
                rc = _read_and_scan(src, src_len, &self.scan)
        else:
            rc = _read_and_scan(src, src_len, &self.scan)
        if rc != ADD_OK:
            free(self.scan.payload)
            memset(&self.scan, 0, sizeof(_scanned))
            self.decoded = Histogram.decode(raw)  # raises decode's ValueError
        elif self.scan.payload == NULL:
            self.source = raw  # bytes are immutable: the varints stay where they are

    def __dealloc__(self):
        free(self.scan.payload)

    @property
    def total_count(self) -> int:
        if self.decoded is not None:
            return self.decoded.total_count
        return self.scan.total

    @property
    def significant_figures(self) -> int:
        if self.decoded is not None:
            return self.decoded.significant_figures
        return self.scan.layout.significant_figures

    @property
    def lowest(self) -> int:
        if self.decoded is not None:
            return self.decoded.lowest
        return self.scan.layout.lowest_trackable

    @property
    def highest(self) -> int:
        if self.decoded is not None:
            return self.decoded.highest
        return self.scan.layout.highest_trackable

    def __repr__(self) -> str:
        return (f"InflatedHistogram(lowest={self.lowest}, highest={self.highest}, "
                f"significant_figures={self.significant_figures}, "
                f"total_count={self.total_count})")


cdef class Histogram:
    """Counts of int64 values (latencies in microseconds) in the HdrHistogram layout.

    Not thread-safe: one writer at a time. ``record_many`` releases the GIL, so other Python
    threads must not use the same histogram meanwhile.
    """

    def __cinit__(self, int64_t lowest=1, int64_t highest=3_600_000_000,
                  int significant_figures=3):
        if hdr_core_init(&self.core, lowest, highest, significant_figures) != 0:
            if self.core.counts == NULL and self.core.counts_len > 0:
                raise MemoryError("cannot allocate histogram counts")
            raise ValueError(
                f"invalid histogram layout: lowest={lowest} (>= 1), highest={highest} "
                f"(>= 2 * lowest), significant_figures={significant_figures} (1..5)")

    def __dealloc__(self):
        hdr_core_free(&self.core)

    def __repr__(self) -> str:
        return (f"Histogram(lowest={self.core.lowest_trackable}, "
                f"highest={self.core.highest_trackable}, "
                f"significant_figures={self.core.significant_figures}, "
                f"total_count={self.core.total_count})")

    # -- recording --

    def record(self, int64_t value, int64_t count=1) -> None:
        """Record ``value`` ``count`` times; the value is clamped into [0, highest]."""
        if count <= 0:
            if count < 0:
                raise ValueError(f"count must be >= 0, not {count}")
            return  # a zero count must not move min/max
        hdr_core_record_n(&self.core, value, count)

    def record_many(self, const int64_t[:] values) -> None:
        """Record every value of an int64 buffer (numpy int64 array, array('q'), ...)."""
        cdef hdr_core* h = &self.core
        # hdr_core_record_n, but with the layout, min, max and total in locals: read through
        # h they would be reloaded after every counts store, which (with the
        # -fno-strict-aliasing of Python builds) the compiler must assume may change them.
        cdef hdr_core layout = h[0]
        cdef Py_ssize_t i, n = values.shape[0]
        cdef int64_t v
        cdef int64_t lo = h.min_value, hi = h.max_value
        cdef int64_t highest = h.highest_trackable
        cdef int64_t* counts = h.counts
        if n == 0:
            return
        with nogil:
            for i in range(n):
                v = values[i]
                if v < 0:
                    v = 0
                elif v > highest:
                    v = highest
                counts[hdr_counts_index_for(&layout, v)] += 1
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
            h.min_value = lo
            h.max_value = hi
            h.total_count += n

    # -- queries --

    @property
    def lowest(self) -> int:
        return self.core.lowest_trackable

    @property
    def highest(self) -> int:
        return self.core.highest_trackable

    @property
    def significant_figures(self) -> int:
        return self.core.significant_figures

    @property
    def total_count(self) -> int:
        return self.core.total_count

    @property
    def min(self) -> int:
        """Lowest equivalent value of the smallest recorded value; 0 when empty."""
        if self.core.total_count == 0:
            return 0
        cdef int32_t index = hdr_counts_index_for(&self.core, self.core.min_value)
        return _value_from_index(&self.core, index)

    @property
    def max(self) -> int:
        """Highest equivalent value of the largest recorded value; 0 when empty or when that
        value is 0 (as in Java, C and hdrh, even if slot 0 is wider than 1)."""
        if self.core.total_count == 0 or self.core.max_value == 0:
            return 0
        cdef int32_t index = hdr_counts_index_for(&self.core, self.core.max_value)
        return _highest_equivalent(&self.core, index)

    @property
    def mean(self) -> float:
        """Mean of the slot midpoints (hdrh's get_mean_value); 0.0 when empty."""
        cdef const hdr_core* h = &self.core
        cdef long double total = 0
        cdef int32_t i
        if h.total_count == 0:
            return 0.0
        with nogil:
            # long double: count * value overflows int64 and a double sum loses the low bits.
            for i in range(h.counts_len):
                if h.counts[i]:
                    total += <long double>h.counts[i] * _median_equivalent(h, i)
        return <double>(total / h.total_count)

    @property
    def stddev(self) -> float:
        """Population standard deviation of the slot midpoints (hdrh's get_stddev)."""
        cdef const hdr_core* h = &self.core
        cdef double mean = self.mean
        cdef double dev, total = 0.0
        cdef int32_t i
        if h.total_count == 0:
            return 0.0
        with nogil:
            for i in range(h.counts_len):
                if h.counts[i]:
                    dev = <double>_median_equivalent(h, i) - mean
                    total += dev * dev * <double>h.counts[i]
        return sqrt(total / <double>h.total_count)

    def value_at_percentile(self, double percentile) -> int:
        """Value at ``percentile`` (0..100), as hdrh's get_value_at_percentile; 0 when empty."""
        cdef int64_t out
        _check_percentile(percentile)
        _percentiles(&self.core, &percentile, &out, 1)
        return out

    def percentiles(self, percentiles: Iterable[float]) -> list[int]:
        """Values at several percentiles (any order), in one pass over the counts."""
        ps = [float(p) for p in percentiles]
        for p in ps:
            _check_percentile(p)
        order = sorted(range(len(ps)), key=ps.__getitem__)
        cdef Py_ssize_t n = len(ps), k
        if n == 0:
            return []
        cdef double* sorted_ps = <double*>malloc(n * sizeof(double))
        cdef int64_t* out = <int64_t*>malloc(n * sizeof(int64_t))
        try:
            if sorted_ps == NULL or out == NULL:
                raise MemoryError()
            for k in range(n):
                sorted_ps[k] = ps[order[k]]
            _percentiles(&self.core, sorted_ps, out, n)
            result = [0] * n
            for k in range(n):
                result[order[k]] = out[k]
            return result
        finally:
            free(sorted_ps)
            free(out)

    # -- whole-histogram operations --

    def add(self, Histogram other not None) -> None:
        """Add ``other``'s counts into this one; ValueError if the layouts differ."""
        if hdr_core_add(&self.core, &other.core) != 0:
            raise ValueError(
                f"cannot add histograms of different layouts: {self!r} and {other!r}")

    def add_encoded(self, data: object) -> int:
        """Add the histogram encoded in ``data`` (what ``decode`` reads) into this one, without
        decoding it into a new Histogram; returns the number of values added.

        Same result as ``self.add(Histogram.decode(data))``, and the same ValueError for
        malformed input or a different layout, with this histogram left unchanged; also a
        ValueError if the total count would overflow int64. Releases the GIL for large inputs
        (16 KiB and more compressed, over 64 KiB uncompressed): like ``record_many``, no other
        thread may use this histogram meanwhile.
        """
        cdef bytes raw = data if type(data) is bytes else _as_encoded_bytes(data)
        cdef const uint8_t* src = <const uint8_t*>PyBytes_AS_STRING(raw)
        cdef Py_ssize_t src_len = len(raw)
        cdef _scanned scan
        cdef _delta delta
        cdef int rc
        if _is_delta(src, src_len):
            # One checked pass, GIL held (a delta is a few KB at most: one byte per slot).
            rc = _read_delta(src, src_len, &delta)
            if rc == ADD_OK:
                rc = _apply_delta(&self.core, &delta)
            if rc == ADD_OK:
                return delta.total
            other = Histogram.decode(raw)  # decode's ValueError if malformed
            if rc == ADD_TOTAL_OVERFLOW:
                raise ValueError(f"adding {delta.total} values would overflow the total count "
                                 f"of {self!r}")
            self.add(other)  # the layout's ValueError
            raise AssertionError(f"add_encoded refused a delta that decode and add accept: {rc}")
        memset(&scan, 0, sizeof(_scanned))
        if _worth_releasing_gil(src, src_len):
            with nogil:
                rc = _read_and_scan(src, src_len, &scan)
                if rc == ADD_OK:
                    rc = _add_scanned(&self.core, &scan)
        else:
            rc = _read_and_scan(src, src_len, &scan)
            if rc == ADD_OK:
                rc = _add_scanned(&self.core, &scan)
        free(scan.payload)
        if rc == ADD_OK:
            return scan.total
        if rc == ADD_TOTAL_OVERFLOW:
            raise ValueError(f"adding {scan.total} values would overflow the total count of "
                             f"{self!r}")
        # Refused, or another layout: decode gives its ValueError, add the layout's.
        other = Histogram.decode(raw)
        self.add(other)
        return other.total_count

    def add_inflated(self, InflatedHistogram inflated not None) -> int:
        """Add an ``InflatedHistogram`` into this one; returns the number of values added.

        ValueError (this histogram unchanged) if the layouts differ, as ``add``, or if the
        total count would overflow int64. Holds the GIL unless the payload is large: the walk
        is short, and a caller adding under its own lock should not hand the GIL away.
        """
        cdef int rc
        if inflated.decoded is not None:
            self.add(inflated.decoded)
            return inflated.decoded.total_count
        if inflated.scan.payload_len > _NOGIL_ADD_BYTES:
            with nogil:
                rc = _add_scanned(&self.core, &inflated.scan)
        else:
            rc = _add_scanned(&self.core, &inflated.scan)
        if rc == ADD_LAYOUT_DIFFERS:
            raise ValueError(
                f"cannot add histograms of different layouts: {self!r} and {inflated!r}")
        if rc == ADD_TOTAL_OVERFLOW:
            raise ValueError(f"adding {inflated.scan.total} values would overflow the total "
                             f"count of {self!r}")
        return inflated.scan.total

    def reset(self) -> None:
        hdr_core_reset(&self.core)

    def copy(self) -> Histogram:
        cdef Histogram dup = Histogram(self.core.lowest_trackable, self.core.highest_trackable,
                                       self.core.significant_figures)
        memcpy(dup.core.counts, self.core.counts, self.core.counts_len * sizeof(int64_t))
        dup.core.total_count = self.core.total_count
        dup.core.min_value = self.core.min_value
        dup.core.max_value = self.core.max_value
        return dup

    def _counts(self) -> array:
        """A copy of the raw counts array (for tests and debugging)."""
        cdef object result = array("q", bytes(self.core.counts_len * sizeof(int64_t)))
        cdef int64_t[::1] view = result
        memcpy(&view[0], self.core.counts, self.core.counts_len * sizeof(int64_t))
        return result

    # -- encoding --

    def encode(self, compressed: bool = True) -> bytes:
        """The HdrHistogram V2 encoding as raw bytes (base64 it for text): compressed (what
        users and ``hdrh`` read) or, with ``compressed=False``, the bare payload, over twice
        the bytes but read without zlib (for deltas on a cheap link; ``hdrh`` cannot read it).
        """
        cdef const hdr_core* h = &self.core
        cdef int32_t limit = 0
        cdef Py_ssize_t written
        if h.total_count > 0:
            limit = hdr_counts_index_for(h, h.max_value) + 1
        buf = bytearray(PAYLOAD_HEADER_SIZE + limit * MAX_VARINT_BYTES)
        cdef uint8_t[::1] view = buf
        cdef uint8_t* varints = &view[PAYLOAD_HEADER_SIZE]
        with nogil:
            written = _encode_counts(h, limit, varints)
        _PAYLOAD_HEADER.pack_into(buf, 0, ENCODING_COOKIE, written, 0, h.significant_figures,
                                  h.lowest_trackable, h.highest_trackable, 1.0)
        if not compressed:
            return bytes(memoryview(buf)[:PAYLOAD_HEADER_SIZE + written])
        deflated = zlib.compress(memoryview(buf)[:PAYLOAD_HEADER_SIZE + written])
        return _OUTER.pack(COMPRESSED_COOKIE, len(deflated)) + deflated

    def encode_delta(self) -> bytes:
        """The Chaperon delta encoding (see the section of that name): what workers send the
        master, merged about twice as fast as the uncompressed V2 form and smaller. Only
        ``decode``, ``add_encoded`` and ``DeltaMerger`` read it; users get V2 (``encode``)."""
        cdef const hdr_core* h = &self.core
        cdef int32_t limit = 0
        cdef Py_ssize_t size, written
        cdef int k
        if h.total_count > 0:
            limit = hdr_counts_index_for(h, h.max_value) + 1
        with nogil:
            k = _delta_count_bits(h, limit, &size)
        out = PyBytes_FromStringAndSize(NULL, DELTA_HEADER_SIZE + size)
        cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
        _put_be32(p, DELTA_MAGIC_C)
        _put_be32(p + 4, <uint32_t>h.significant_figures)
        _put_be64(p + 8, <uint64_t>h.lowest_trackable)
        _put_be64(p + 16, <uint64_t>h.highest_trackable)
        _put_be64(p + 24, <uint64_t>h.total_count)
        _put_be32(p + 32, <uint32_t>k)
        _put_be32(p + 36, <uint32_t>size)
        with nogil:
            written = _encode_delta_entries(h, limit, k, p + DELTA_HEADER_SIZE)
        if written != size:
            raise AssertionError(f"delta encoding wrote {written} bytes, sized {size}")
        return out

    @staticmethod
    def decode(data: object) -> Histogram:
        """A histogram from an HdrHistogram V2 encoding, compressed or not: raw bytes or base64
        text (str or bytes). Malformed input raises ValueError."""
        raw = _as_encoded_bytes(data)
        if raw[:4] == DELTA_MAGIC:
            return _decode_delta(raw)
        if len(raw) < _OUTER.size:
            raise ValueError("truncated HdrHistogram encoding")
        cookie, length = _OUTER.unpack_from(raw)
        if (cookie & ~0xF0) == _ENCODING_COOKIE_BASE:
            (_cookie, payload_len, sig, lowest, highest), counts = _split_payload(raw)
        elif (cookie & ~0xF0) == _COMPRESSED_COOKIE_BASE:
            if length != len(raw) - _OUTER.size:
                raise ValueError(f"HdrHistogram encoding announces {length} compressed bytes, "
                                 f"has {len(raw) - _OUTER.size}")
            (_cookie, payload_len, sig, lowest, highest), counts = (
                _inflate_payload(raw[_OUTER.size:]))
        else:
            raise ValueError(f"bad HdrHistogram V2 cookie 0x{cookie:08x}")
        cdef Histogram result = Histogram(lowest, highest, sig)
        cdef const uint8_t* src = <const uint8_t*>PyBytes_AS_STRING(counts)
        cdef Py_ssize_t src_len = len(counts)
        cdef int rc
        with nogil:
            rc = _decode_counts(&result.core, src, src_len)
        if rc == DEC_TRUNCATED_VARINT:
            raise ValueError("truncated varint in HdrHistogram counts")
        if rc == DEC_TOO_MANY_COUNTS:
            raise ValueError(f"HdrHistogram encoding has more than {result.core.counts_len} counts")
        if rc == DEC_TOTAL_OVERFLOW:
            raise ValueError("HdrHistogram total count overflows int64")
        return result


# --- merging serialized reports: DeltaMerger ---------------------------------------------------
#
# The master merges, per worker per interval, a protobuf message holding a repeated message per
# metric key: the key, two histogram deltas (latency, service time), two counters and a
# map<string, int64> (errors by kind). Read through the protobuf runtime that costs more than
# the histograms themselves (~2 us a key: every bytes field copied into a new object, every
# map entry through the runtime's map wrapper), so DeltaMerger reads the serialized message
# itself: one walk over the wire format (field numbers given by the caller, so this module
# knows no schema) notes where each metric's fields lie, then each histogram is added where it
# lies in the message (Chaperon deltas by _apply_delta, V2 by _read_and_scan + _add_scanned).
# A report is merged whole or not at all: every histogram added is logged with its target's
# total/min/max before, and on the first failure the log is taken back in reverse order.
# Counters and error kinds are read and checked before anything changes, and applied last.
# It holds the GIL throughout (a report of 50 keys is ~150 us): there is no point at which
# another thread could see half a report, and no GIL hand-off per report.

cdef enum:
    WIRE_VARINT = 0
    WIRE_I64 = 1
    WIRE_LEN = 2
    WIRE_I32 = 5
    FORM_DELTA = 0
    FORM_V2 = 1
    FORM_DECODED = 2


cdef struct _wire_field:
    uint64_t number
    uint64_t wire
    Py_ssize_t start         # WIRE_LEN: the bytes' offset and length
    Py_ssize_t length
    uint64_t value           # WIRE_VARINT: the value


cdef struct _metric_ref:
    Py_ssize_t body          # the metric message, within the report
    Py_ssize_t body_len
    Py_ssize_t key
    Py_ssize_t key_len
    Py_ssize_t hist[2]       # latency and service-time histograms (length 0: none)
    Py_ssize_t hist_len[2]
    int64_t count
    int64_t errors
    Py_ssize_t tallies       # map entries (errors by kind)


cdef struct _merged:
    hdr_core* target
    int64_t total            # the target's, before
    int64_t min_value
    int64_t max_value
    int form
    _delta delta
    _scanned scan
    const hdr_core* decoded


cdef int _next_field(const uint8_t* data, Py_ssize_t length, Py_ssize_t* pos,
                     _wire_field* f) noexcept nogil:
    """Read one field (tag and value) of a protobuf message; -1 if malformed (groups, which
    proto3 never writes, included)."""
    cdef uint64_t tag, n
    if _read_uvarint(data, length, pos, &tag) != 0:
        return -1
    f.number = tag >> 3
    f.wire = tag & 7
    if f.number == 0:
        return -1
    if f.wire == WIRE_VARINT:
        return _read_uvarint(data, length, pos, &f.value)
    if f.wire == WIRE_LEN:
        if _read_uvarint(data, length, pos, &n) != 0 or n > <uint64_t>(length - pos[0]):
            return -1
        f.start = pos[0]
        f.length = <Py_ssize_t>n
        pos[0] += <Py_ssize_t>n
        return 0
    if f.wire == WIRE_I64:
        n = 8
    elif f.wire == WIRE_I32:
        n = 4
    else:
        return -1
    if n > <uint64_t>(length - pos[0]):
        return -1
    pos[0] += <Py_ssize_t>n
    return 0


cdef void _take_back(_merged* rec) noexcept nogil:
    """Undo one logged add (the last one not yet undone)."""
    cdef hdr_core* h = rec.target
    cdef int32_t i
    if rec.form == FORM_DELTA:
        _unapply_delta(h, &rec.delta, rec.delta.entries_len)
    elif rec.form == FORM_V2:
        _sub_scanned(h, &rec.scan)
    else:
        for i in range(h.counts_len):
            h.counts[i] -= rec.decoded.counts[i]
    h.total_count = rec.total
    h.min_value = rec.min_value
    h.max_value = rec.max_value


cdef int _add_logged(_merged* rec, const uint8_t* data, Py_ssize_t length) noexcept nogil:
    """Add one encoded histogram into rec.target where it lies. ADD_OK; ADD_REFUSED when the
    V2 fast path declines (the caller decodes it); another code: refused, target unchanged."""
    cdef int rc
    if _is_delta(data, length):
        rec.form = FORM_DELTA
        rc = _read_delta(data, length, &rec.delta)
        if rc == ADD_OK:
            rc = _apply_delta(rec.target, &rec.delta)
        return ADD_LAYOUT_DIFFERS if rc == ADD_REFUSED else rc
    rec.form = FORM_V2
    if _read_and_scan(data, length, &rec.scan) != ADD_OK:
        return ADD_REFUSED
    return _add_scanned(rec.target, &rec.scan)


cdef class KeyTotals:
    """One metric key's sums in a DeltaMerger. Live objects: read them while no merge runs."""

    cdef readonly str key
    cdef readonly Histogram hist
    cdef readonly Histogram service
    cdef readonly object count
    cdef readonly object errors
    cdef readonly dict errors_by_kind
    cdef bytes _utf8         # the key as a report carries it

    def __cinit__(self, str key, int64_t lowest, int64_t highest, int significant_figures):
        self.key = key
        self._utf8 = key.encode("utf-8")
        self.hist = Histogram(lowest, highest, significant_figures)
        self.service = Histogram(lowest, highest, significant_figures)
        self.count = 0
        self.errors = 0
        self.errors_by_kind = {}

    def __repr__(self) -> str:
        return (f"KeyTotals({self.key!r}, count={self.count}, errors={self.errors}, "
                f"values={self.hist.total_count}/{self.service.total_count})")


cdef class DeltaMerger:
    """Sums, per metric key, the metric deltas of serialized report messages.

    ``DeltaMerger(metrics=3, key=1, hist=2, service=6, count=3, errors=4, errors_by_kind=5)``
    names the field numbers: the report's repeated metric message, and in it the key
    (string), the two histograms (bytes: Chaperon delta, or HdrHistogram V2 either form), the
    two counters (int64) and the error kinds (map<string, int64>). Other fields are skipped.
    ``merge`` adds a whole serialized report or, with a ValueError, nothing of it. Keys'
    histograms have the given layout; a delta of another layout is an error.

    Not thread-safe: callers serialise ``merge`` and the reads of ``totals()`` (it holds the
    GIL throughout, but a caller's own lock keeps its other state consistent with it).
    """

    cdef uint64_t _metrics_field, _key_field, _count_field, _errors_field, _tally_field
    cdef uint64_t _hist_field[2]
    cdef int64_t _lowest, _highest
    cdef int _significant_figures
    cdef dict _by_key        # key as its UTF-8 bytes -> KeyTotals
    cdef list _order         # KeyTotals, first seen first
    cdef list _previous      # the last merged report's KeyTotals, by position (a cache)
    cdef _metric_ref* _refs  # scratch of merge, grown as needed; freed in __dealloc__
    cdef Py_ssize_t _refs_cap
    cdef _merged* _log
    cdef Py_ssize_t _log_cap

    def __cinit__(self, *, int metrics, int key, int hist, int service, int count, int errors,
                  int errors_by_kind, int64_t lowest=1, int64_t highest=3_600_000_000,
                  int significant_figures=3):
        Histogram(lowest, highest, significant_figures)  # the layout's ValueError, if any
        for number in (metrics, key, hist, service, count, errors, errors_by_kind):
            if number < 1:
                raise ValueError(f"protobuf field numbers are >= 1, not {number}")
        self._metrics_field = metrics
        self._key_field = key
        self._hist_field[0] = hist
        self._hist_field[1] = service
        self._count_field = count
        self._errors_field = errors
        self._tally_field = errors_by_kind
        self._lowest = lowest
        self._highest = highest
        self._significant_figures = significant_figures
        self._by_key = {}
        self._order = []
        self._previous = []

    def __dealloc__(self):
        free(self._refs)
        free(self._log)

    def __len__(self) -> int:
        return len(self._order)

    def totals(self) -> list:
        """Every key's KeyTotals, in the order the keys were first merged."""
        return list(self._order)

    def merge(self, bytes report not None) -> int:
        """Add a serialized report; returns its number of metric messages. A malformed report,
        or a histogram that does not decode or add, raises ValueError and adds nothing."""
        cdef const uint8_t* data = <const uint8_t*>PyBytes_AS_STRING(report)
        cdef Py_ssize_t n = self._parse(data, len(report))
        cdef Py_ssize_t i
        cdef _metric_ref* ref
        cdef KeyTotals t
        cdef list targets = [None] * n
        cdef list tallies = []
        cdef list added = []
        if n < 0:
            raise ValueError("malformed report: not a valid protobuf message")
        cdef list previous = self._previous
        cdef Py_ssize_t n_previous = len(previous)
        try:
            for i in range(n):
                ref = &self._refs[i]
                # Reports of one run list their keys in the same order, mostly: the previous
                # report's key at this position saves making a bytes object and a lookup.
                if i < n_previous:
                    t = previous[i]
                    if (len(t._utf8) == ref.key_len and memcmp(
                            PyBytes_AS_STRING(t._utf8), data + ref.key, ref.key_len) == 0):
                        targets[i] = t
                        if ref.tallies:
                            self._read_tallies(data, ref, t, tallies)
                        continue
                name = PyBytes_FromStringAndSize(<const char*>data + ref.key, ref.key_len)
                t = self._by_key.get(name)
                if t is None:
                    try:
                        key = name.decode("utf-8")
                    except UnicodeDecodeError:
                        raise ValueError(f"metric key {name!r} is not UTF-8") from None
                    t = KeyTotals(key, self._lowest, self._highest, self._significant_figures)
                    self._by_key[name] = t
                    self._order.append(t)
                    added.append(name)
                targets[i] = t
                if ref.tallies:
                    self._read_tallies(data, ref, t, tallies)
            self._add_histograms(data, n, targets)
        except BaseException:
            for name in added:
                del self._by_key[name]
            if added:
                del self._order[len(self._order) - len(added):]
            raise
        # Nothing below can fail (short of memory).
        self._previous = targets
        for i in range(n):
            t = targets[i]
            t.count = t.count + self._refs[i].count
            t.errors = t.errors + self._refs[i].errors
        for t, kind, value in tallies:
            t.errors_by_kind[kind] = t.errors_by_kind.get(kind, 0) + value
        return n

    cdef Py_ssize_t _parse(self, const uint8_t* data, Py_ssize_t length) except -2:
        """Note every metric message's fields in self._refs; their number, or -1 if the report
        is malformed."""
        cdef Py_ssize_t pos = 0, n = 0, body_pos, end
        cdef _wire_field f, g
        cdef _metric_ref* ref
        cdef int which
        while pos < length:
            if _next_field(data, length, &pos, &f) != 0:
                return -1
            if f.number != self._metrics_field or f.wire != WIRE_LEN:
                continue
            if n == self._refs_cap:
                self._grow_refs()
            ref = &self._refs[n]
            memset(ref, 0, sizeof(_metric_ref))
            ref.body = f.start
            ref.body_len = f.length
            body_pos = f.start
            end = f.start + f.length
            # Proto3: the last occurrence of a singular field wins; other wire types than the
            # field's are unknown fields (as the protobuf runtime treats them).
            while body_pos < end:
                if _next_field(data, end, &body_pos, &g) != 0:
                    return -1
                if g.wire == WIRE_LEN:
                    if g.number == self._key_field:
                        ref.key = g.start
                        ref.key_len = g.length
                    elif g.number == self._tally_field:
                        ref.tallies += 1
                    else:
                        for which in range(2):
                            if g.number == self._hist_field[which]:
                                ref.hist[which] = g.start
                                ref.hist_len[which] = g.length
                elif g.wire == WIRE_VARINT:
                    if g.number == self._count_field:
                        ref.count = <int64_t>g.value
                    elif g.number == self._errors_field:
                        ref.errors = <int64_t>g.value
            n += 1
        return n

    cdef int _grow_refs(self) except -1:
        cdef Py_ssize_t cap = self._refs_cap * 2 if self._refs_cap else 64
        cdef _metric_ref* grown = <_metric_ref*>realloc(self._refs, cap * sizeof(_metric_ref))
        if grown == NULL:
            raise MemoryError()
        self._refs = grown
        self._refs_cap = cap
        return 0

    cdef int _read_tallies(self, const uint8_t* data, _metric_ref* ref, KeyTotals t,
                           list out) except -1:
        """Append (t, kind, count) per map entry of the metric (the last entry of a kind wins,
        as in the protobuf runtime); ValueError if malformed or a kind is not UTF-8."""
        cdef Py_ssize_t pos = ref.body, end = ref.body + ref.body_len, entry_pos, entry_end
        cdef Py_ssize_t kind_pos, kind_len
        cdef int64_t value
        cdef _wire_field f, g
        cdef dict last = {} if ref.tallies > 1 else None
        while pos < end:
            _next_field(data, end, &pos, &f)  # checked by _parse
            if f.number != self._tally_field or f.wire != WIRE_LEN:
                continue
            entry_pos = f.start
            entry_end = f.start + f.length
            kind_pos = kind_len = 0
            value = 0
            while entry_pos < entry_end:
                if _next_field(data, entry_end, &entry_pos, &g) != 0:
                    raise ValueError(f"malformed errors_by_kind entry for metric {t.key!r}")
                if g.number == 1 and g.wire == WIRE_LEN:
                    kind_pos = g.start
                    kind_len = g.length
                elif g.number == 2 and g.wire == WIRE_VARINT:
                    value = <int64_t>g.value
            try:
                kind = (<const char*>data)[kind_pos:kind_pos + kind_len].decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"an error kind of metric {t.key!r} is not UTF-8") from None
            if last is None:
                out.append((t, kind, value))
            else:
                last[kind] = value
        if last is not None:
            out.extend([(t, kind, value) for kind, value in last.items()])
        return 0

    cdef int _add_histograms(self, const uint8_t* data, Py_ssize_t n, list targets) except -1:
        """Add every metric's histograms into its key's, or (ValueError) none of them."""
        cdef Py_ssize_t i, done = 0, used = 0, k
        cdef int which, rc = ADD_OK
        cdef _metric_ref* ref
        cdef _merged* rec
        cdef _merged* grown
        cdef KeyTotals t = None
        cdef Histogram target = None
        cdef Histogram other
        cdef list decoded = []
        if 2 * n > self._log_cap:
            grown = <_merged*>realloc(self._log, 2 * n * sizeof(_merged))
            if grown == NULL:
                raise MemoryError()
            self._log = grown
            self._log_cap = 2 * n
        try:
            for i in range(n):
                ref = &self._refs[i]
                t = targets[i]
                for which in range(2):
                    if ref.hist_len[which] == 0:
                        continue
                    target = t.hist if which == 0 else t.service
                    rec = &self._log[done]
                    memset(rec, 0, sizeof(_merged))
                    used = done + 1
                    rec.target = &target.core
                    rec.total = target.core.total_count
                    rec.min_value = target.core.min_value
                    rec.max_value = target.core.max_value
                    rc = _add_logged(rec, data + ref.hist[which], ref.hist_len[which])
                    if rc == ADD_REFUSED:
                        # What only decode reads (base64, say): decoded, then added.
                        rc = ADD_LAYOUT_DIFFERS
                        try:
                            other = Histogram.decode(
                                (<const char*>data)[ref.hist[which]:
                                                    ref.hist[which] + ref.hist_len[which]])
                        except ValueError:
                            break
                        if other.core.total_count > INT64_MAX - target.core.total_count:
                            break
                        if hdr_core_add(&target.core, &other.core) != 0:
                            break
                        decoded.append(other)
                        free(rec.scan.payload)
                        rec.scan.payload = NULL
                        rec.form = FORM_DECODED
                        rec.decoded = &other.core
                        rc = ADD_OK
                    if rc != ADD_OK:
                        break
                    done += 1
                if rc != ADD_OK:
                    break
            if rc != ADD_OK:
                for k in range(done - 1, -1, -1):
                    _take_back(&self._log[k])
                self._raise_add_error(target, data, ref, which, t)
        finally:
            for k in range(used):
                if self._log[k].form == FORM_V2:
                    free(self._log[k].scan.payload)
        return 0

    cdef int _raise_add_error(self, Histogram target, const uint8_t* data, _metric_ref* ref,
                              int which, KeyTotals t) except -1:
        """Raise what ``add_encoded`` says of the histogram that failed (on a scratch copy)."""
        encoded = (<const char*>data)[ref.hist[which]:ref.hist[which] + ref.hist_len[which]]
        name = "histogram" if which == 0 else "service-time histogram"
        try:
            target.copy().add_encoded(encoded)
        except ValueError as exc:
            raise ValueError(f"metric {t.key!r}: {name}: {exc}") from None
        raise ValueError(f"metric {t.key!r}: {name} does not add")
