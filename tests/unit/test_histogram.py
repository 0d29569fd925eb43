"""_fastpath.histogram against hdrh (the PyPI reference) and against tests/unit/_ref_hdr.py.

hdrh reads only the compressed V2 encoding; the uncompressed one (``encode(compressed=False)``)
is checked against the payload that hdrh's compressed encoding wraps."""

from __future__ import annotations

import base64
import math
import struct
import zlib
from array import array

import numpy as np
import pytest
from _ref_hdr import RefHistogram  # pytest puts tests/unit on sys.path (no __init__.py)
from hdrh.histogram import HdrHistogram
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fastpath.histogram import Histogram, InflatedHistogram

HIGHEST = 3_600_000_000
PERCENTILES = [10, 20, 30, 40, 50, 60, 75, 80, 85, 90, 95, 99, 99.9, 99.99, 99.999, 100]

# hdrh is pure Python and walks all 23,552 slots per query, so its comparisons get few examples.
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(max_examples=40, deadline=None)
FAST = settings(max_examples=150, deadline=None)

# Latency-like mixtures: zeros, the unit-resolution range, log-uniform, and the top end.
_value = st.one_of(
    st.just(0),
    st.integers(0, 2_100),
    st.integers(0, 40).flatmap(lambda k: st.integers(0, min(2**k, HIGHEST))),
    st.integers(HIGHEST - 10_000_000, HIGHEST),
    st.integers(0, HIGHEST),
)
values_lists = st.lists(_value, min_size=0, max_size=400)
nonempty_values = st.lists(_value, min_size=1, max_size=400)


def _ours(values: list[int]) -> Histogram:
    h = Histogram(1, HIGHEST, 3)
    h.record_many(np.asarray(values, dtype=np.int64))
    return h


def _theirs(values: list[int]) -> HdrHistogram:
    h = HdrHistogram(1, HIGHEST, 3)
    for v in values:
        h.record_value(v)
    return h


def _assert_same_as_hdrh(ours: Histogram, theirs: HdrHistogram) -> None:
    assert ours.total_count == theirs.get_total_count()
    assert ours.min == theirs.get_min_value()
    assert ours.max == theirs.get_max_value()
    expected = theirs.get_percentile_to_value_dict(PERCENTILES)
    assert ours.percentiles(PERCENTILES) == [expected[p] for p in PERCENTILES]
    assert ours.mean == pytest.approx(theirs.get_mean_value(), rel=1e-9, abs=0)
    assert ours.stddev == pytest.approx(theirs.get_stddev(), rel=1e-9, abs=1e-9)


# --- against hdrh ------------------------------------------------------------------------------


@SLOW
@given(nonempty_values)
def test_statistics_match_hdrh(values: list[int]) -> None:
    _assert_same_as_hdrh(_ours(values), _theirs(values))


def test_value_at_percentile_matches_hdrh_one_by_one() -> None:
    rng = np.random.default_rng(7)
    values = rng.lognormal(9, 2.5, 3_000).astype(np.int64).clip(0, HIGHEST)
    ours, theirs = _ours(values.tolist()), _theirs(values.tolist())
    for p in [0, 0.1, *PERCENTILES, 33.333]:
        assert ours.value_at_percentile(p) == theirs.get_value_at_percentile(p), p


def test_record_with_count_matches_hdrh() -> None:
    ours, theirs = Histogram(), HdrHistogram(1, HIGHEST, 3)
    for value, count in [(0, 3), (1, 1), (999, 10), (123_456, 7), (HIGHEST, 2)]:
        ours.record(value, count)
        theirs.record_value(value, count)
    _assert_same_as_hdrh(ours, theirs)


# --- encoding ----------------------------------------------------------------------------------


@SLOW
@given(values_lists)
def test_our_encoding_is_hdrh_encoding(values: list[int]) -> None:
    ours, theirs = _ours(values), _theirs(values)
    encoded = ours.encode()
    # Same bytes as the reference (same zero-run rule, same zlib defaults)...
    assert encoded == base64.b64decode(theirs.encode())
    # The uncompressed form is the payload the compressed one wraps (hdrh cannot read it).
    assert ours.encode(compressed=False) == zlib.decompress(encoded[8:])
    # ...and hdrh reads them.
    decoded = HdrHistogram.decode(base64.b64encode(encoded))
    assert decoded.get_total_count() == ours.total_count
    assert decoded.get_max_value() == ours.max
    assert list(decoded.counts)[: decoded.counts_len] == list(ours._counts())


@SLOW
@given(values_lists, st.sampled_from([(1, HIGHEST, 3), (1, 10**6, 2), (1000, 10**12, 3)]))
def test_decode_hdrh_encoding(values: list[int], layout: tuple[int, int, int]) -> None:
    theirs = HdrHistogram(*layout)
    lowest, highest, sig = layout
    for v in values:
        theirs.record_value(min(v, highest))
    ours = Histogram.decode(theirs.encode())  # base64 bytes
    assert (ours.lowest, ours.highest, ours.significant_figures) == layout
    assert list(ours._counts()) == list(theirs.counts)[: theirs.counts_len]
    assert Histogram.decode(theirs.encode().decode("ascii"))._counts() == ours._counts()
    # min/max as hdrh reports them after its own decode: slot bounds, which is all the
    # encoding keeps (a recorded 0 in a 512-wide slot 0 decodes to max 511 in both).
    decoded = HdrHistogram.decode(theirs.encode())
    assert (ours.total_count, ours.min, ours.max) == (
        decoded.get_total_count(),
        decoded.get_min_value(),
        decoded.get_max_value(),
    )
    expected = theirs.get_percentile_to_value_dict(PERCENTILES)
    assert ours.percentiles(PERCENTILES) == [expected.get(p, 0) for p in PERCENTILES]


