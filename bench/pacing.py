"""Open-model pacing: achieved arrival rate vs target on one engine thread (target: within 1%
up to 100k sessions/s per thread).

nginx (temp config, one worker, ``return 200 "ok\\n"``, access log off) is pinned to CPU 0; a
child process pinned to CPU 1 runs one ``Engine`` (one thread, open model, one ``GET /`` per
session) at each target rate for ``--duration`` seconds. Printed per rate:

* achieved: sessions started per second, as the least-squares slope of ``sessions_started``
  sampled every 50 ms over the middle 80% of the run (what a rate meter would show), and over
  the whole run (started / duration);
* the relative errors of both against the target;
* dropped sessions (no free slot) and errors;
* the warm-up: from ``start`` to the schedule's origin (every slot connected first; not in
  the run's duration nor in any latency);
* pacing lateness: mean(corrected latency) - mean(service time) = how late, on average, the
  loop started sessions after their due time; and p50/p99 of both latencies.

    python bench/pacing.py [--rates 1000,10000,100000] [--duration 5] [--slots 0]
                           [--nginx-cpu 0] [--client-cpu 1] [--no-http]

``--no-http`` measures the pacer alone: each session is one zero delay op (no I/O), so the
achieved rate shows what the schedule, the slots and the loop sustain whatever the target's
speed (lateness is not measured then: there is no request to time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import GET_ROOT, emit, nginx_target, require, run_child


def slope(points: list[tuple[float, int]]) -> float:
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(c for _, c in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (c - my) for t, c in points)
    return sxy / sxx if sxx else 0.0


def child(port: int, rate: float, duration_s: float, slots: int, no_http: bool) -> None:
    from _fastpath.engine import Engine, EngineOptions, PlanBuilder

    plan = PlanBuilder()
    if no_http:
        plan.delay(0)
    else:
        plan.http(0, 0, GET_ROOT)
    options = EngineOptions(
        sessions=slots, threads=1, arrival_rate_per_s=rate, duration_ns=int(duration_s * 1e9)
    )
    eng = Engine([("127.0.0.1", port or 9)], ["GET /"], plan, options)
    samples: list[tuple[float, int]] = []
    try:
        # The schedule's origin is set after the warm-up (every slot connected first).
        t0 = time.monotonic_ns()
        eng.start()
        while eng.origin_ns is None and not eng.done:
            time.sleep(0.0005)
        origin = eng.origin_ns if eng.origin_ns is not None else t0
        while not eng.done:
            time.sleep(0.05)
            samples.append(((time.monotonic_ns() - origin) / 1e9, eng.stats()["sessions_started"]))
        eng.wait()
        stats = eng.stats()
        rows = eng.swap()
    finally:
        eng.close()
    middle = [(t, c) for t, c in samples if 0.1 * duration_s <= t <= 0.9 * duration_s]
    hist = rows[0][1] if rows else None
    service = rows[0][5] if rows else None
    emit(
        {
            "rate_mid": slope(middle) if len(middle) > 2 else 0.0,
            "rate_all": stats["sessions_started"] / duration_s,
            "warmup_ms": (origin - t0) / 1e6,
            "started": stats["sessions_started"],
            "dropped": stats["sessions_dropped"],
            "errors": stats["errors"],
            "lateness_us": (hist.mean - service.mean) if hist else 0.0,
            "corrected_us": hist.percentiles([50, 99]) if hist else [0, 0],
            "service_us": service.percentiles([50, 99]) if service else [0, 0],
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rates", default="1000,10000,100000")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--slots", type=int, default=0, help="session slots (default: rate/100, >= 64)")
    ap.add_argument("--nginx-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--no-http", action="store_true", help="pacer alone: zero-delay sessions")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.port, args.rate, args.duration, args.slots, args.no_http)
        return
    require("nginx", "taskset")
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="chaperon-pacing-") as tmp,
        nginx_target(
            Path(tmp),
            cpu=args.nginx_cpu,
            worker_connections=8192,
            listen_backlog=4096,
            keepalive_timeout_s=300,
        ) as nginx,
    ):
        for rate in (float(r) for r in args.rates.split(",")):
            slots = args.slots or max(64, int(rate / 100))
            res = run_child(
                __file__,
                args.client_cpu,
                "--port",
                str(nginx.port),
                "--rate",
                str(rate),
                "--duration",
                str(args.duration),
                "--slots",
                str(slots),
                *(["--no-http"] if args.no_http else []),
                timeout_s=args.duration + 60,
            )
            results.append((rate, slots, res))
    print(
        f"one engine thread on CPU {args.client_cpu}, nginx on CPU {args.nginx_cpu}, "
        f"{args.duration:g} s per rate, "
        + ("no HTTP (one zero delay per session)" if args.no_http else "one GET per session")
    )
    print(
        f"{'target/s':>10} {'slots':>6} {'achieved(mid)':>14} {'err':>8} {'achieved(all)':>14} "
        f"{'err':>8} {'dropped':>8} {'errors':>7} {'warm ms':>7} {'late us':>8} "
        f"{'corr p50/p99 us':>16} {'serv p50/p99 us':>16}"
    )
    for rate, slots, r in results:
        print(
            f"{rate:10,.0f} {slots:6d} {r['rate_mid']:14,.1f} "
            f"{(r['rate_mid'] - rate) / rate:+8.3%} {r['rate_all']:14,.1f} "
            f"{(r['rate_all'] - rate) / rate:+8.3%} {r['dropped']:8d} {r['errors']:7d} "
            f"{r['warmup_ms']:7.1f} "
            f"{r['lateness_us']:8.1f} {r['corrected_us'][0]:>7}/{r['corrected_us'][1]:<8} "
            f"{r['service_us'][0]:>7}/{r['service_us'][1]:<8}"
        )


if __name__ == "__main__":
    main()
