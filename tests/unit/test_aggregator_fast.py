"""The master's merge (``DeltaMerger`` over serialized reports) against merging one by one.

``Aggregator.add_report`` merges the serialized report in one C walk. The reference here
decodes every histogram on its own (``Histogram.decode``) and adds it into its key's histogram
with ``Histogram.add``, report after report, and sums the counters and error kinds from the
protobuf runtime's parse. Both must give exactly the same histograms (every count, total,
min and max) and the same ``Result``, for random reports: several value ranges, counts that
need escapes, empty and missing histograms, a key twice in a report, the three encodings.
A report that is bad anywhere merges nothing at all.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from _fastpath.histogram import DeltaMerger, Histogram
from chaperon.v1 import worker_pb2
from master_service.aggregator import _FIELDS, Aggregator, _metric

HIGHEST = 3_600_000_000
KEYS = [f"GET /item/{i}" for i in range(6)] + ["POST /é", ""]
FORMS = ("delta", "compressed", "uncompressed")


def _encode(h: Histogram, form: str) -> bytes:
    if form == "delta":
        return h.encode_delta()
    return h.encode(form == "compressed")


def _values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Values from one of several ranges, as latencies of different services look."""
    kind = int(rng.integers(0, 5))
    if kind == 0:  # latency-like: ~1,450 distinct slots for 2,000 values
        return rng.lognormal(np.log(2_000), 0.6, n).astype(np.int64)
    if kind == 1:  # the whole range, sparse
        return rng.integers(0, HIGHEST + 1, n, dtype=np.int64)
    if kind == 2:  # log-uniform over 1 us .. 2**40 (clamped to the highest)
        return np.minimum(2.0 ** rng.uniform(0, 40, n), HIGHEST).astype(np.int64)
    if kind == 3:  # a few slots, high counts (escapes with large counts)
        return rng.choice(np.array([0, 1, 999, 2_048, 70_000, HIGHEST]), n)
    return rng.integers(0, 20, n, dtype=np.int64)  # tiny, dense


def _hist(rng: np.random.Generator, n: int) -> Histogram:
    h = Histogram()
    h.record_many(_values(rng, n))
    if rng.integers(0, 4) == 0:  # counts far above one byte's
        h.record(int(rng.integers(0, 10**6)), int(rng.integers(1, 2**40)))
    return h


def _delta(rng: np.random.Generator, key: str, form: str | None) -> worker_pb2.MetricDelta:
    n = int(rng.choice([0, 1, 5, 300, 2_000]))
    hist, service = _hist(rng, n), _hist(rng, n)
    drawn = [str(f) for f in rng.choice(FORMS, 2)]  # drawn always: same values for any form
    pick = drawn if form is None else [form, form]
    kinds = {f"kind{i}": int(rng.integers(0, 5)) for i in range(int(rng.integers(0, 3)))}
    return worker_pb2.MetricDelta(
        key=key,
        hdr=_encode(hist, pick[0]) if rng.integers(0, 8) else b"",
        service_hdr=_encode(service, pick[1]) if rng.integers(0, 3) else b"",
        count=n,
        errors=int(rng.integers(0, 3)),
        errors_by_kind=kinds,
    )


def _reports(
    seed: int, workers: int = 4, intervals: int = 3, form: str | None = None
) -> list[tuple[str, worker_pb2.WorkerReport]]:
    """Random reports; ``form`` None: each histogram in an encoding drawn at random."""
    rng = np.random.default_rng(seed)
    out = []
    for seq in range(1, intervals + 1):
        for w in range(workers):
            keys = [str(k) for k in rng.choice(KEYS, int(rng.integers(1, len(KEYS) + 1)))]
            report = worker_pb2.WorkerReport(
                assignment_id=f"a{w}",
                sequence=seq,
                metrics=[_delta(rng, key, form) for key in keys],  # a key may come twice
                final=seq == intervals,
                sessions_started=10,
                sessions_completed=10 if seq == intervals else 0,
                elapsed_s=float(seq),
            )
            out.append((f"w{w}", report))
    return out


@dataclass
class _RefTotals:
    """What a KeyTotals holds, summed one histogram at a time."""

    key: str
    hist: Histogram = field(default_factory=Histogram)
    service: Histogram = field(default_factory=Histogram)
    count: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


def _reference(reports: list[tuple[str, worker_pb2.WorkerReport]]) -> dict[str, _RefTotals]:
    keys: dict[str, _RefTotals] = {}
    for _, report in reports:
        for m in worker_pb2.WorkerReport.FromString(report.SerializeToString()).metrics:
            ref = keys.setdefault(m.key, _RefTotals(m.key))
            if m.hdr:
                ref.hist.add(Histogram.decode(m.hdr))
            if m.service_hdr:
                ref.service.add(Histogram.decode(m.service_hdr))
            ref.count += m.count
            ref.errors += m.errors
            for kind, n in m.errors_by_kind.items():
                ref.errors_by_kind[kind] = ref.errors_by_kind.get(kind, 0) + n
    return keys