@MEDIUM
@given(values_lists)
def test_round_trip(values: list[int]) -> None:
    ours = _ours(values)
    for data in (ours.encode(), base64.b64encode(ours.encode())):
        back = Histogram.decode(data)
        assert back._counts() == ours._counts()
        assert (back.total_count, back.min, back.max) == (ours.total_count, ours.min, ours.max)
        assert back.percentiles(PERCENTILES) == ours.percentiles(PERCENTILES)


@MEDIUM
@given(values_lists, st.sampled_from([(1, HIGHEST, 3), (1, 10**6, 2), (1000, 10**12, 3)]))
def test_uncompressed_round_trip_equals_compressed(
    values: list[int], layout: tuple[int, int, int]
) -> None:
    ours = _filled(layout, values)
    via_compressed = Histogram.decode(ours.encode())
    raw = ours.encode(compressed=False)
    assert raw == zlib.decompress(ours.encode()[8:])
    text = base64.b64encode(raw)
    for data in (raw, text, text.decode("ascii"), bytearray(raw), memoryview(raw)):
        back = Histogram.decode(data)
        assert _state(back) == _state(via_compressed)
        assert back.significant_figures == ours.significant_figures
        assert back.percentiles(PERCENTILES) == via_compressed.percentiles(PERCENTILES)


def test_encoding_layout() -> None:
    h = Histogram()
    h.record(5)
    h.record(1_000_000, 3)
    data = h.encode()
    cookie, length = struct.unpack_from(">II", data)
    assert (cookie, length) == (0x1C849314, len(data) - 8)
    payload = zlib.decompress(data[8:])
    header = struct.unpack_from(">IIIIQQd", payload)
    assert header == (0x1C849313, len(payload) - 40, 0, 3, 1, HIGHEST, 1.0)
    assert h.encode(compressed=False) == payload
    assert h.encode(True) == data  # the default is unchanged


def test_large_counts_use_nine_byte_varints() -> None:
    h = Histogram()
    h.record(42, 2**62 - 1)
    back = Histogram.decode(h.encode())
    assert back._counts() == h._counts() and back.total_count == 2**62 - 1
    assert RefHistogram.decode(h.encode()).counts == list(h._counts())
    raw = h.encode(compressed=False)
    assert Histogram.decode(raw)._counts() == h._counts()
    assert Histogram().add_encoded(raw) == 2**62 - 1


# --- merge -------------------------------------------------------------------------------------


@MEDIUM
@given(values_lists, values_lists)
def test_add_equals_recording_both(a: list[int], b: list[int]) -> None:
    merged = _ours(a)
    merged.add(_ours(b))
    both = _ours(a + b)
    assert merged._counts() == both._counts()
    assert (merged.total_count, merged.min, merged.max) == (both.total_count, both.min, both.max)
    assert merged.percentiles(PERCENTILES) == both.percentiles(PERCENTILES)


def test_add_into_and_from_empty() -> None:
    data = Histogram()
    data.record(700)
    data.record(90_000)
    empty = Histogram()
    empty.add(data)  # a new histogram takes min and max from the other
    assert (empty.total_count, empty.min, empty.max) == (2, 700, data.max)
    data.add(Histogram())  # adding nothing changes nothing
    assert (data.total_count, data.min, data.max) == (2, 700, empty.max)
    both_empty = Histogram()
    both_empty.add(Histogram())
    assert (both_empty.total_count, both_empty.min, both_empty.max) == (0, 0, 0)


def test_add_mismatched_layout_raises() -> None:
    h = Histogram(1, HIGHEST, 3)
    for other in (Histogram(1, HIGHEST, 2), Histogram(1, 10**6, 3), Histogram(1024, HIGHEST, 3)):
        with pytest.raises(ValueError, match="different layouts"):
            h.add(other)
    with pytest.raises(TypeError):
        h.add(None)


# --- against the pure-Python reference ---------------------------------------------------------


@MEDIUM
@given(
    st.lists(st.tuples(st.integers(-5, HIGHEST + 10**9), st.integers(1, 1000)), max_size=100),
    st.sampled_from([(1, HIGHEST, 3), (1, 10**5, 1), (3, 10**9, 2), (1000, 10**8, 4)]),
)
def test_matches_reference(records: list[tuple[int, int]], layout: tuple[int, int, int]) -> None:
    ours, ref = Histogram(*layout), RefHistogram(*layout)
    for value, count in records:
        ours.record(value, count)
        ref.record(value, count)
    assert list(ours._counts()) == ref.counts
    assert (ours.total_count, ours.min, ours.max) == (ref.total_count, ref.min, ref.max)
    assert ours.percentiles([0, *PERCENTILES]) == ref.percentiles([0, *PERCENTILES])
    assert ours.value_at_percentile(50) == ref.value_at_percentile(50)
    assert ours.mean == pytest.approx(ref.mean, rel=1e-12)
    assert ours.stddev == pytest.approx(ref.stddev, rel=1e-9, abs=1e-9)
    assert ours.encode() == ref.encode()
    assert RefHistogram.decode(ours.encode()).counts == ref.counts


# --- hostile input -----------------------------------------------------------------------------


def _payload(header: tuple, body: bytes = b"") -> bytes:
    compressed = zlib.compress(struct.pack(">IIIIQQd", *header) + body)
    return struct.pack(">II", 0x1C849314, len(compressed)) + compressed


def _bare(header: tuple, body: bytes = b"") -> bytes:
    """An uncompressed encoding: the payload itself."""
    return struct.pack(">IIIIQQd", *header) + body


_GOOD = _ours([0, 1, 5, 5, 999, 2048, 123_456, 10**9, HIGHEST]).encode()
_GOOD_PAYLOAD = zlib.decompress(_GOOD[8:])  # also the uncompressed encoding
assert _GOOD_PAYLOAD == _ours([0, 1, 5, 5, 999, 2048, 123_456, 10**9, HIGHEST]).encode(False)


