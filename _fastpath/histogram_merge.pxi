# Included by histogram.pyx: DeltaMerger, merging whole serialized WorkerReports in C.

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
        rc = _read_delta(data, length, &rec.delta, rec.target)
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