def _state(h: Histogram) -> tuple:
    return (h._counts(), h.total_count, h.min, h.max)


def _assert_same(agg: Aggregator, reference: dict[str, _RefTotals]) -> None:
    totals = {t.key: t for t in agg._merger.totals()}
    assert sorted(totals) == sorted(reference)
    for key, ref in reference.items():
        t = totals[key]
        assert _state(t.hist) == _state(ref.hist), key
        assert _state(t.service) == _state(ref.service), key
        assert (t.count, t.errors, t.errors_by_kind) == (ref.count, ref.errors, ref.errors_by_kind)
    result = agg.result()
    expected = [_metric(reference[k], result.duration_s) for k in sorted(reference)]  # type: ignore[arg-type]
    assert list(result.metrics) == expected


@pytest.mark.parametrize("seed", range(6))
def test_merge_equals_adding_one_by_one(seed: int) -> None:
    reports = _reports(seed)
    agg = Aggregator()
    for worker_id, report in reports:
        agg.add_report(worker_id, report, report.SerializeToString())
    _assert_same(agg, _reference(reports))
    # Without the serialized form (it serializes the report itself): the same.
    again = Aggregator()
    for worker_id, report in reports:
        again.add_report(worker_id, report)
    assert again.result() == agg.result() and again.progress() == agg.progress()
    assert agg.completed_by_worker() == {f"w{w}": 10 for w in range(4)}


