"""Soak: a real master and two workers under a fixed open-model rate for half an hour (issue 12).

    python bench/soak.py                                # 30 minutes, 60 s runs, 200 arrivals/s
    python bench/soak.py --minutes 3                    # the short form
    python bench/soak.py --minutes 3 --run-seconds 10 --keep-runs 2   # retention: bounded

What runs: a target on loopback (nginx, access log off, as the other benchmarks; without nginx
the package's small asyncio target, ``python -m chaperon._target``), ``chaperon master --db
WORK/master.db`` and two ``chaperon worker --threads 1``, every one a real process. The
script submits open-model runs of ``--run-seconds`` at ``--rate`` arrivals per second (one
``GET /`` per session) back to back: it keeps one run queued behind the running one, so the
next starts as soon as the last ends, until ``--minutes`` have passed.

Why many consecutive runs rather than one long one: the state a long run grows (its merged
histograms, its deltas) is bounded by its metric keys, and the per-second deltas are written
either way. What consecutive runs add is everything made and dropped per run: each run's
controller, aggregator, assignment streams and gRPC calls on the master, each assignment's
compiled plan, engine, sessions and sockets on a worker, and each run's stored result. A leak
in any of those shows as RSS that climbs run after run; the database grows by deltas and by
results alike. One-minute runs give one run per minute of soak.

Printed every ``--sample-s`` (default 60 s): the RSS of the master and of each worker
(``VmRSS`` in ``/proc/PID/status``), the database: its file and WAL sizes and its used bytes
(``(page_count - freelist_count) * page_size``, read through a read-only connection, so a WAL
not yet checkpointed counts too), and the run-minutes done (the sum of finished runs'
``finished_at - started_at`` and the running one's time so far), runs finished and requests.

At the end, two checks, each PASS or FAIL (the exit status is 1 if one fails):

- **RSS**: each process's RSS at the end is within 10% of its RSS at the first minute's
  sample (start-up and the first run's allocations are over by then);
- **database**: without retention, it grows linearly with the run-minutes: the least-squares
  line through (run-minutes, used bytes) from the first minute on has R^2 >= 0.98, and every
  interval's growth per run-minute is within 25% of the median. The slope is the figure
  printed as **bytes per run-minute**. With ``--keep-runs N`` the check is instead that the
  database stays bounded: once N + 1 runs have finished, the used bytes of the later half of
  the samples peak no higher than those of the earlier half (+ 15%), where a database that
  kept every run would have grown by half again or more. Use runs shorter than the sample
  interval for this (``--run-seconds 10 --sample-s 20``) so that many runs come and go.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import ROOT  # puts tests/ (support) and the repo root on sys.path
from support.nginx import nginx_binary
from support.ports import LOOPBACK, address, free_port
from support.procs import (
    ManagedProcess,
    chaperon_command,
    python_env,
    running,
    wait_for_health,
)

RSS_GROWTH_LIMIT = 0.10
LINEAR_R2_MIN = 0.98
LINEAR_SPREAD = 0.25
BOUNDED_SLACK = 0.15
READY_TIMEOUT_S = 30.0


@dataclass
class Sample:
    elapsed_s: float
    rss_kb: dict[str, int]
    db_bytes: int
    wal_bytes: int
    used_bytes: int
    run_minutes: float
    runs_finished: int
    requests: int
    errors: int


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def used_bytes(db_path: Path) -> int:
    """Bytes of the pages the database uses (free pages left out), WAL included."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)
    finally:
        db.close()


def file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@contextmanager
def target(work: Path) -> Iterator[tuple[str, str]]:
    """(base URL, what it is): nginx when installed, else the package's asyncio target."""
    if nginx_binary() is not None:
        from _common import nginx_target

        with nginx_target(work) as nginx:
            yield nginx.base_url, "nginx"
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaperon._target", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise SystemExit(f"the Python target did not start: {line!r}")
        yield "http://" + line.removeprefix("listening on "), "python -m chaperon._target"
    finally:
        proc.terminate()
        proc.wait(10)


def start_master(stack: ExitStack, work: Path, keep_runs: int | None) -> tuple[ManagedProcess, str]:
    """The master process and its address."""
    port = free_port()
    argv = [*chaperon_command(), "master", "--host", LOOPBACK, "--port", str(port)]
    argv += ["--db", str(work / "master.db")]
    if keep_runs is not None:
        argv += ["--keep-runs", str(keep_runs)]
    proc = ManagedProcess("master", argv, work, env=python_env(), cwd=work)
    stack.enter_context(
        running(proc, lambda p: wait_for_health(address(port), READY_TIMEOUT_S, process=p))
    )
    return proc, address(port)


