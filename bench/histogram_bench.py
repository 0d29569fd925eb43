"""Benchmark of _fastpath.histogram, with hdrh (the PyPI reference) from the same run.

    python bench/histogram_bench.py [--values 10000000]

Prints ns per recorded value for ``record_many`` and for a loop of single C-level
``hdr_core_record`` calls (the engine's path: a Cython module compiled here on the fly that
``cimport``s the histogram, as engine.pyx does), then merge, encode and decode times. Target:
< 20 ns per value. Values are log-normal latencies in microseconds (median ~8 ms, long tail to
the 1 h clamp), so the counts array is touched all over as in a real run.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _fastpath.histogram import Histogram  # noqa: E402

HIGHEST_US = 3_600_000_000

# The engine's recording path: cimported core, inline record, no GIL.
_PROBE_PYX = """\
# cython: language_level=3, boundscheck=False, wraparound=False
from libc.stdint cimport int64_t
from _fastpath.histogram cimport Histogram, hdr_core_add, hdr_core_record


def record_each(Histogram h, const int64_t[::1] values):
    cdef Py_ssize_t i
    with nogil:
        for i in range(values.shape[0]):
            hdr_core_record(&h.core, values[i])


def add_core(Histogram dst, Histogram src, int times):
    cdef int i
    with nogil:
        for i in range(times):
            hdr_core_add(&dst.core, &src.core)
"""


def _best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest wall time of ``repeats`` runs, in seconds (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _build_probe() -> ModuleType | None:
    """Compile _PROBE_PYX against the built histogram.pxd; None if no compiler is at hand."""
    try:
        import pyximport
    except ImportError:
        return None
    workdir = tempfile.mkdtemp(prefix="chaperon-hbench-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # the loaded .so stays mapped
    with open(os.path.join(workdir, "_histogram_probe.pyx"), "w") as f:
        f.write(_PROBE_PYX)
    sys.path.insert(0, workdir)
    importers = pyximport.install(build_dir=os.path.join(workdir, "build"), language_level=3)
    try:
        import _histogram_probe

        return _histogram_probe
    except Exception as e:  # a missing compiler shows up as several exception types
        print(f"(C-level loop skipped: cannot build the probe: {type(e).__name__})")
        return None
    finally:
        pyximport.uninstall(*importers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = args.values

    rng = np.random.default_rng(42)
    values = rng.lognormal(mean=9.0, sigma=1.5, size=n).astype(np.int64)
    np.clip(values, 0, HIGHEST_US, out=values)
    print(f"{n:,} log-normal latencies (us), best of {args.repeats}")

    h = Histogram()
    t = _best_of(args.repeats, lambda: (h.reset(), h.record_many(values)))
    print(f"record_many                      {t / n * 1e9:8.2f} ns/value")

    probe = _build_probe()
    if probe is not None:
        t = _best_of(args.repeats, lambda: (h.reset(), probe.record_each(h, values)))
        print(f"hdr_core_record loop (C, nogil)  {t / n * 1e9:8.2f} ns/value")

    a, b = Histogram(), Histogram()
    a.record_many(values[: n // 2])
    b.record_many(values[n // 2 :])
    merges = 1000
    t = _best_of(args.repeats, lambda: [a.add(b) for _ in range(merges)])
    print(f"add (merge, {a._counts().buffer_info()[1]:,} slots)       {t / merges * 1e6:8.2f} us")
    if probe is not None:
        t = _best_of(args.repeats, lambda: probe.add_core(a, b, merges))
        print(f"hdr_core_add (C, nogil)          {t / merges * 1e6:8.2f} us")

    h.reset()
    h.record_many(values)
    encoded = h.encode()
    t_enc = _best_of(args.repeats, h.encode)
    t_dec = _best_of(args.repeats, lambda: Histogram.decode(encoded))
    print(f"encode ({len(encoded):,} bytes)            {t_enc * 1e6:8.1f} us")
    print(f"decode                           {t_dec * 1e6:8.1f} us")
    t = _best_of(args.repeats, lambda: h.percentiles([50, 90, 99, 99.9, 99.99]))
    print(f"percentiles (5 at once)          {t * 1e6:8.1f} us")

    _reference(values, encoded)


def _reference(values: np.ndarray, encoded: bytes) -> None:
    """The same operations in hdrh, on a sample (it records in Python)."""
    try:
        from hdrh.histogram import HdrHistogram
    except ImportError:
        print("(hdrh not installed: no reference figures)")
        return
    sample = values[:200_000].tolist()
    ref = HdrHistogram(1, HIGHEST_US, 3)
    t = _best_of(1, lambda: [ref.record_value(v) for v in sample])
    print(f"hdrh record_value (reference)    {t / len(sample) * 1e9:8.2f} ns/value")
    other = HdrHistogram.decode(base64.b64encode(encoded))
    t = _best_of(3, lambda: ref.add(other))
    print(f"hdrh add (reference)             {t * 1e6:8.2f} us")
    t = _best_of(3, other.encode)
    print(f"hdrh encode (reference, base64)  {t * 1e6:8.1f} us")
    b64 = base64.b64encode(encoded)
    t = _best_of(3, lambda: HdrHistogram.decode(b64))
    print(f"hdrh decode (reference, base64)  {t * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
