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

Worker-to-master deltas use a third, internal form, the Chaperon delta encoding
(``encode_delta``: one byte per non-zero slot, checked while it is added, ~2x cheaper to merge
than the uncompressed V2 payload), and ``DeltaMerger`` merges whole serialized reports of them
without a Python object per histogram; see the two sections of those names below. ``decode``
and ``add_encoded`` read it too.

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


include "histogram_codec.pxi"


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
    cdef int rc = _read_delta(src, len(raw), &d, NULL)
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
            rc = _read_delta(src, src_len, &delta, &self.core)
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


include "histogram_merge.pxi"