# (input, what decode's ValueError says; None: it decodes)
_MALFORMED = [
    (b"", "truncated"),
    (b"\x1c\x84\x93\x14\x00", "truncated"),
    (b"not base64 !!", "bad cookie"),
    ("HISTFAAAA\u00e9", "ASCII"),
    (_GOOD[:-1], "announces"),
    (_GOOD[:8] + b"x" * (len(_GOOD) - 8), "zlib"),
    (struct.pack(">II", 0x1C849301, 0), "cookie"),
    (_payload((0x1C849313, 0, 0, 0, 1, HIGHEST, 1.0)), "significant figures"),
    (_payload((0x1C849313, 0, 0, 6, 1, HIGHEST, 1.0)), "significant figures"),
    (_payload((0x1C849313, 0, 0, 3, 0, HIGHEST, 1.0)), "bounds"),
    (_payload((0x1C849313, 0, 0, 3, 10, 19, 1.0)), "bounds"),
    (_payload((0x1C849313, 0, 0, 3, 1, 2**64 - 1, 1.0)), "bounds"),
    (_payload((0x1C849313, 0, 0, 5, 1, 2**63 - 1, 1.0)), "too large"),
    (_payload((0x1C849313, 0, 0, 3, 2**61, 2**63 - 1, 1.0)), "too large"),
    (_payload((0x1C849313, 0, 7, 3, 1, HIGHEST, 1.0)), "normalizing"),
    (_payload((0x1C849312, 0, 0, 3, 1, HIGHEST, 1.0)), "payload cookie"),
    (_payload((0x1C849313, 2**31, 0, 3, 1, HIGHEST, 1.0)), "too large"),
    (_payload((0x1C849313, 5, 0, 3, 1, HIGHEST, 1.0), b"\x02"), "length"),
    (_payload((0x1C849313, 1, 0, 3, 1, HIGHEST, 1.0), b"\x02\x02"), "length"),
    (_payload((0x1C849313, 1, 0, 3, 1, HIGHEST, 1.0), b"\x82"), "truncated varint"),
    (_payload((0x1C849313, 4, 0, 3, 1, 1000, 1.0), b"\xff\xff\x03\x02"), "more than"),
    (_payload((0x1C849313, 2, 0, 3, 1, 1000, 1.0), b"\x02" * 2), None),  # fine
    (
        _payload((0x1C849313, 10, 0, 3, 1, HIGHEST, 1.0), b"\xfe" + b"\xff" * 7 + b"\xff" * 2),
        "truncated varint",
    ),
    (
        _payload((0x1C849313, 18, 0, 3, 1, HIGHEST, 1.0), (b"\xfe" + b"\xff" * 8) * 2),
        "overflows",
    ),
    (_GOOD[: 8 + 10], "announces"),
    (struct.pack(">II", 0x1C849314, len(_GOOD) - 10) + _GOOD[8:-2], "truncated zlib"),
    (
        struct.pack(">II", 0x1C849314, len(_GOOD) - 8 + 3) + _GOOD[8:] + b"abc",
        "trailing",
    ),
]

# The same damage to the uncompressed encoding, and what only it can have wrong: its length.
_MALFORMED_UNCOMPRESSED = [
    (b"\x1c\x84\x93\x13\x00", "truncated"),
    (_GOOD_PAYLOAD[:39], "truncated HdrHistogram payload header"),
    (base64.b64encode(_GOOD_PAYLOAD[:39]), "truncated HdrHistogram payload header"),
    (_GOOD_PAYLOAD[:40], "length"),
    (_GOOD_PAYLOAD[:-1], "length"),
    (_GOOD_PAYLOAD + b"\x02", "length"),
    (base64.b64encode(_GOOD_PAYLOAD + b"\x00"), "length"),
    (struct.pack(">I", 0x1C849303) + _GOOD_PAYLOAD[4:-2], "length"),  # the cookie without 0x10
    (_bare((0x1C849313, 0, 0, 0, 1, HIGHEST, 1.0)), "significant figures"),
    (_bare((0x1C849313, 0, 0, 6, 1, HIGHEST, 1.0)), "significant figures"),
    (_bare((0x1C849313, 0, 0, 3, 0, HIGHEST, 1.0)), "bounds"),
    (_bare((0x1C849313, 0, 0, 3, 10, 19, 1.0)), "bounds"),
    (_bare((0x1C849313, 0, 0, 3, 1, 2**64 - 1, 1.0)), "bounds"),
    (_bare((0x1C849313, 0, 0, 5, 1, 2**63 - 1, 1.0)), "too large"),
    (_bare((0x1C849313, 0, 0, 3, 2**61, 2**63 - 1, 1.0)), "too large"),
    (_bare((0x1C849313, 0, 7, 3, 1, HIGHEST, 1.0)), "normalizing"),
    (_bare((0x1C849313, 2**31, 0, 3, 1, HIGHEST, 1.0)), "too large"),
    (_bare((0x1C849313, 2**32 - 1, 0, 3, 1, HIGHEST, 1.0), b"\x02"), "too large"),
    (_bare((0x1C849313, 5, 0, 3, 1, HIGHEST, 1.0), b"\x02"), "length"),
    (_bare((0x1C849313, 1, 0, 3, 1, HIGHEST, 1.0), b"\x02\x02"), "length"),
    (_bare((0x1C849313, 1, 0, 3, 1, HIGHEST, 1.0), b"\x82"), "truncated varint"),
    (_bare((0x1C849313, 4, 0, 3, 1, 1000, 1.0), b"\xff\xff\x03\x02"), "more than"),
    # One count past the last slot (2048 at 1..1000, 3 figures), in one-byte varints only.
    # (a run of 64 is 0x7f, of 62 is 0x7b)
    (_bare((0x1C849313, 34, 0, 3, 1, 1000, 1.0), b"\x02" + b"\x7f" * 32 + b"\x02"), "more than"),
    (  # fine: the second count in the last slot
        _bare((0x1C849313, 34, 0, 3, 1, 1000, 1.0), b"\x02" + b"\x7f" * 31 + b"\x7b\x02"),
        None,
    ),
    (_bare((0x1C849313, 2, 0, 3, 1, 1000, 1.0), b"\x02" * 2), None),  # fine
    (
        _bare((0x1C849313, 10, 0, 3, 1, HIGHEST, 1.0), b"\xfe" + b"\xff" * 7 + b"\xff" * 2),
        "truncated varint",
    ),
    (
        _bare((0x1C849313, 18, 0, 3, 1, HIGHEST, 1.0), (b"\xfe" + b"\xff" * 8) * 2),
        "overflows",
    ),
    # Overflowing only through the one-byte counts after a huge one.
    (
        _bare((0x1C849313, 11, 0, 3, 1, HIGHEST, 1.0), b"\xfc" + b"\xff" * 8 + b"\x02\x02"),
        "overflows",
    ),
]


