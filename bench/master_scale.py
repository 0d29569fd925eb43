"""Scale of the master: merging every worker's 1-second deltas (issue 7, "Scale of the master").

    python bench/master_scale.py                              # 100 and 1000 workers x 50 keys
    python bench/master_scale.py --skip-grpc --repeat 3       # pure merge only, 3 runs each
    python bench/master_scale.py --workers 300 --pure-workers '' --forms delta,uncompressed

Target: one report interval of 1000 workers x 50 metric keys merged in < 250 ms on one core.

Every simulated report carries ``--keys`` MetricDeltas, each with ``hdr`` and ``service_hdr``
holding ``--values-per-key`` log-normal latencies (median 2 ms, sigma 0.6: ~1,450 non-zero
slots each), ``count``, ``errors`` and one ``errors_by_kind`` entry. ``--forms`` says how the
histograms are encoded: ``delta`` (``Histogram.encode_delta()``, what workers send),
``uncompressed`` (``encode(compressed=False)``, what they sent before) or ``compressed``
(``encode()``, V2 as users get it). Both parts below run for each form.

1. **Pure merge** (no gRPC), pinned to one CPU: ``--variants`` different precomputed reports
   (parsed, as gRPC hands them to the scheduler), every worker's in turn, ``--intervals``
   intervals, each report handled as a scheduler stream thread does: ``SerializeToString()`` (the
   bytes the store keeps), then ``Aggregator.add_report(worker, report, serialized)``. Each
   call is timed on its own (thread CPU time); "merge ms" is the sum of the ``add_report``
   calls of one interval, "serialize" that of the serializations. Beside them, per interval:
   gRPC's parsing of the messages (``FromString``) and the SQLite ``add_delta`` inserts (wall
   time). ``--repeat`` runs it again in a fresh aggregator; the median run is printed.
2. **Through gRPC**: a real master (``start_master``, in this process, SQLite on a temp file)
   and ``--procs`` processes of fake workers: each process runs one grpc.aio server listening
   on many ports, one per registered worker (the master keys workers by address), each
   registered with ``RegisterWorker`` and heartbeating every second as a worker does. Their
   ``RunAssignment`` streams a precomputed report (as serialized bytes) every report interval
   and a final one; nothing is ever sent to the load test's target (http://127.0.0.1:9). One
   closed-model load test (concurrency = workers) is submitted; the benchmark wraps
   ``Aggregator.add_report`` and ``SqliteStore.add_delta`` (no product code changed) to time
   each call's CPU (thread time) by report sequence, and reads the master process's CPU time
   (getrusage: the master's every thread, gRPC's included) and RSS (/proc/self/status) over the
   run. The fake workers share the 2 CPUs with the master, so this part measures what the
   machine allows, not the master alone.

``--malloc-top-pad-mib N`` sets glibc's ``M_TOP_PAD`` in this process (the master's, in part
2) before anything runs: with the default, every ~150 KB report the master serializes (and
receives) lands in memory glibc has just returned to the kernel, and page faults make
``SerializeToString`` ~10x slower. 0 (the default) leaves glibc as the master runs today.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# gRPC logs every connection the master's shutdown closes; the spawned workers inherit this.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from _fastpath.histogram import Histogram  # noqa: E402
from chaperon.v1 import worker_pb2  # noqa: E402

MEDIAN_US = 2_000
SIGMA = 0.6


FORMS = ("delta", "uncompressed", "compressed")


def _encode(hist: Histogram, form: str) -> bytes:
    if form == "delta":
        return hist.encode_delta()
    return hist.encode(form == "compressed")


def make_report(keys: int, values_per_key: int, seed: int, form: str) -> worker_pb2.WorkerReport:
    """One worker's 1-second delta: every key with its latency and service-time histograms."""
    rng = np.random.default_rng(seed)
    metrics = []
    for k in range(keys):
        latency_us = rng.lognormal(np.log(MEDIAN_US), SIGMA, values_per_key).astype(np.int64)
        hist, service = Histogram(), Histogram()
        hist.record_many(latency_us)
        service.record_many((latency_us * 0.9).astype(np.int64))
        metrics.append(
            worker_pb2.MetricDelta(
                key=f"GET /api/item/{k}",
                hdr=_encode(hist, form),
                service_hdr=_encode(service, form),
                count=values_per_key,
                errors=values_per_key // 500,
                errors_by_kind={"http_5xx": values_per_key // 500},
            )
        )
    return worker_pb2.WorkerReport(metrics=metrics, sessions_started=1)


def _rss_mib() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(rest.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --- 1. pure merge --------------------------------------------------------------------------


def pure_merge(
    workers: int, keys: int, values: int, intervals: int, variants: int, cpu: int, form: str
) -> dict[str, Any]:
    from chaperon.v1 import results_pb2
    from master_service.aggregator import Aggregator
    from master_service.store import SqliteStore

    reports = [make_report(keys, values, seed, form) for seed in range(variants)]
    blobs = [r.SerializeToString() for r in reports]
    parsed = [worker_pb2.WorkerReport.FromString(b) for b in blobs]
    encoded_bytes = sum(len(m.hdr) + len(m.service_hdr) for m in reports[0].metrics)
    os.sched_setaffinity(0, {cpu})
    try:
        agg = Aggregator()
        per_interval, serialize_per_interval = [], []
        for seq in range(intervals):
            merge_s = serialize_s = 0.0
            for w in range(workers):
                v = (w + seq) % variants
                # As a scheduler stream thread does: serialize the parsed report (for the
                # store), then merge those bytes. Each call timed on its own (thread CPU time).
                t0 = time.thread_time()
                blob = parsed[v].SerializeToString()
                t1 = time.thread_time()
                agg.add_report(f"w{w}", parsed[v], blob)
                t2 = time.thread_time()
                serialize_s += t1 - t0
                merge_s += t2 - t1
            per_interval.append(merge_s)
            serialize_per_interval.append(serialize_s)
        # Exact: every key holds intervals x workers deltas of `values` values.
        for m in agg.result().metrics:
            assert m.count == intervals * workers * values, (m.key, m.count)
        t0 = time.thread_time()
        for w in range(workers):
            worker_pb2.WorkerReport.FromString(blobs[w % variants])
        parse_s = time.thread_time() - t0
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteStore(os.path.join(tmp, "master.db"))
            # The store writes deltas only for a run it holds.
            store.put_run(results_pb2.LoadTestRun(id="run", state=results_pb2.RUNNING))
            t0 = time.perf_counter()
            for w in range(workers):
                store.add_delta("run", f"w{w}", 1, blobs[w % variants])
            sqlite_s = time.perf_counter() - t0
            store.close()
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {
        "merge_ms": [s * 1e3 for s in per_interval],
        "parse_ms": parse_s * 1e3,
        "serialize_ms": statistics.median(serialize_per_interval) * 1e3,
        "sqlite_ms": sqlite_s * 1e3,
        "report_kib": len(blobs[0]) / 1024,
        "hist_bytes": encoded_bytes / (2 * keys),
    }


# --- 2. through gRPC: fake workers -------------------------------------------------------------


def _fake_worker_process(
    master: str,
    count: int,
    keys: int,
    values: int,
    seed: int,
    form: str,
    ready: Any,
    stop: Any,
) -> None:
    """Host ``count`` fake workers (one port each) on one grpc.aio server and keep them
    registered until ``stop`` is set."""
    import grpc

    from chaperon.v1 import master_pb2, master_pb2_grpc

    base = make_report(keys, values, seed, form).SerializeToString()
    streaming: set[str] = set()

    async def run_assignment(
        request: worker_pb2.Assignment, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        interval_s = request.report_interval_s or 1.0
        lt = request.load_test.scenarios[0]
        duration_s = float(lt.duration.rstrip("s")) if lt.duration.endswith("s") else 3.0
        n = max(1, round(duration_s / interval_s))
        streaming.add(request.assignment_id)
        start = time.monotonic()
        try:
            for seq in range(1, n + 1):
                await asyncio.sleep(max(0.0, start + seq * interval_s - time.monotonic()))
                # A serialized message followed by another is their merge: the precomputed
                # metrics plus this report's own fields, with no re-encoding per report.
                tail = worker_pb2.WorkerReport(
                    assignment_id=request.assignment_id,
                    sequence=seq,
                    final=seq == n,
                    sessions_started=1,
                    sessions_completed=1 if seq == n else 0,
                    elapsed_s=seq * interval_s,
                )
                yield base + tail.SerializeToString()
        finally:
            streaming.discard(request.assignment_id)

    async def cancel_assignment(
        request: worker_pb2.CancelAssignmentRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.CancelAssignmentResponse:
        return worker_pb2.CancelAssignmentResponse(cancelled=False)

    async def get_status(
        request: worker_pb2.GetWorkerStatusRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.WorkerStatus:
        return worker_pb2.WorkerStatus(state=worker_pb2.WORKER_IDLE)

    handler = grpc.method_handlers_generic_handler(
        "chaperon.v1.Worker",
        {
            "RunAssignment": grpc.unary_stream_rpc_method_handler(
                run_assignment,
                request_deserializer=worker_pb2.Assignment.FromString,
                response_serializer=lambda b: b,
            ),
            "CancelAssignment": grpc.unary_unary_rpc_method_handler(
                cancel_assignment,
                request_deserializer=worker_pb2.CancelAssignmentRequest.FromString,
                response_serializer=worker_pb2.CancelAssignmentResponse.SerializeToString,
            ),
            "GetWorkerStatus": grpc.unary_unary_rpc_method_handler(
                get_status,
                request_deserializer=worker_pb2.GetWorkerStatusRequest.FromString,
                response_serializer=worker_pb2.WorkerStatus.SerializeToString,
            ),
        },
    )

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((handler,))
        ports = [server.add_insecure_port("127.0.0.1:0") for _ in range(count)]
        await server.start()
        async with grpc.aio.insecure_channel(master) as channel:
            stub = master_pb2_grpc.MasterStub(channel)
            ids = []
            for port in ports:
                resp = await stub.RegisterWorker(
                    master_pb2.RegisterWorkerRequest(address=f"127.0.0.1:{port}", capacity=1)
                )
                ids.append(resp.worker_id)
            ready.put(len(ids))

            async def beat(worker_id: str) -> None:
                await stub.Heartbeat(
                    master_pb2.HeartbeatRequest(
                        worker_id=worker_id,
                        state=worker_pb2.WORKER_BUSY if streaming else worker_pb2.WORKER_IDLE,
                    ),
                    timeout=5,
                )

            while not stop.is_set():
                tick = time.monotonic()
                await asyncio.gather(*(beat(w) for w in ids), return_exceptions=True)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        await server.stop(0)

    asyncio.run(main())


class _Timings:
    """Per-call CPU (thread time) of a wrapped method, grouped by report sequence."""

    def __init__(self) -> None:
        self.cpu_by_seq: dict[int, float] = defaultdict(float)
        self.calls_by_seq: dict[int, int] = defaultdict(int)
        self.wall_s = 0.0

    def wrap(self, method: Callable[..., Any], seq_of: Callable[..., int]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                cpu = time.thread_time() - c0
                self.wall_s += time.perf_counter() - w0
                seq = seq_of(args, kwargs)
                self.cpu_by_seq[seq] += cpu
                self.calls_by_seq[seq] += 1

        return timed


def through_grpc(
    workers: int, procs: int, keys: int, values: int, duration_s: float, form: str
) -> dict[str, Any]:
    import grpc

    from chaperon.core.loadtest import load_test_from_dict
    from chaperon.v1 import master_pb2, master_pb2_grpc, results_pb2
    from master_service import aggregator as aggregator_module
    from master_service import store as store_module
    from master_service.server import start_master

    merge, insert = _Timings(), _Timings()
    agg_cls, store_cls = aggregator_module.Aggregator, store_module.SqliteStore
    orig_add_report, orig_add_delta = agg_cls.add_report, store_cls.add_delta
    # (self, worker_id, report) and (self, run_id, worker_id, sequence, blob, ...)
    agg_cls.add_report = merge.wrap(  # type: ignore[method-assign]
        orig_add_report, lambda a, kw: (a[2] if len(a) > 2 else kw["report"]).sequence
    )
    store_cls.add_delta = insert.wrap(  # type: ignore[method-assign]
        orig_add_delta, lambda a, kw: a[3] if len(a) > 3 else kw["sequence"]
    )
    tmp = tempfile.TemporaryDirectory()
    master = start_master(port=0, db_path=os.path.join(tmp.name, "master.db"), worker_wait_s=30)
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    children = []
    try:
        t_setup = time.monotonic()
        shares = [workers // procs + (1 if i < workers % procs else 0) for i in range(procs)]
        for i, n in enumerate(shares):
            p = ctx.Process(
                target=_fake_worker_process,
                args=(master.address, n, keys, values, i, form, ready, stop),
                daemon=True,
            )
            p.start()
            children.append(p)
        registered = sum(ready.get(timeout=300) for _ in shares)
        setup_s = time.monotonic() - t_setup
        rss_before, _ = _rss_mib()
        channel = grpc.insecure_channel(master.address)
        stub = master_pb2_grpc.MasterStub(channel)
        lt = load_test_from_dict(
            {
                "name": f"master-scale-{workers}",
                "config": {"base_url": "http://127.0.0.1:9"},
                "scenarios": [
                    {
                        "concurrency": workers,
                        "duration": f"{duration_s:g}s",
                        "scenario": {
                            "name": "s",
                            "run": [{"http": {"method": "GET", "path": "/"}}],
                        },
                    }
                ],
            }
        )
        cpu0, wall0 = _cpu_s(), time.monotonic()
        threads0 = threading.active_count()
        peak_threads = threads0
        run = stub.SubmitLoadTest(master_pb2.SubmitLoadTestRequest(load_test=lt))
        while True:
            time.sleep(0.25)
            peak_threads = max(peak_threads, threading.active_count())
            run = stub.GetLoadTestRun(master_pb2.GetLoadTestRunRequest(id=run.id))
            if run.state not in (results_pb2.SCHEDULED, results_pb2.RUNNING):
                break
        run_wall_s = time.monotonic() - wall0
        run_cpu_s = _cpu_s() - cpu0
        rss, hwm = _rss_mib()
        channel.close()
        result = run.result
        return {
            "registered": registered,
            "setup_s": setup_s,
            "state": results_pb2.RunState.Name(run.state),
            "error": run.error,
            "workers_in_result": len(result.workers),
            "lost": len(result.lost_workers),
            "count": sum(m.count for m in result.metrics),
            "merge": merge,
            "insert": insert,
            "run_wall_s": run_wall_s,
            "run_cpu_s": run_cpu_s,
            "rss_before": rss_before,
            "rss": rss,
            "hwm": hwm,
            "peak_threads": peak_threads,
        }
    finally:
        stop.set()
        for p in children:
            p.join(10)
            if p.is_alive():
                p.kill()
        master.stop(1.0)
        tmp.cleanup()
        agg_cls.add_report, store_cls.add_delta = orig_add_report, orig_add_delta  # type: ignore[method-assign]


# --- report -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="100,1000", help="comma-separated gRPC runs")
    parser.add_argument("--pure-workers", default="100,1000")
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--values-per-key", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=4, help="fake-worker processes")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--intervals", type=int, default=3, help="pure-merge intervals")
    parser.add_argument(
        "--variants", type=int, default=32, help="different reports in the pure merge"
    )
    parser.add_argument("--repeat", type=int, default=3, help="pure-merge runs per row")
    parser.add_argument("--grpc-repeat", type=int, default=1, help="gRPC runs per row")
    parser.add_argument("--cpu", type=int, default=0, help="CPU the pure merge is pinned to")
    parser.add_argument("--skip-grpc", action="store_true")
    parser.add_argument(
        "--malloc-top-pad-mib", type=int, default=0, help="glibc M_TOP_PAD for this process"
    )
    parser.add_argument(
        "--forms",
        default="delta,uncompressed",
        help=f"comma-separated histogram encodings to measure, of {','.join(FORMS)}",
    )
    args = parser.parse_args()
    forms = [f for f in args.forms.split(",") if f]
    if not forms or any(f not in FORMS for f in forms):
        parser.error(f"--forms takes a comma-separated subset of {','.join(FORMS)}")
    if args.malloc_top_pad_mib:
        import ctypes

        m_top_pad = -2  # <malloc.h>
        ctypes.CDLL("libc.so.6").mallopt(m_top_pad, args.malloc_top_pad_mib << 20)
    print("command: python bench/master_scale.py " + " ".join(sys.argv[1:]))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{os.cpu_count()} CPUs; {args.keys} keys x (hdr + service_hdr) of "
        f"{args.values_per_key} log-normal latencies (median {MEDIAN_US} us, sigma {SIGMA})"
    )

    print(
        f"\n1. pure merge, pinned to CPU {args.cpu}: CPU ms per report interval "
        f"(median of {args.repeat} runs; each run's median of {args.intervals} intervals)"
    )
    print(
        f"{'form':>12} {'workers':>8} {'hist B':>7} {'report KiB':>10} {'merge ms':>9} "
        f"{'us/hist':>8} {'runs':>17} {'parse ms':>9} {'serialize':>9} {'sqlite ms':>10}"
    )
    for workers in [int(w) for w in args.pure_workers.split(",") if w]:
        for form in forms:
            runs = [
                pure_merge(
                    workers,
                    args.keys,
                    args.values_per_key,
                    args.intervals,
                    args.variants,
                    args.cpu,
                    form,
                )
                for _ in range(args.repeat)
            ]
            per_run = [statistics.median(r["merge_ms"]) for r in runs]
            merge_ms = statistics.median(per_run)
            r = runs[0]
            print(
                f"{form:>12} {workers:>8} {r['hist_bytes']:>7.0f} {r['report_kib']:>10.1f} "
                f"{merge_ms:>9.1f} {merge_ms * 1e3 / (workers * args.keys * 2):>8.2f} "
                f"{'/'.join(f'{m:.0f}' for m in per_run):>17} "
                f"{statistics.median(x['parse_ms'] for x in runs):>9.1f} "
                f"{statistics.median(x['serialize_ms'] for x in runs):>9.1f} "
                f"{statistics.median(x['sqlite_ms'] for x in runs):>10.1f}"
            )
    if args.skip_grpc:
        return

    print(
        f"\n2. through gRPC: master in this process, fake workers in {args.procs} processes on "
        f"the same CPUs, {args.duration_s:g} s closed-model run, report interval 1 s"
    )
    print(
        f"{'form':>12} {'workers':>8} {'state':>10} {'lost':>5} {'merge ms/interval (max)':>24} "
        f"{'sqlite ms/int':>13} {'master CPU s':>12} {'CPU/int':>7} {'run s':>6} "
        f"{'RSS MiB':>14} {'threads':>7}"
    )
    for workers in [int(w) for w in args.workers.split(",") if w]:
        for form in forms:
            for _ in range(args.grpc_repeat):
                try:
                    r = through_grpc(
                        workers,
                        args.procs,
                        args.keys,
                        args.values_per_key,
                        args.duration_s,
                        form,
                    )
                except Exception as exc:  # noqa: BLE001 - a scale that does not work is a result
                    print(f"{form:>12} {workers:>8} failed: {type(exc).__name__}: {exc}")
                    continue
                _print_grpc_row(form, workers, r, args.duration_s)


def _print_grpc_row(form: str, workers: int, r: dict[str, Any], duration_s: float) -> None:
    merge: _Timings = r["merge"]
    insert: _Timings = r["insert"]
    full = [s for s, n in merge.calls_by_seq.items() if n >= r["registered"] * 0.9]
    merge_ms = [merge.cpu_by_seq[s] * 1e3 for s in sorted(full)]
    insert_ms = [insert.cpu_by_seq[s] * 1e3 for s in sorted(full)]
    merge_text = f"{statistics.median(merge_ms):.0f} ({max(merge_ms):.0f})" if merge_ms else "n/a"
    if not merge_ms and merge.calls_by_seq:
        # Workers were lost (the machine could not keep up): per interval, for the reports
        # that did arrive, and per report.
        seqs = sorted(merge.calls_by_seq)
        ms = statistics.median(merge.cpu_by_seq[s] * 1e3 for s in seqs)
        calls = statistics.median(merge.calls_by_seq[s] for s in seqs)
        merge_text = f"{ms:.0f} for {calls:.0f} ({ms / calls * 1e3:.0f} us each)"
    insert_text = f"{statistics.median(insert_ms):.0f}" if insert_ms else "n/a"
    rss_text = f"{r['rss_before']:.0f}->{r['rss']:.0f}/{r['hwm']:.0f}"
    # The master's CPU over the whole run (start, streams, result) per report interval.
    cpu_per_interval_s = r["run_cpu_s"] / max(1.0, duration_s)
    print(
        f"{form:>12} {workers:>8} {r['state']:>10} {r['lost']:>5} {merge_text:>24} "
        f"{insert_text:>13} {r['run_cpu_s']:>12.1f} {cpu_per_interval_s:>7.2f} "
        f"{r['run_wall_s']:>6.1f} {rss_text:>14} {r['peak_threads']:>7}"
    )
    if r["error"]:
        print(f"{'':>21}error: {r['error'][:300]}")
    print(
        f"{'':>21}registered {r['registered']} in {r['setup_s']:.1f} s; reports merged per "
        f"sequence: {dict(sorted(merge.calls_by_seq.items()))}; values counted "
        f"{r['count']:,}; add_report wall total {merge.wall_s:.1f} s"
    )


if __name__ == "__main__":
    main()
