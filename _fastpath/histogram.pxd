# cython: language_level=3
"""C-level HDR histogram core, shared by histogram.pyx and engine.pyx.

The layout is HdrHistogram's (Gil Tene's): values are bucketed with ``significant_figures``
decimal digits of precision; bucket ``b`` holds ``sub_bucket_half_count`` slots of width
``2**(b + unit_magnitude)``. ``hdr_core_record`` is inline here so the engine records a value
with a handful of integer instructions, without the GIL and without a function-pointer call.

Memory: ``counts`` is owned by the struct; allocate with ``hdr_core_init`` and release with
``hdr_core_free`` exactly once (the Histogram class does it in ``__dealloc__``).
"""

from libc.stdint cimport int32_t, int64_t


cdef extern from *:
    """
    static inline int chaperon_clzll(unsigned long long v) { return __builtin_clzll(v); }
    """
    int chaperon_clzll(unsigned long long v) nogil


cdef struct hdr_core:
    int64_t lowest_trackable
    int64_t highest_trackable
    int32_t significant_figures
    int32_t unit_magnitude
    int32_t sub_bucket_half_count_magnitude
    int32_t sub_bucket_count
    int32_t sub_bucket_half_count
    int64_t sub_bucket_mask
    int32_t bucket_count
    int32_t counts_len
    int64_t total_count
    int64_t min_value        # INT64_MAX when empty
    int64_t max_value        # 0 when empty
    int64_t* counts          # counts_len slots, owned


# Defined in histogram.pyx (exported through the module's C API).
# hdr_core_init: h must not own counts yet (it is zeroed first); -1 on invalid bounds
# (lowest >= 1, highest >= 2 * lowest, sig_figs 1..5) or out of memory, with h.counts NULL.
# min_value/max_value hold raw recorded values; Histogram.min/max report their slot bounds.
cdef int hdr_core_init(hdr_core* h, int64_t lowest, int64_t highest, int sig_figs) noexcept nogil
cdef void hdr_core_free(hdr_core* h) noexcept nogil
cdef void hdr_core_reset(hdr_core* h) noexcept nogil
# Adds src's counts into dst; returns -1 (and changes nothing) when the layouts differ.
cdef int hdr_core_add(hdr_core* dst, const hdr_core* src) noexcept nogil


cdef inline int32_t hdr_counts_index_for(const hdr_core* h, int64_t value) noexcept nogil:
    cdef int32_t pow2ceiling = 64 - chaperon_clzll(<unsigned long long>(value | h.sub_bucket_mask))
    cdef int32_t bucket_index = pow2ceiling - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
    cdef int32_t sub_bucket_index = <int32_t>(value >> (bucket_index + h.unit_magnitude))
    cdef int32_t bucket_base_index = (bucket_index + 1) << h.sub_bucket_half_count_magnitude
    return bucket_base_index + (sub_bucket_index - h.sub_bucket_half_count)


cdef inline void hdr_core_record_n(hdr_core* h, int64_t value, int64_t n) noexcept nogil:
    """Record ``value`` n times; values are clamped into [0, highest_trackable]."""
    if value < 0:
        value = 0
    elif value > h.highest_trackable:
        value = h.highest_trackable
    h.counts[hdr_counts_index_for(h, value)] += n
    h.total_count += n
    if value < h.min_value:
        h.min_value = value
    if value > h.max_value:
        h.max_value = value


cdef inline void hdr_core_record(hdr_core* h, int64_t value) noexcept nogil:
    hdr_core_record_n(h, value, 1)


cdef class Histogram:
    cdef hdr_core core