@pytest.mark.parametrize(("data", "message"), _MALFORMED + _MALFORMED_UNCOMPRESSED)
def test_decode_rejects_malformed(data: bytes | str, message: str | None) -> None:
    if message is None:
        assert Histogram.decode(data).total_count == 2
        return
    with pytest.raises(ValueError, match=message):
        Histogram.decode(data)


@pytest.mark.parametrize("data", [10**12, None, 3.5, [1, 2]])
def test_decode_rejects_non_bytes(data: object) -> None:
    # bytes(10**12) would allocate a terabyte: only buffers and str are accepted.
    with pytest.raises(ValueError, match="cannot decode"):
        Histogram.decode(data)


def _decode_or_value_error(data: bytes) -> None:
    try:
        h = Histogram.decode(data)
    except ValueError:
        return
    assert h.total_count >= 0 and h.max >= h.min  # what decoded is a usable histogram


@FAST
@given(st.binary(max_size=200))
def test_decode_garbage_raises_value_error_only(data: bytes) -> None:
    _decode_or_value_error(data)
    _decode_or_value_error(b"\x1c\x84\x93\x14" + data)
    _decode_or_value_error(b"\x1c\x84\x93\x13" + data)
    _decode_or_value_error(_GOOD_PAYLOAD[:40] + data)  # a good header, garbage varints
    _decode_or_value_error(base64.b64encode(data))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_decode_mutated_encoding_raises_value_error_only(data: st.DataObject) -> None:
    # Mutate the outer bytes (mostly caught by zlib) and, re-compressed, the payload itself so
    # the header checks and the varint decoder see the damage.
    for blob, wrap in _MUTATED_FORMS:
        mutated = bytearray(blob)
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = data.draw(st.integers(0, len(mutated) - 1))
        if kind == "flip":
            mutated[at] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            del mutated[at:]
        elif kind == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        else:
            del mutated[at : at + data.draw(st.integers(1, 9))]
        _decode_or_value_error(wrap(bytes(mutated)))


def _recompress(payload: bytes) -> bytes:
    compressed = zlib.compress(payload)
    return struct.pack(">II", 0x1C849314, len(compressed)) + compressed


def _as_is(blob: bytes) -> bytes:
    return blob


# (encoding, how the mutated bytes are sent): the compressed bytes themselves, its payload
# re-compressed, and that payload as the uncompressed encoding.
_MUTATED_FORMS = ((_GOOD, _as_is), (_GOOD_PAYLOAD, _recompress), (_GOOD_PAYLOAD, _as_is))


def test_every_truncation_raises_value_error() -> None:
    for blob in (_GOOD, _GOOD_PAYLOAD):
        for end in range(len(blob)):
            for read in (Histogram.decode, Histogram().add_encoded, InflatedHistogram):
                with pytest.raises(ValueError):
                    read(blob[:end])


# --- basics ------------------------------------------------------------------------------------


def test_empty_histogram() -> None:
    h = Histogram()
    assert (h.total_count, h.min, h.max, h.mean, h.stddev) == (0, 0, 0, 0.0, 0.0)
    assert h.value_at_percentile(0) == h.value_at_percentile(50) == h.value_at_percentile(100) == 0
    assert h.percentiles([50, 99.9]) == [0, 0]
    assert h.percentiles([]) == []
    assert Histogram.decode(h.encode()).total_count == 0
    raw = h.encode(compressed=False)
    assert len(raw) == 40 and Histogram.decode(raw).total_count == 0
    assert Histogram().add_encoded(raw) == 0 and InflatedHistogram(raw).total_count == 0


def test_reset_and_copy() -> None:
    h = _ours([1, 10, 100, 10_000, 10**9])
    dup = h.copy()
    h.reset()
    assert (h.total_count, h.min, h.max) == (0, 0, 0)
    assert not any(h._counts())
    assert (dup.total_count, dup.min, dup.max) == (5, 1, _ours([10**9]).max)
    dup.record(3)  # the copy owns its counts
    assert h.total_count == 0 and dup.total_count == 6
    h.record(7)
    assert (h.min, h.max) == (7, 7)


def test_clamping_and_arguments() -> None:
    h = Histogram()
    h.record(-5)
    h.record(HIGHEST * 10)
    h.record_many(np.array([-1, HIGHEST + 1], dtype=np.int64))
    assert h.percentiles([0, 50, 100]) == [0, 0, _ours([HIGHEST]).max]
    assert h.total_count == 4
    h.record(12, 0)  # a zero count records nothing
    assert h.total_count == 4 and h.max == _ours([HIGHEST]).max
    with pytest.raises(ValueError):
        h.record(1, -1)
    for p in (-0.1, 100.1, math.nan):
        with pytest.raises(ValueError):
            h.value_at_percentile(p)
        with pytest.raises(ValueError):
            h.percentiles([50, p])
    with pytest.raises(ValueError):
        Histogram(0, 100, 3)
    with pytest.raises(ValueError):
        Histogram(1, 100, 6)
    with pytest.raises(ValueError):  # 2 * lowest would overflow int64
        Histogram(2**62, 2**63 - 1, 3)
    with pytest.raises(ValueError):
        h.record_many(np.array([1.0]))


