"""Memory of one engine running 10,000 concurrent sessions (target: < 200 MB RSS per worker).

nginx (temp config, one worker, ``worker_connections 20000``, ``return 200 "ok\\n"``, access log
off) is the target; a fresh Python process runs one ``Engine`` with ``--sessions`` closed-model
sessions (each its own keep-alive connection) for ``--duration`` seconds and prints its
RLIMIT_NOFILE, VmRSS sampled while the sessions are all connected, VmHWM (peak RSS) at the end,
the requests done, and how long a Python thread was kept from running while ``swap()`` waited
for the engine's first batch (the 10k connects): ``swap`` takes the engine mutexes with the
GIL released, so that gap stays near the 5 ms switch interval.

    python bench/memory.py [--sessions 10000] [--duration 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

from _common import GET_ROOT, emit, nginx_target, proc_status_kb, require, run_child


def child(port: int, sessions: int, duration_s: float, threads: int) -> None:
    """Runs in its own process so its RSS is the engine's (plus the interpreter's)."""
    from _fastpath.engine import Engine, EngineOptions, PlanBuilder

    rss_before_kb = proc_status_kb("VmRSS")
    plan = PlanBuilder()
    plan.http(0, 0, GET_ROOT)
    options = EngineOptions(sessions=sessions, threads=threads, duration_ns=int(duration_s * 1e9))
    eng = Engine([("127.0.0.1", port)], ["GET /"], plan, options)
    gaps: list[float] = []
    stop = threading.Event()

    def ticker() -> None:  # a Python thread that wants the GIL every millisecond
        last = time.monotonic()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = threading.Thread(target=ticker)
    tick.start()
    try:
        t0 = time.monotonic()
        eng.start()
        eng.swap()  # waits for the first batch (every session connecting) without the GIL
        first_swap_s = time.monotonic() - t0
        stop.set()
        tick.join()
        rss_peak_kb = 0
        connected = 0
        while not eng.done and time.monotonic() - t0 < duration_s + 30:
            time.sleep(0.2)
            rss_peak_kb = max(rss_peak_kb, proc_status_kb("VmRSS"))
            connected = max(connected, _established(port))
            eng.swap()
        assert eng.wait(30)
        stats = eng.stats()
        errors = sum(e for _, _, _, e, _, _ in eng.swap())
    finally:
        stop.set()
        eng.close()
    emit(
        {
            "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "rss_before_kb": rss_before_kb,
            "rss_running_kb": rss_peak_kb,
            "hwm_kb": proc_status_kb("VmHWM"),
            "established": connected,
            "responses": stats["responses"],
            "errors": errors,
            "first_swap_s": first_swap_s,
            "max_python_gap_ms": max(gaps) * 1000 if gaps else 0.0,
        }
    )


def _established(port: int) -> int:
    """Client sockets to ``port`` in ESTABLISHED state (from /proc/net/tcp)."""
    hexport = f":{port:04X}"
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 3 and parts[2].endswith(hexport) and parts[3] == "01":
                n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.port, args.sessions, args.duration, args.threads)
        return
    require("nginx")
    with (
        tempfile.TemporaryDirectory(prefix="chaperon-mem-") as tmp,
        nginx_target(
            Path(tmp),
            worker_connections=20_000,
            multi_accept=True,
            worker_rlimit_nofile=40_000,
            listen_backlog=16384,
            keepalive_timeout_s=300,
        ) as nginx,
    ):
        res = run_child(
            __file__,
            None,
            "--port",
            str(nginx.port),
            "--sessions",
            str(args.sessions),
            "--duration",
            str(args.duration),
            "--threads",
            str(args.threads),
            timeout_s=args.duration + 120,
        )
    soft, hard = res["rlimit_nofile"]
    print(
        f"{args.sessions} sessions, {args.threads} engine thread(s), {args.duration:g} s, "
        f"RLIMIT_NOFILE soft={soft} hard={hard}"
    )
    print(f"  connections established (peak)  {res['established']}")
    print(f"  responses                       {res['responses']:,} ({res['errors']} errors)")
    print(f"  VmRSS before the engine         {res['rss_before_kb'] / 1024:8.1f} MB")
    print(f"  VmRSS while running (max)       {res['rss_running_kb'] / 1024:8.1f} MB")
    print(f"  VmHWM (peak RSS) of the process {res['hwm_kb'] / 1024:8.1f} MB   (target < 200 MB)")
    print(
        f"  first swap() returned after     {res['first_swap_s'] * 1000:8.1f} ms; longest a "
        f"Python thread waited meanwhile {res['max_python_gap_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