def start_worker(stack: ExitStack, work: Path, name: str, master: str) -> ManagedProcess:
    port = free_port()
    argv = [*chaperon_command(), "worker", "--master", master, "--host", LOOPBACK]
    argv += ["--port", str(port), "--threads", "1"]
    proc = ManagedProcess(name, argv, work, env=python_env(), cwd=work)
    stack.enter_context(
        running(proc, lambda p: wait_for_health(address(port), READY_TIMEOUT_S, process=p))
    )
    return proc


def load_test(base_url: str, rate: float, run_s: int):  # -> loadtest_pb2.LoadTest
    from chaperon.core.loadtest import load_test_from_dict

    return load_test_from_dict(
        {
            "name": "soak",
            "config": {"base_url": base_url},
            "scenarios": [
                {
                    "arrival_rate": {"per_second": rate},
                    "duration": f"{run_s}s",
                    "scenario": {"name": "get", "run": [{"http": {"method": "GET", "path": "/"}}]},
                }
            ],
        }
    )


class RunTracker:
    """The figures of the runs this script submitted, kept as they end (the master may
    delete a finished run with --keep-runs, but never before the next one has ended, and
    the runs not yet seen to end are looked at every half second)."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.started_s: dict[str, float] = {}
        self.finished_minutes = 0.0
        self.finished = self.requests = self.errors = 0

    def poll(self, client) -> None:  # noqa: ANN001 - chaperon.Client
        import grpc

        from chaperon.v1 import results_pb2

        for run_id in list(self.pending):
            try:
                run = client.get(run_id)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                raise SystemExit(f"{run_id} was deleted before this script saw it end") from None
            if run.HasField("started_at"):
                self.started_s[run_id] = run.started_at.ToNanoseconds() / 1e9
            if run.state in (results_pb2.SCHEDULED, results_pb2.RUNNING):
                continue
            self.pending.remove(run_id)
            self.finished += 1
            if run_id in self.started_s:
                started_s = self.started_s.pop(run_id)
                self.finished_minutes += (run.finished_at.ToNanoseconds() / 1e9 - started_s) / 60
            for m in run.result.metrics:
                self.requests += m.count
                self.errors += m.errors

    def run_minutes(self) -> float:
        """Minutes of finished runs plus the time so far of the running one."""
        now_s = time.time()
        return self.finished_minutes + sum((now_s - s) / 60 for s in self.started_s.values())


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """(slope, intercept, R^2) of the line through the points."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else 0.0
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, intercept, 1 - ss_res / ss_tot if ss_tot else 1.0


def print_sample(s: Sample, names: list[str], header: bool) -> None:
    if header:
        cols = "".join(f"{n + ' MB':>12}" for n in names)
        print(
            f"{'min':>5}{cols}{'db MB':>9}{'wal MB':>9}{'used MB':>9}"
            f"{'run-min':>9}{'runs':>6}{'requests':>11}{'errors':>8}"
        )
    cols = "".join(f"{s.rss_kb[n] / 1024:12.1f}" for n in names)
    print(
        f"{s.elapsed_s / 60:5.1f}{cols}{s.db_bytes / 2**20:9.2f}{s.wal_bytes / 2**20:9.2f}"
        f"{s.used_bytes / 2**20:9.2f}{s.run_minutes:9.2f}{s.runs_finished:6d}"
        f"{s.requests:11,d}{s.errors:8d}",
        flush=True,
    )


def check_rss(samples: list[Sample], names: list[str], first: int) -> bool:
    ok = True
    for name in names:
        base, last = samples[first].rss_kb[name], samples[-1].rss_kb[name]
        peak = max(s.rss_kb[name] for s in samples[first:])
        growth = (last - base) / base
        verdict = "PASS" if growth < RSS_GROWTH_LIMIT else "FAIL"
        ok &= verdict == "PASS"
        print(
            f"  RSS {name:<8} {base / 1024:7.1f} MB at minute "
            f"{samples[first].elapsed_s / 60:.1f} -> {last / 1024:7.1f} MB at the end "
            f"(peak {peak / 1024:.1f}): {growth:+.1%}  {verdict} (< {RSS_GROWTH_LIMIT:.0%})"
        )
    return ok


def check_linear(samples: list[Sample], first: int) -> bool:
    points = samples[first:]
    xs = [s.run_minutes for s in points]
    ys = [float(s.used_bytes) for s in points]
    slope, _, r2 = least_squares(xs, ys)
    rates = [
        (b.used_bytes - a.used_bytes) / (b.run_minutes - a.run_minutes)
        for a, b in zip(points, points[1:], strict=False)
        if b.run_minutes > a.run_minutes
    ]
    median = statistics.median(rates) if rates else 0.0
    spread = max((abs(r - median) / median for r in rates), default=0.0) if median else 1.0
    ok = r2 >= LINEAR_R2_MIN and spread <= LINEAR_SPREAD
    print(
        f"  database: {slope:,.0f} bytes per run-minute (least squares over "
        f"{len(points)} samples, R^2 {r2:.4f}); per interval "
        f"{', '.join(f'{r / 1024:.0f}' for r in rates)} KiB/run-minute, at most "
        f"{spread:.0%} from the median  {'PASS' if ok else 'FAIL'} "
        f"(R^2 >= {LINEAR_R2_MIN}, within {LINEAR_SPREAD:.0%})"
    )
    return ok