def test_record_many_accepts_int64_buffers() -> None:
    expected = _ours([3, 5, 7, 9])
    for buf in (
        array("q", [3, 5, 7, 9]),
        np.array([3, 99, 5, 99, 7, 99, 9], dtype=np.int64)[::2],  # strided
        np.array([3, 5, 7, 9], dtype=np.int64).view(np.int64).copy(),
    ):
        h = Histogram()
        h.record_many(buf)
        assert h._counts() == expected._counts() and h.total_count == 4
    readonly = np.array([3, 5, 7, 9], dtype=np.int64)
    readonly.flags.writeable = False
    h = Histogram()
    h.record_many(readonly)
    assert h._counts() == expected._counts()


def test_percentiles_order_and_duplicates() -> None:
    h = _ours(list(range(1, 10_001)))
    ps = [99, 50, 0, 100, 50, 25.5]
    assert h.percentiles(ps) == [h.value_at_percentile(p) for p in ps]


def test_c_api_is_exported_for_the_engine() -> None:
    import _fastpath.histogram as module

    capi = module.__pyx_capi__
    for name in ("hdr_core_init", "hdr_core_free", "hdr_core_reset", "hdr_core_add"):
        assert name in capi


# --- add_encoded / InflatedHistogram: adding without decoding, against decode + add -----------

_LAYOUTS = [(1, HIGHEST, 3), (1, 10**6, 2), (1000, 10**12, 3), (1, 2, 1)]


def _state(h: Histogram) -> tuple:
    return (h._counts(), h.total_count, h.min, h.max, h.lowest, h.highest)


def _filled(layout: tuple[int, int, int], values: list[int]) -> Histogram:
    h = Histogram(*layout)
    h.record_many(np.asarray([min(v, layout[1]) for v in values], dtype=np.int64))
    return h


def _add_all_ways(target: Histogram, data: object) -> list[tuple]:
    """The target after decode + add, add_encoded and add_inflated (or the ValueError text)."""
    outcomes = []
    for way in ("decode", "encoded", "inflated"):
        h = target.copy()
        try:
            if way == "decode":
                other = Histogram.decode(data)
                h.add(other)
                added = other.total_count
            elif way == "encoded":
                added = h.add_encoded(data)
            else:
                added = h.add_inflated(InflatedHistogram(data))
        except ValueError as exc:
            assert _state(h) == _state(target), f"{way} changed the target before failing"
            outcomes.append(("ValueError", str(exc).split(":")[0]))
            continue
        outcomes.append((added, _state(h)))
    return outcomes


@MEDIUM
@given(values_lists, values_lists, st.sampled_from(_LAYOUTS))
def test_add_encoded_equals_decode_and_add(
    before: list[int], delta: list[int], layout: tuple[int, int, int]
) -> None:
    target = _filled(layout, before)
    compressed = _filled(layout, delta).encode()
    decode, encoded_way, inflated = _add_all_ways(target, compressed)
    assert decode == encoded_way == inflated
    assert decode[0] == len(delta)
    # The uncompressed encoding, raw or base64, adds exactly what the compressed one does.
    raw = _filled(layout, delta).encode(compressed=False)
    for data in (raw, base64.b64encode(raw), bytearray(raw)):
        assert _add_all_ways(target, data) == [decode] * 3


@MEDIUM
@given(values_lists, st.sampled_from(_LAYOUTS))
def test_add_encoded_reads_hdrh_and_base64(values: list[int], layout: tuple[int, int, int]) -> None:
    theirs = HdrHistogram(*layout)
    for v in values:
        theirs.record_value(min(v, layout[1]))
    target = _filled(layout, [1, 2, 3])
    text = theirs.encode()  # base64 bytes
    for data in (text, text.decode("ascii"), base64.b64decode(text)):
        decode, encoded_way, inflated = _add_all_ways(target, data)
        assert decode == encoded_way == inflated and decode[0] == len(values)


def test_add_encoded_layouts() -> None:
    h = _ours([5, 50_000])
    before = _state(h)
    # Another layout: add's ValueError, nothing changed.
    for other in (Histogram(1, 10**6, 3), Histogram(1, HIGHEST, 2), Histogram(2, HIGHEST, 3)):
        other.record(100)
        for compressed in (True, False):
            with pytest.raises(ValueError, match="different layouts"):
                h.add_encoded(other.encode(compressed))
            with pytest.raises(ValueError, match="different layouts"):
                h.add_inflated(InflatedHistogram(other.encode(compressed)))
        assert _state(h) == before
    # Another highest with the same slots is compatible, as for add.
    near = Histogram(1, HIGHEST - 1, 3)
    near.record(7)
    assert h.add_encoded(near.encode()) == 1
    assert h.total_count == 3 and h.min == 5


def test_add_encoded_empty_and_repeated() -> None:
    h = _ours([1000])
    assert h.add_encoded(Histogram().encode()) == 0
    assert (h.total_count, h.min, h.max) == (1, 1000, 1000)
    empty = Histogram()
    assert empty.add_encoded(Histogram().encode()) == 0
    assert (empty.total_count, empty.min, empty.max) == (0, 0, 0)
    # An InflatedHistogram is immutable: it adds the same into any number of histograms.
    delta = InflatedHistogram(_ours([3, 3, 70_000]).encode())
    assert (delta.total_count, delta.lowest, delta.highest, delta.significant_figures) == (
        3,
        1,
        HIGHEST,
        3,
    )
    a, b = Histogram(), Histogram()
    for _ in range(3):
        a.add_inflated(delta)
        b.add_inflated(delta)
    assert _state(a) == _state(b) and a.total_count == 9


