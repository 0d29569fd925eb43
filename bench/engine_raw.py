"""Raw engine throughput vs wrk, same machine, same run.

nginx (temp config, one worker, ``return 200 "ok\\n"``) is pinned to CPU 0; wrk and then our
Engine (50 connections/sessions, one thread) are each pinned to CPU 1 for the same duration.
Prints both req/s, CPU seconds per request, and the ratios (goal: req/s >= 0.9x wrk, CPU per
request <= 1.2x wrk's).

    python bench/engine_raw.py [--duration 5] [--rounds 3] [--connections 50]
                               [--nginx-cpu 0] [--client-cpu 1]

The machine may be shared: rounds alternate wrk and engine, and the best of each is compared.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import GET_ROOT, emit, nginx_target, require, run_child, run_wrk, timed_engine_run


def run_engine(port: int, cpu: int, conns: int, duration_s: int) -> tuple[float, float]:
    res = run_child(
        __file__,
        cpu,
        "--port",
        str(port),
        "--connections",
        str(conns),
        "--duration",
        str(duration_s),
    )
    return res["rps"], res["cpu_s"] / max(1, res["responses"])


def child(port: int, conns: int, duration_s: int) -> None:
    """Runs pinned in its own process: the engine alone, measured from start to wait."""
    from _fastpath.engine import Engine, EngineOptions, PlanBuilder

    plan = PlanBuilder()
    plan.http(0, 0, GET_ROOT)
    options = EngineOptions(sessions=conns, threads=1, duration_ns=duration_s * 1_000_000_000)
    eng = Engine([("127.0.0.1", port)], ["GET /"], plan, options)
    result = timed_engine_run(eng)
    eng.close()
    emit(result)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--nginx-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.port, args.connections, args.duration)
        return
    require("nginx", "wrk", "taskset")
    with (
        tempfile.TemporaryDirectory(prefix="chaperon-bench-") as tmp,
        nginx_target(
            Path(tmp), cpu=args.nginx_cpu, worker_connections=4096, keepalive_timeout_s=300
        ) as nginx,
    ):
        url = nginx.base_url + "/"
        wrk_runs, eng_runs = [], []
        for _ in range(args.rounds):  # interleaved, so drifting machine load hits both alike
            w = run_wrk(
                url, cpu=args.client_cpu, connections=args.connections, duration_s=args.duration
            )
            wrk_runs.append((w.rate_per_s, w.cpu_s_per_request))
            eng_runs.append(
                run_engine(nginx.port, args.client_cpu, args.connections, args.duration)
            )
            print(
                f"  round: wrk {wrk_runs[-1][0]:,.0f} req/s, engine {eng_runs[-1][0]:,.0f} req/s",
                flush=True,
            )
    # best req/s and least CPU per request of each tool: the least disturbed rounds
    wrk_rps, wrk_cpu = max(r for r, _ in wrk_runs), min(c for _, c in wrk_runs)
    eng_rps, eng_cpu = max(r for r, _ in eng_runs), min(c for _, c in eng_runs)
    print(
        f"best of {args.rounds} rounds, {args.duration} s each, "
        f"{args.connections} connections, one client thread"
    )
    print(f"wrk     {wrk_rps:12,.0f} req/s   {wrk_cpu * 1e6:6.2f} us CPU/req")
    print(f"engine  {eng_rps:12,.0f} req/s   {eng_cpu * 1e6:6.2f} us CPU/req")
    print(f"ratio   {eng_rps / wrk_rps:12.3f} x wrk   {eng_cpu / wrk_cpu:6.3f} x wrk CPU/req")


if __name__ == "__main__":
    main()