def test_latency_deltas_at_scale_shape() -> None:
    # The benchmark's shape (50 keys x 2,000 latencies), a few workers: the common path.
    rng = np.random.default_rng(42)
    reports = []
    for w in range(3):
        metrics = []
        for k in range(50):
            hist, service = Histogram(), Histogram()
            values = rng.lognormal(np.log(2_000), 0.6, 2_000).astype(np.int64)
            hist.record_many(values)
            service.record_many(values // 2)
            metrics.append(
                worker_pb2.MetricDelta(
                    key=f"k{k}",
                    hdr=hist.encode_delta(),
                    service_hdr=service.encode_delta(),
                    count=2_000,
                    errors_by_kind={"http_5xx": 4},
                )
            )
        reports.append((f"w{w}", worker_pb2.WorkerReport(sequence=1, metrics=metrics)))
    agg = Aggregator()
    for worker_id, report in reports:
        agg.add_report(worker_id, report)
    _assert_same(agg, _reference(reports))


def test_encodings_give_the_same_result() -> None:
    # Same seed, so the same values: only the histograms' encoding differs.
    results = []
    for form in (*FORMS, None):
        agg = Aggregator()
        for worker_id, report in _reports(seed=3, form=form):
            agg.add_report(worker_id, report)
        results.append(agg.result())
    assert all(r == results[0] for r in results)
    # What users get is the standard compressed V2 encoding.
    assert all(m.hdr[:4] == b"\x1c\x84\x93\x14" for m in results[0].metrics)
    reference = _reference(_reports(seed=3))
    for m in results[0].metrics:
        assert _state(Histogram.decode(m.hdr)) == _state(reference[m.key].hist)


def test_base64_histograms_are_read_too() -> None:
    # Only decode reads base64: the merge falls back to it, with the same all-or-nothing rule.
    rng = np.random.default_rng(8)
    plain = worker_pb2.WorkerReport(metrics=[_delta(rng, "k", "compressed")])
    text = worker_pb2.WorkerReport()
    text.CopyFrom(plain)
    text.metrics[0].hdr = base64.b64encode(plain.metrics[0].hdr)
    a, b = Aggregator(), Aggregator()
    a.add_report("w", plain)
    b.add_report("w", text)
    assert a.result() == b.result()
    bad = worker_pb2.WorkerReport()
    bad.CopyFrom(text)
    bad.metrics.add(key="k2", hdr=Histogram().encode_delta()[:-1])
    with pytest.raises(ValueError):
        b.add_report("w", bad)
    assert b.result() == a.result()


def _corruptions(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """(what decode's ValueError says, a bad histogram)."""
    good = _hist(rng, 300)
    delta = good.encode_delta()
    compressed = good.encode()
    other_layout = Histogram(1, 10**6, 2)
    other_layout.record(5)
    return [
        ("length", delta[:-1]),
        ("add up", delta[:24] + (good.total_count + 1).to_bytes(8, "big") + delta[32:]),
        ("truncated", delta[:30]),
        ("announces", compressed[:-3]),
        ("length", good.encode(compressed=False)[:-1]),
        ("different layouts", other_layout.encode_delta()),
        ("different layouts", other_layout.encode()),
        ("bad cookie", b"garbage!"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_histogram_merges_nothing_of_the_report(case: int) -> None:
    rng = np.random.default_rng(100 + case)
    agg = Aggregator()
    first = _reports(seed=case, workers=2, intervals=1)
    for worker_id, report in first:
        agg.add_report(worker_id, report)
    before = agg.result()
    progress = agg.progress()
    message, broken = _corruptions(rng)[case]
    bad = worker_pb2.WorkerReport(
        sequence=2,
        sessions_completed=99,
        metrics=[_delta(rng, key, None) for key in [*KEYS, "a key only this report has"]],
    )
    # The bad histogram late in the report, after others were added: all are taken back.
    target = bad.metrics[int(rng.integers(len(bad.metrics) // 2, len(bad.metrics)))]
    if case % 2:
        target.hdr = broken
    else:
        target.service_hdr = broken
    with pytest.raises(ValueError, match=message) as info:
        agg.add_report("w0", bad)
    assert repr(target.key) in str(info.value)
    assert agg.result() == before and agg.progress() == progress
    assert "a key only this report has" not in [m.key for m in agg.result().metrics]
    # And the aggregator still merges exactly afterwards.
    later = _reports(seed=50 + case, workers=2, intervals=1)
    for worker_id, report in later:
        agg.add_report(worker_id, report)
    _assert_same(agg, _reference(first + later))


def test_total_overflow_merges_nothing() -> None:
    huge = Histogram()
    huge.record(10, 2**62 - 1)
    agg = Aggregator()
    report = worker_pb2.WorkerReport(metrics=[worker_pb2.MetricDelta(key="k", hdr=huge.encode())])
    agg.add_report("w", report)
    agg.add_report("w", report)
    before = agg.result()
    more = worker_pb2.WorkerReport(
        metrics=[
            worker_pb2.MetricDelta(key="j", hdr=huge.encode_delta()),
            worker_pb2.MetricDelta(key="k", hdr=huge.encode_delta()),
        ]
    )
    with pytest.raises(ValueError, match="overflow"):
        agg.add_report("w", more)
    assert agg.result() == before


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_wire_format_corner_cases_as_the_protobuf_runtime_reads_them() -> None:
    # Unknown fields (each wire type), a field sent with another wire type (unknown to the
    # runtime), singular fields repeated (the last wins), a map kind twice in one metric (the
    # last wins): the merge reads exactly what WorkerReport.FromString reads.
    h1, h2 = Histogram(), Histogram()
    h1.record(100)
    h2.record(200, 3)
    entry = _len_field(1, b"timeout") + _varint(2 << 3) + _varint(5)
    entry_again = _len_field(1, b"timeout") + _varint(2 << 3) + _varint(7)
    metric = b"".join(
        [
            _len_field(1, b"first key"),
            _len_field(1, b"k"),  # the last key wins
            _len_field(2, h1.encode_delta()),
            _len_field(2, h2.encode_delta()),  # the last histogram wins
            _varint(3 << 3) + _varint(4),
            _len_field(3, b"\x09"),  # count as bytes: an unknown field, ignored
            _varint(4 << 3) + _varint(2**64 - 1),  # errors = -1, as int64
            _len_field(5, entry),
            _len_field(5, entry_again),
            _len_field(5, _len_field(1, b"refused")),  # no value: 0
            _varint(99 << 3) + _varint(12345),
            _varint(98 << 3 | 1) + b"8 bytes!",
            _varint(97 << 3 | 5) + b"4 by",
            _len_field(96, b"whatever"),
        ]
    )
    blob = _len_field(3, metric) + _varint(100 << 3) + _varint(1) + _len_field(3, metric)
    parsed = worker_pb2.WorkerReport.FromString(blob)
    assert [m.key for m in parsed.metrics] == ["k", "k"]
    assert dict(parsed.metrics[0].errors_by_kind) == {"timeout": 7, "refused": 0}
    agg = Aggregator()
    agg.add_report("w", parsed, blob)
    reference = _reference([("w", parsed)])
    _assert_same(agg, reference)
    assert reference["k"].hist.total_count == 6 and reference["k"].errors == -2


@pytest.mark.parametrize(
    "blob",
    [
        b"\x1a\x05abc",  # a metric longer than the report
        b"\x1a\x03\x0a\x05a",  # a key longer than its metric
        b"\x1a\x02\x0a",  # a truncated tag
        b"\x00\x01",  # field number 0
        b"\x1b\x1c",  # a group (proto3 never writes one)
        b"\x1a\x01\xff",  # a truncated varint
        b"\x1a\x03\x0a\x01\xff",  # a key that is not UTF-8
        b"\x1a\x07\x2a\x05\x0a\x01\xfe\x10\x01",  # an error kind that is not UTF-8
        b"\x1a\x04\x2a\x02\x0a\x05",  # a malformed map entry
    ],
)
def test_malformed_report_merges_nothing(blob: bytes) -> None:
    agg = Aggregator()
    for worker_id, report in _reports(seed=1, workers=1, intervals=1):
        agg.add_report(worker_id, report)
    before = agg.result()
    good = worker_pb2.WorkerReport(metrics=[worker_pb2.MetricDelta(key="new", count=3)])
    with pytest.raises(ValueError):
        agg.add_report("w0", worker_pb2.WorkerReport(), good.SerializeToString() + blob)
    assert agg.result() == before


def test_mutated_reports_merge_whole_or_not_at_all() -> None:
    # Random damage to a serialized report: either the merge refuses it and nothing changes,
    # or what it merged is what the protobuf runtime reads from the same bytes.
    rng = np.random.default_rng(77)
    (_, base), *_ = _reports(seed=77, workers=1, intervals=1, form="delta")
    blob = base.SerializeToString()
    for _ in range(300):
        mutated = bytearray(blob)
        at = int(rng.integers(0, len(mutated)))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            mutated[at] ^= int(rng.integers(1, 256))
        elif kind == 1:
            del mutated[at:]
        else:
            del mutated[at : at + int(rng.integers(1, 9))]
        agg = Aggregator()
        try:
            agg.add_report("w", worker_pb2.WorkerReport(), bytes(mutated))
        except ValueError:
            assert agg.result().metrics == []
            continue
        try:
            parsed = worker_pb2.WorkerReport.FromString(bytes(mutated))
        except Exception:  # noqa: BLE001 - e.g. bad UTF-8 in a field the merge does not read
            continue
        _assert_same(agg, _reference([("w", parsed)]))


def test_empty_deltas_and_missing_histograms() -> None:
    agg = Aggregator()
    report = worker_pb2.WorkerReport(
        sequence=1,
        metrics=[
            worker_pb2.MetricDelta(key="a", hdr=Histogram().encode_delta(), count=0),
            worker_pb2.MetricDelta(key="b", count=0, errors=2, errors_by_kind={"timeout": 2}),
            worker_pb2.MetricDelta(key="c", hdr=Histogram().encode(), count=0),
        ],
    )
    agg.add_report("w", report)
    res = agg.result()
    assert [(m.key, m.count, m.errors, len(m.percentiles)) for m in res.metrics] == [
        ("a", 0, 0, 0),
        ("b", 0, 2, 0),
        ("c", 0, 0, 0),
    ]
    assert all(Histogram.decode(m.hdr).total_count == 0 for m in res.metrics)


def test_concurrent_streams_merge_exactly() -> None:
    # One thread per worker stream, as the scheduler runs them.
    reports = _reports(seed=9, workers=8, intervals=4)
    by_worker: dict[str, list[worker_pb2.WorkerReport]] = {}
    for worker_id, report in reports:
        by_worker.setdefault(worker_id, []).append(report)
    agg = Aggregator()
    start = threading.Barrier(len(by_worker))

    def stream(worker_id: str) -> None:
        start.wait()
        for report in by_worker[worker_id]:
            agg.add_report(worker_id, report, report.SerializeToString())

    threads = [threading.Thread(target=stream, args=(w,)) for w in by_worker]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _assert_same(agg, _reference(reports))


def test_delta_merger_arguments() -> None:
    with pytest.raises(ValueError, match="field numbers"):
        DeltaMerger(**{**_FIELDS, "key": 0})
    with pytest.raises(ValueError, match="layout"):
        DeltaMerger(**_FIELDS, lowest=0)
    merger = DeltaMerger(**_FIELDS, highest=10**6, significant_figures=2)
    h = Histogram(1, 10**6, 2)
    h.record(77)
    report = worker_pb2.WorkerReport(metrics=[worker_pb2.MetricDelta(key="k", hdr=h.encode())])
    assert merger.merge(report.SerializeToString()) == 1 and len(merger) == 1
    (totals,) = merger.totals()
    assert totals.key == "k" and totals.hist.total_count == 1 and totals.hist.highest == 10**6
    with pytest.raises(TypeError):
        merger.merge(bytearray(report.SerializeToString()))  # type: ignore[arg-type]