def test_inflated_uncompressed_keeps_its_bytes() -> None:
    # An uncompressed encoding is scanned where it lies: the InflatedHistogram must keep those
    # bytes alive, whether it was given bytes (shared) or another buffer (copied).
    import gc

    expected = Histogram()
    expected.add_encoded(_GOOD)
    deltas = [
        InflatedHistogram(bytes(bytearray(_GOOD_PAYLOAD))),
        InflatedHistogram(bytearray(_GOOD_PAYLOAD)),
        InflatedHistogram(memoryview(bytearray(_GOOD_PAYLOAD))),
        InflatedHistogram(base64.b64encode(_GOOD_PAYLOAD).decode("ascii")),
    ]
    gc.collect()
    _ = [bytes(len(_GOOD_PAYLOAD)) for _ in range(1000)]  # reuse freed memory, if any
    for delta in deltas:
        h = Histogram()
        assert h.add_inflated(delta) == 9
        assert _state(h) == _state(expected)


def test_add_encoded_refuses_total_overflow() -> None:
    h = Histogram()
    h.record(10, 2**63 - 2)
    before = _state(h)
    with pytest.raises(ValueError, match="overflow"):
        h.add_encoded(_ours([1, 2]).encode())
    with pytest.raises(ValueError, match="overflow"):
        h.add_inflated(InflatedHistogram(_ours([1, 2]).encode()))
    with pytest.raises(ValueError, match="overflow"):
        h.add_encoded(_ours([1, 2]).encode(compressed=False))
    with pytest.raises(ValueError, match="overflow"):
        h.add_inflated(InflatedHistogram(_ours([1, 2]).encode(compressed=False)))
    assert _state(h) == before
    assert h.add_encoded(_ours([1]).encode()) == 1


@pytest.mark.parametrize(("data", "message"), _MALFORMED + _MALFORMED_UNCOMPRESSED)
def test_add_encoded_rejects_malformed_as_decode(data: bytes | str, message: str | None) -> None:
    target = _ours([1, 2_000, 70_000])
    before = _state(target)
    if message is None:
        layout = Histogram.decode(data)
        target = Histogram(layout.lowest, layout.highest, layout.significant_figures)
        assert target.add_encoded(data) == 2
        assert InflatedHistogram(data).total_count == 2
        return
    with pytest.raises(ValueError, match=message):
        target.add_encoded(data)
    with pytest.raises(ValueError, match=message):
        InflatedHistogram(data)
    assert _state(target) == before


@pytest.mark.parametrize("data", [10**12, None, 3.5, [1, 2]])
def test_add_encoded_rejects_non_bytes(data: object) -> None:
    with pytest.raises(ValueError, match="cannot decode"):
        Histogram().add_encoded(data)
    with pytest.raises(ValueError, match="cannot decode"):
        InflatedHistogram(data)


