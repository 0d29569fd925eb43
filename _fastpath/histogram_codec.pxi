# Included by histogram.pyx: adding a V2 or delta encoding to a histogram without decoding it,
# and the Chaperon delta encoding (worker -> master).

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
    if p < length and data[p] < 0x80:  # one byte: tags, short lengths, small counts
        out[0] = data[p]
        pos[0] = p + 1
        return 0
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


cdef int _read_delta(const uint8_t* data, Py_ssize_t length, _delta* d,
                     const hdr_core* like) noexcept nogil:
    """Check a Chaperon delta's header into ``d`` (the entries are checked when applied).
    ``like`` (or NULL): a histogram whose layout the delta probably has, copied rather than
    computed again when it does. ADD_OK or a DELTA_* refusal."""
    cdef uint64_t lowest, highest, total
    cdef uint32_t bits, entries_len, sig
    memset(d, 0, sizeof(_delta))
    if length < DELTA_HEADER_SIZE or _be32(data) != DELTA_MAGIC_C:
        return DELTA_TRUNCATED
    sig = _be32(data + 4)
    lowest = _be64(data + 8)
    highest = _be64(data + 16)
    total = _be64(data + 24)
    bits = _be32(data + 32)
    entries_len = _be32(data + 36)
    if (like != NULL and lowest == <uint64_t>like.lowest_trackable
            and highest == <uint64_t>like.highest_trackable
            and sig == <uint32_t>like.significant_figures
            and like.counts_len <= MAX_DECODED_COUNTS_C):
        d.layout = like[0]  # a valid layout: hdr_core_init made it
        d.layout.counts = NULL
        d.layout.total_count = 0
        d.layout.min_value = INT64_MAX
        d.layout.max_value = 0
    elif (lowest > <uint64_t>INT64_MAX or highest > <uint64_t>INT64_MAX or sig > 5
            or _layout_init(&d.layout, <int64_t>lowest, <int64_t>highest, <int>sig) != 0
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
