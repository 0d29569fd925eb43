# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""HDR histogram (HdrHistogram layout) with O(1) recording without the GIL.

(Core only; the Python API, percentiles and the V2 encoding are being written.)
"""

from libc.stdint cimport int32_t, int64_t, INT64_MAX
from libc.stdlib cimport calloc, free
from libc.string cimport memset
from libc.math cimport ceil, log2, floor, pow


cdef int hdr_core_init(hdr_core* h, int64_t lowest, int64_t highest, int sig_figs) noexcept nogil:
    cdef int64_t largest_single_unit
    cdef int32_t sub_bucket_count_magnitude
    cdef int64_t smallest_untrackable
    cdef int32_t buckets_needed
    memset(h, 0, sizeof(hdr_core))
    if lowest < 1 or sig_figs < 1 or sig_figs > 5 or highest < 2 * lowest:
        return -1
    h.lowest_trackable = lowest
    h.highest_trackable = highest
    h.significant_figures = sig_figs
    largest_single_unit = 2 * <int64_t>pow(10, sig_figs)
    sub_bucket_count_magnitude = <int32_t>ceil(log2(<double>largest_single_unit))
    h.sub_bucket_half_count_magnitude = (sub_bucket_count_magnitude if sub_bucket_count_magnitude > 1 else 1) - 1
    h.unit_magnitude = <int32_t>floor(log2(<double>lowest))
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
    h.counts = <int64_t*>calloc(h.counts_len, sizeof(int64_t))
    if h.counts == NULL:
        return -1
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
    cdef int32_t i
    if (dst.counts_len != src.counts_len or dst.unit_magnitude != src.unit_magnitude
            or dst.sub_bucket_half_count_magnitude != src.sub_bucket_half_count_magnitude):
        return -1
    for i in range(src.counts_len):
        dst.counts[i] += src.counts[i]
    dst.total_count += src.total_count
    if src.min_value < dst.min_value:
        dst.min_value = src.min_value
    if src.max_value > dst.max_value:
        dst.max_value = src.max_value
    return 0


cdef class Histogram:
    def __cinit__(self, int64_t lowest=1, int64_t highest=3_600_000_000, int significant_figures=3):
        if hdr_core_init(&self.core, lowest, highest, significant_figures) != 0:
            raise ValueError("invalid histogram bounds or out of memory")

    def __dealloc__(self):
        hdr_core_free(&self.core)

    def record(self, int64_t value, int64_t count=1):
        hdr_core_record_n(&self.core, value, count)

    @property
    def total_count(self):
        return self.core.total_count