@FAST
@given(st.binary(max_size=200))
def test_add_encoded_garbage_as_decode(data: bytes) -> None:
    target = _ours([9, 99])
    for blob in (data, b"\x1c\x84\x93\x14" + data, base64.b64encode(data)):
        decode, encoded_way, inflated = _add_all_ways(target, blob)
        assert decode == encoded_way == inflated


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_add_encoded_mutated_as_decode(data: st.DataObject) -> None:
    # The same damage as test_decode_mutated_encoding_raises_value_error_only; whatever decode
    # says (an error, or a histogram), the fast paths say the same and change nothing on error.
    target = _ours([1, 5, 2048])
    for blob, wrap in _MUTATED_FORMS:
        mutated = bytearray(blob)
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = data.draw(st.integers(0, len(mutated) - 1))
        if kind == "flip":
            mutated[at] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            del mutated[at:]
        elif kind == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        else:
            del mutated[at : at + data.draw(st.integers(1, 9))]
        decode, encoded_way, inflated = _add_all_ways(target, wrap(bytes(mutated)))
        assert decode == encoded_way == inflated


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("layout", [(1, HIGHEST, 3), (1, 10**7, 4)])
def test_add_encoded_from_threads(layout: tuple[int, int, int], compressed: bool) -> None:
    # Realistic deltas (about 1 KB compressed, 2 KB not) keep the GIL; the 4-figure ones
    # (about 19 KB compressed, over 64 KiB not) release it, and threads adding into their own
    # histograms must not disturb each other.
    import threading

    rng = np.random.default_rng(11)
    if layout[2] == 3:
        samples = [rng.lognormal(np.log(2_000), 0.6, 2_000).astype(np.int64) for _ in range(20)]
    else:
        n = 50_000 if compressed else 200_000
        samples = [rng.integers(0, 10**7, n) for _ in range(4)]
        big = _filled(layout, samples[0].tolist()).encode(compressed)
        assert len(big) >= (16 * 1024 if compressed else 64 * 1024 + 1)
    deltas = [_filled(layout, s.tolist()).encode(compressed) for s in samples]
    expected = Histogram(*layout)
    for d in deltas:
        expected.add(Histogram.decode(d))
    results = [Histogram(*layout) for _ in range(4)]

    def work(h: Histogram) -> None:
        for _ in range(5):
            for d in deltas:
                h.add_encoded(d)
                h.add_inflated(InflatedHistogram(d))

    threads = [threading.Thread(target=work, args=(h,)) for h in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in results:
        assert h.total_count == 10 * expected.total_count
        assert h.percentiles(PERCENTILES) == expected.percentiles(PERCENTILES)
        assert (h.min, h.max) == (expected.min, expected.max)


# --- the Chaperon delta encoding (encode_delta), against a Python reference of the format --------


_DELTA_HEADER = struct.Struct(">4sIQQQII")  # magic, sig, lowest, highest, total, k, length


def _uvarint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _ref_entries(counts: list[int], k: int) -> bytes:
    """The entries as the format's description says, for any count bits k."""
    out = bytearray()
    index = 0
    for i, c in enumerate(counts):
        if c == 0:
            continue
        gap = i - index
        if gap <= 255 >> k and c < 1 << k and (gap << k | c) != 0xFF:
            out.append(gap << k | c)
        else:
            out += b"\xff" + _uvarint(gap) + _uvarint(c)
        index = i + 1
    return bytes(out)


def _ref_delta(h: Histogram, k: int) -> bytes:
    counts = list(h._counts())
    entries = _ref_entries(counts, k)
    header = (b"CHD1", h.significant_figures, h.lowest, h.highest, sum(counts), k, len(entries))
    return _DELTA_HEADER.pack(*header) + entries


def _ref_read_delta(data: bytes) -> list[int]:
    """The counts a well-formed delta holds (the reference reader; no checks)."""
    _, sig, lowest, highest, _, k, _ = _DELTA_HEADER.unpack_from(data)
    counts = [0] * len(Histogram(lowest, highest, sig)._counts())
    pos, index = _DELTA_HEADER.size, 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        if b == 0xFF:
            gap = count = shift = 0
            for which in range(2):
                value = shift = 0
                while True:
                    value |= (data[pos] & 0x7F) << shift
                    pos += 1
                    if data[pos - 1] < 0x80:
                        break
                    shift += 7
                if which == 0:
                    gap = value
                else:
                    count = value
        else:
            gap, count = b >> k, b & ((1 << k) - 1)
        index += gap
        counts[index] += count
        index += 1
    return counts


@MEDIUM
@given(values_lists, st.sampled_from(_LAYOUTS))
def test_delta_round_trip_and_reference(values: list[int], layout: tuple[int, int, int]) -> None:
    h = _filled(layout, values)
    data = h.encode_delta()
    # The encoder picks the count bits that give the fewest bytes; any k reads the same.
    k = struct.unpack_from(">I", data, 32)[0]
    sizes = {bits: len(_ref_entries(list(h._counts()), bits)) for bits in range(1, 8)}
    assert data == _ref_delta(h, k) and sizes[k] == min(sizes.values())
    assert _ref_read_delta(data) == list(h._counts())
    for bits in range(1, 8):
        back = Histogram.decode(_ref_delta(h, bits))
        assert _state(back) == _state(Histogram.decode(h.encode()))
    back = Histogram.decode(data)
    assert _state(back) == _state(Histogram.decode(h.encode()))
    assert back.significant_figures == h.significant_figures
    assert back.percentiles(PERCENTILES) == h.percentiles(PERCENTILES)
    for text in (base64.b64encode(data), base64.b64encode(data).decode("ascii")):
        assert _state(Histogram.decode(text)) == _state(back)


@MEDIUM
@given(values_lists, values_lists, st.sampled_from(_LAYOUTS))
def test_add_encoded_delta_equals_decode_and_add(
    before: list[int], delta: list[int], layout: tuple[int, int, int]
) -> None:
    target = _filled(layout, before)
    expected = _add_all_ways(target, _filled(layout, delta).encode())
    data = _filled(layout, delta).encode_delta()
    assert _add_all_ways(target, data) == expected
    assert _add_all_ways(target, base64.b64encode(data)) == expected


def test_delta_counts_and_gaps_of_every_size() -> None:
    # Counts and gaps past every k's one-byte limits, up to the largest count (escapes).
    h = Histogram()
    for i, count in enumerate([1, 2, 7, 8, 15, 16, 127, 128, 255, 256, 2**31, 2**40]):
        h.record(1 + 37 * i**3, count)
    h.record(HIGHEST)  # the last slot
    h.record(0)  # the first
    data = h.encode_delta()
    assert _state(Histogram.decode(data)) == _state(Histogram.decode(h.encode()))
    big = Histogram()
    big.record(42, 2**63 - 1)
    assert Histogram.decode(big.encode_delta()).total_count == 2**63 - 1
    empty = Histogram().encode_delta()
    assert len(empty) == 40 and Histogram.decode(empty).total_count == 0
    assert _ours([5]).add_encoded(empty) == 0


def test_delta_is_smaller_than_v2_for_latency_deltas() -> None:
    rng = np.random.default_rng(3)
    h = _filled((1, HIGHEST, 3), rng.lognormal(np.log(2_000), 0.6, 2_000).astype(int).tolist())
    assert len(h.encode_delta()) < 0.75 * len(h.encode(compressed=False))


def _delta_bytes(
    entries: bytes,
    total: int,
    k: int = 3,
    sig: int = 3,
    lowest: int = 1,
    highest: int = 1000,
    length: int | None = None,
) -> bytes:
    size = len(entries) if length is None else length
    return _DELTA_HEADER.pack(b"CHD1", sig, lowest, highest, total, k, size) + entries


_GOOD_DELTA = _ours([0, 1, 5, 5, 999, 2048, 123_456, 10**9, HIGHEST]).encode_delta()

# (input, what decode's ValueError says; None: it decodes to 2 values). 1..1000 at 3 figures
# has 2048 slots; with k = 3 a byte moves at most 32 slots.
_MALFORMED_DELTA = [
    (b"CHD1", "truncated Chaperon delta header"),
    (_GOOD_DELTA[:39], "truncated Chaperon delta header"),
    (_GOOD_DELTA[:-1], "length"),
    (_GOOD_DELTA + b"\x01", "length"),
    (_delta_bytes(b"\x01\x01", 2, sig=0), "layout"),
    (_delta_bytes(b"\x01\x01", 2, sig=6), "layout"),
    (_delta_bytes(b"\x01\x01", 2, sig=2**32 - 1), "layout"),
    (_delta_bytes(b"\x01\x01", 2, lowest=0), "layout"),
    (_delta_bytes(b"\x01\x01", 2, lowest=10, highest=19), "layout"),
    (_delta_bytes(b"\x01\x01", 2, highest=2**64 - 1), "layout"),
    (_delta_bytes(b"\x01\x01", 2, sig=5, highest=2**63 - 1), "layout"),
    (_delta_bytes(b"\x01\x01", 2, k=0), "count bits"),
    (_delta_bytes(b"\x01\x01", 2, k=8), "count bits"),
    (_delta_bytes(b"\x01\x01", 2, length=3), "length"),
    (_delta_bytes(b"\x01\x01", 2), None),  # fine: slots 0 and 1
    (_delta_bytes(b"\x01\x01", 3), "add up"),
    (_delta_bytes(b"\x01\x01", 1), "add up"),
    (_delta_bytes(b"", 1), "add up"),
    (_delta_bytes(b"\x01", 0), "add up"),
    (_delta_bytes(b"\x00\x01\x01", 2), "add up"),  # a zero first entry
    (_delta_bytes(b"\x01\x01\x00", 2), "add up"),  # a zero last entry
    (_delta_bytes(b"\x01\x00\x01", 2), None),  # a zero entry between: a skip
    (_delta_bytes(b"\x01" + b"\xf8" * 63 + b"\xf1", 2), None),  # the last slot (2047)
    (_delta_bytes(b"\x01" + b"\xf8" * 64 + b"\x01", 2), "past the last slot"),
    (_delta_bytes(b"\x01\xff\xfe\x0f\x01", 2), None),  # an escape to slot 2047
    (_delta_bytes(b"\x01\xff\xff\x0f\x01", 2), "past the last slot"),
    (_delta_bytes(b"\x01\xff" + b"\xff" * 9 + b"\x01\x01", 2), "past the last slot"),
    (_delta_bytes(b"\x01\xff\x00", 2), "truncated"),
    (_delta_bytes(b"\x01\xff\x80", 2), "truncated"),
    (_delta_bytes(b"\x01\xff\x00" + b"\x81" * 10 + b"\x01", 2), "overlong"),
    (_delta_bytes(b"\x01\xff\x00\x05", 2), "add up"),  # an escaped count past the total
    (_delta_bytes(b"\xff\x00" + _uvarint(2**63 - 1) + b"\x01", 2**63 - 1, highest=10**6), "add up"),
]


@pytest.mark.parametrize(("data", "message"), _MALFORMED_DELTA)
def test_delta_rejects_malformed(data: bytes, message: str | None) -> None:
    if message is None:
        assert Histogram.decode(data).total_count == 2
        target = Histogram(1, 1000, 3)
        assert target.add_encoded(data) == 2 and InflatedHistogram(data).total_count == 2
        return
    with pytest.raises(ValueError, match=message):
        Histogram.decode(data)
    target = _filled((1, 1000, 3), [1, 500, 999, 999])
    before = _state(target)
    with pytest.raises(ValueError, match=message):
        target.add_encoded(data)
    with pytest.raises(ValueError, match=message):
        InflatedHistogram(data)
    assert _state(target) == before


def test_delta_every_truncation_raises_value_error() -> None:
    for end in range(len(_GOOD_DELTA)):
        for read in (Histogram.decode, Histogram().add_encoded, InflatedHistogram):
            with pytest.raises(ValueError):
                read(_GOOD_DELTA[:end])


def test_delta_layouts_and_overflow() -> None:
    h = _ours([5, 50_000])
    before = _state(h)
    for other in (Histogram(1, 10**6, 3), Histogram(1, HIGHEST, 2), Histogram(2, HIGHEST, 3)):
        other.record(100)
        with pytest.raises(ValueError, match="different layouts"):
            h.add_encoded(other.encode_delta())
    assert _state(h) == before
    full = Histogram()
    full.record(10, 2**63 - 2)
    before = _state(full)
    with pytest.raises(ValueError, match="overflow"):
        full.add_encoded(_ours([1, 2]).encode_delta())
    # A malformed delta gets its own error first, as decode + add would give it.
    with pytest.raises(ValueError, match="add up"):
        full.add_encoded(_delta_bytes(b"\x01\x01", 3, highest=HIGHEST))
    assert _state(full) == before
    # A layout too large for decode is refused by add_encoded too, even into its own layout.
    huge = Histogram(1, 2**62, 5)
    huge.record(5)
    for read in (Histogram.decode, Histogram(1, 2**62, 5).add_encoded):
        with pytest.raises(ValueError, match="too large"):
            read(huge.encode_delta())


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_delta_mutated_as_decode(data: st.DataObject) -> None:
    # Whatever decode says of a damaged delta (an error, or a histogram), add_encoded says the
    # same and changes nothing on error; a decoded histogram is a usable one.
    rng = np.random.default_rng(data.draw(st.integers(0, 3)))
    source = _filled((1, 10**6, 3), rng.lognormal(np.log(2_000), 1.0, 300).astype(int).tolist())
    mutated = bytearray(source.encode_delta())
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "byte"]))
    at = data.draw(st.integers(0, len(mutated) - 1))
    if kind == "flip":
        mutated[at] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del mutated[at:]
    elif kind == "insert":
        mutated[at:at] = data.draw(st.binary(min_size=1, max_size=9))
    elif kind == "delete":
        del mutated[at : at + data.draw(st.integers(1, 9))]
    else:  # an entry byte changed, the length kept: only the entry checks can tell
        at = data.draw(st.integers(40, len(mutated) - 1))
        mutated[at] = data.draw(st.sampled_from([0x00, 0xFF, 0xF8, 0x07, 0x01]))
    blob = bytes(mutated)
    _decode_or_value_error(blob)
    target = _filled((1, 10**6, 3), [1, 5, 2048])
    decode, encoded_way, inflated = _add_all_ways(target, blob)
    assert decode == encoded_way == inflated