def check_bounded(samples: list[Sample], keep_runs: int) -> bool:
    """Once N + 1 runs have finished (the retention deletes from then on), the used bytes of
    the second half of the samples peak no higher than those of the first half (+ 15%)."""
    later = [s for s in samples if s.runs_finished > keep_runs + 1]
    if len(later) < 4:
        print(
            f"  database with --keep-runs {keep_runs}: {len(later)} samples after run "
            f"{keep_runs + 1} ended; 4 needed (shorter --run-seconds or --sample-s)  FAIL"
        )
        return False
    half = len(later) // 2
    first_peak = max(s.used_bytes for s in later[:half])
    second_peak = max(s.used_bytes for s in later[half:])
    ok = second_peak <= first_peak * (1 + BOUNDED_SLACK)
    print(
        f"  database with --keep-runs {keep_runs}: {later[-1].runs_finished} runs finished "
        f"({later[-1].run_minutes:.1f} run-minutes); once they were deleted the used size "
        f"peaked at {first_peak / 2**20:.2f} MB, then at {second_peak / 2**20:.2f} MB; "
        f"the file {later[-1].db_bytes / 2**20:.2f} MB (+ {later[-1].wal_bytes / 2**20:.2f} MB "
        f"WAL) at the end  {'PASS' if ok else 'FAIL'} (within {BOUNDED_SLACK:.0%})"
    )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    ap.add_argument("--rate", type=float, default=200.0, help="arrivals per second")
    ap.add_argument("--run-seconds", type=int, default=60, help="length of each run")
    ap.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--keep-runs", type=int, help="start the master with --keep-runs N")
    ap.add_argument("--work-dir", type=Path, help="keep the database and logs here")
    args = ap.parse_args()
    names = ["master", "worker1", "worker2"]

    from chaperon.client import Client

    with ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        base_url, target_name = stack.enter_context(target(work))
        master, master_address = start_master(stack, work, args.keep_runs)
        procs = {
            "master": master,
            "worker1": start_worker(stack, work, "worker1", master_address),
            "worker2": start_worker(stack, work, "worker2", master_address),
        }
        client = stack.enter_context(Client(master_address))
        deadline = time.monotonic() + 30
        while len(client.workers()) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not register within 30 s")
            time.sleep(0.1)
        db_path = work / "master.db"
        retention = f", --keep-runs {args.keep_runs}" if args.keep_runs else ""
        print(
            f"soak: {args.minutes:g} min; runs of {args.run_seconds} s back to back, "
            f"{args.rate:g} arrivals/s (open model, GET /), target {target_name} at {base_url}; "
            f"master + 2 workers (1 engine thread each) on loopback{retention}; work dir {work}",
            flush=True,
        )
        lt = load_test(base_url, args.rate, args.run_seconds)
        samples: list[Sample] = []
        tracker = RunTracker()
        started = time.monotonic()
        end = started + args.minutes * 60
        next_sample = started
        while True:
            now = time.monotonic()
            for name, proc in procs.items():
                if not proc.is_running():
                    raise SystemExit(f"{name} exited:\n{proc.describe()}")
            tracker.poll(client)
            if now >= next_sample:
                samples.append(
                    Sample(
                        now - started,
                        {n: rss_kb(p.pid) for n, p in procs.items()},
                        file_bytes(db_path),
                        file_bytes(db_path.with_name("master.db-wal")),
                        used_bytes(db_path),
                        tracker.run_minutes(),
                        tracker.finished,
                        tracker.requests,
                        tracker.errors,
                    )
                )
                print_sample(samples[-1], names, header=len(samples) == 1)
                next_sample += args.sample_s
            if now >= end:
                break
            if now < end - 1 and client.server_info().queue_length == 0:
                tracker.pending.append(client.submit(lt).id)
            time.sleep(min(0.5, max(0.0, min(next_sample, end) - time.monotonic())))
        from chaperon.v1 import results_pb2

        for run in client.runs([results_pb2.SCHEDULED, results_pb2.RUNNING]):
            client.cancel(run.id)

    per_sample = round(60 / args.sample_s) if args.sample_s <= 60 else 1
    first = min(per_sample, len(samples) - 2)
    if first < 0 or len(samples) < 3:
        print("too few samples for the checks: run for at least 2 sample intervals")
        return 1
    print("checks (from the first minute's sample on):")
    ok = check_rss(samples, names, first)
    if args.keep_runs:
        ok &= check_bounded(samples, args.keep_runs)
    else:
        ok &= check_linear(samples, first)
    print(f"command: python {' '.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
