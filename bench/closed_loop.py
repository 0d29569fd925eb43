#!/usr/bin/env python3
"""Closed-model GET loop: Chaperon's engine (one thread) against wrk, in the same run.

Theory of operation: nginx (access log off) is pinned to CPU 0 with ``taskset``; each
generator is pinned to CPU 1 and runs 50 connections/sessions looping ``GET /`` for the
same time. The generators alternate, ``wrk`` then ``chaperon run``, for a number of rounds,
so drift of the machine hits both alike. For each run we take requests per second (wrk's
``Requests/sec``; ours is the ``GET /`` count over the run's ``duration_s``) and the CPU
time of the generator process (user + system, from ``os.wait4``'s rusage, which covers all
its threads). ``chaperon run`` is a whole Python process (master + worker + engine), so its
CPU time also includes start-up; a one-request run is measured once and its CPU time is
shown subtracted ("net") beside the gross figure.

The targets in DESIGN.md are ratios from one run: req/s >= 0.9 x wrk, CPU per request
<= 1.2 x wrk. This script prints them; it asserts nothing.

Usage: python bench/closed_loop.py [--duration-s 5] [--connections 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# _common first: it puts tests/ (support) and the repo root (chaperon) on sys.path.
from _common import nginx_target, pinned, require, run_measured, run_wrk
from support.procs import chaperon_command, python_env


@dataclass
class Sample:
    tool: str
    round_no: int
    requests: int
    duration_s: float
    cpu_s: float
    command: list[str]

    @property
    def rate_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.requests if self.requests else float("nan")


def wrk_sample(url: str, args: argparse.Namespace, work: Path, round_no: int) -> Sample:
    wrk = run_wrk(
        url,
        cpu=args.generator_cpu,
        connections=args.connections,
        duration_s=args.duration_s,
        stdout_path=work / f"wrk-{round_no}.txt",
    )
    # wrk's Requests/sec is requests over its measured duration; keep that exact figure.
    duration_s = wrk.requests / wrk.rate_per_s
    return Sample("wrk", round_no, wrk.requests, duration_s, wrk.cpu_s, wrk.argv)


def write_load_test(
    path: Path, base_url: str, sessions: int, duration: str | None, iterations: int | None = None
) -> None:
    entry: dict = {
        "concurrency": sessions,
        "scenario": {"name": "root", "run": [{"http": {"method": "GET", "path": "/"}}]},
    }
    if duration:
        entry["duration"] = duration
    if iterations:
        entry["iterations"] = iterations
    load_test = {"name": "closed-loop", "config": {"base_url": base_url}, "scenarios": [entry]}
    path.write_text(json.dumps(load_test, indent=2))


def run_chaperon(
    test_file: Path, args: argparse.Namespace, work: Path, label: str, round_no: int
) -> Sample:
    from google.protobuf import json_format

    from chaperon.v1 import results_pb2

    chaperon_run = [*chaperon_command(), "run", str(test_file), "--json", "--threads", "1"]
    argv = pinned(chaperon_run, args.generator_cpu)
    text, cpu_s = run_measured(argv, work / f"{label}-{round_no}.json", env=python_env())
    run = json_format.Parse(text, results_pb2.LoadTestRun())
    if run.state != results_pb2.SUCCEEDED:
        raise SystemExit(f"chaperon run ended {results_pb2.RunState.Name(run.state)}: {run.error}")
    [metric] = [m for m in run.result.metrics if m.key == "GET /"]
    if metric.errors:
        print(f"warning: {metric.errors} errors {dict(metric.errors_by_kind)}", file=sys.stderr)
    duration_s = run.result.duration_s
    if not duration_s:
        started = run.started_at.ToNanoseconds()
        finished = run.finished_at.ToNanoseconds()
        duration_s = (finished - started) / 1e9
    return Sample("chaperon", round_no, metric.count, duration_s, cpu_s, argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nginx-cpu", type=int, default=0)
    parser.add_argument("--generator-cpu", type=int, default=1)
    args = parser.parse_args()

    require("nginx", "wrk", "taskset")
    cpus = os.sched_getaffinity(0)
    if {args.nginx_cpu, args.generator_cpu} - cpus or args.nginx_cpu == args.generator_cpu:
        raise SystemExit(f"need two distinct CPUs among {sorted(cpus)}")

    with tempfile.TemporaryDirectory(prefix="chaperon-bench-") as tmp:
        work = Path(tmp)
        with nginx_target(work, cpu=args.nginx_cpu) as nginx:
            url = nginx.base_url + "/"
            test_file = work / "closed_loop.json"
            write_load_test(test_file, nginx.base_url, args.connections, f"{args.duration_s}s")
            startup_file = work / "startup.json"
            write_load_test(startup_file, nginx.base_url, 1, None, iterations=1)

            startup = run_chaperon(startup_file, args, work, "startup", 0)
            samples: list[Sample] = []
            for round_no in range(1, args.rounds + 1):
                samples.append(wrk_sample(url, args, work, round_no))
                samples.append(run_chaperon(test_file, args, work, "chaperon", round_no))
            nginx_command = nginx.process.argv

    report(samples, startup, nginx_command, test_file.name)
    return 0


def report(
    samples: list[Sample], startup: Sample, nginx_command: list[str], test_name: str
) -> None:
    print(
        f"{'round':>5}  {'tool':<9} {'requests':>10} {'req/s':>12} {'cpu s':>8} "
        f"{'cpu us/req':>11} {'net us/req':>11}"
    )
    rate_ratios: list[float] = []
    cpu_ratios: list[float] = []
    net_cpu_ratios: list[float] = []
    for wrk, ours in zip(samples[0::2], samples[1::2], strict=True):
        net_cpu_s = max(ours.cpu_s - startup.cpu_s, 0.0)
        net_us = net_cpu_s * 1e6 / ours.requests if ours.requests else float("nan")
        for s, net in ((wrk, wrk.cpu_us_per_request), (ours, net_us)):
            print(
                f"{s.round_no:>5}  {s.tool:<9} {s.requests:>10} {s.rate_per_s:>12.0f} "
                f"{s.cpu_s:>8.2f} {s.cpu_us_per_request:>11.2f} {net:>11.2f}"
            )
        rate_ratios.append(ours.rate_per_s / wrk.rate_per_s)
        cpu_ratios.append(ours.cpu_us_per_request / wrk.cpu_us_per_request)
        net_cpu_ratios.append(net_us / wrk.cpu_us_per_request)
    print()
    print(f"chaperon start-up (1 request): {startup.cpu_s:.2f} CPU s, subtracted in 'net'")
    print(
        f"req/s ratio chaperon/wrk, per round: {', '.join(f'{r:.3f}' for r in rate_ratios)}; "
        f"median {statistics.median(rate_ratios):.3f} (target >= 0.9)"
    )
    print(
        f"CPU/request ratio chaperon/wrk: median gross {statistics.median(cpu_ratios):.3f}, "
        f"net {statistics.median(net_cpu_ratios):.3f} (target <= 1.2)"
    )
    print()
    print("commands:")
    print(f"  target:   {shlex.join(nginx_command)}")
    print(f"  wrk:      {shlex.join(samples[0].command)}")
    print(
        f"  chaperon: {shlex.join(samples[1].command)}   ({test_name}: 50 sessions x GET / "
        f"looping for the duration)"
    )


if __name__ == "__main__":
    sys.exit(main())
