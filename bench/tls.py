"""HTTPS in the engine vs wrk, same machine, same nginx, and the memory a TLS connection costs.

nginx (one worker, ``return 200 "ok\\n"``, a certificate from ``tests/support/certs.py``) is
pinned to CPU 0; wrk and then our Engine (one thread) are each pinned to CPU 1 for the same
duration, in alternating rounds (the machine may be shared; the best of each is printed):

* ``keepalive``: 50 connections, requests on kept-alive TLS connections (no handshakes);
* ``close``: ``Connection: close`` on every request, so every request is a TCP connect plus a
  TLS handshake (the engine resumes the session of the previous connection; wrk resumes too).

Then ``memory``: the engine's peak RSS with N kept-alive sessions over TLS minus the same with
plain HTTP, divided by N: what OpenSSL costs per connection.

    python bench/tls.py [--duration 4] [--rounds 2] [--connections 50] [--memory-sessions 1000]
                        [--nginx-cpu 0] [--client-cpu 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    emit,
    nginx_target,
    proc_status_kb,
    require,
    run_child,
    run_wrk,
    timed_engine_run,
)

if TYPE_CHECKING:
    from support.nginx import NginxServer

GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def child(args: argparse.Namespace) -> None:
    """In its own pinned process: one engine run, measured from start to wait."""
    from _fastpath.engine import Engine, EngineOptions, PlanBuilder

    tls = args.mode != "plain"
    target = ("127.0.0.1", args.port, True, "localhost") if tls else ("127.0.0.1", args.port)
    plan = PlanBuilder()
    plan.http(0, 0, GET_CLOSE if args.mode == "close" else GET)
    options = EngineOptions(
        sessions=args.connections,
        threads=1,
        duration_ns=args.duration * 1_000_000_000,
        tls_ca_file=args.ca,
    )
    eng = Engine([target], ["GET /"], plan, options)
    result = timed_engine_run(eng)
    tls_error = eng.tls_error
    eng.close()
    emit({**result, "hwm_kb": proc_status_kb("VmHWM"), "tls_error": tls_error})


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--memory-sessions", type=int, default=1000)
    ap.add_argument("--nginx-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="keepalive", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ca", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    require("nginx", "wrk", "taskset")
    from support.certs import make_certs

    with tempfile.TemporaryDirectory(prefix="chaperon-bench-tls-") as tmp:
        certs = make_certs(Path(tmp) / "certs")
        with nginx_target(
            Path(tmp),
            cpu=args.nginx_cpu,
            tls=certs,
            worker_connections=8192,
            keepalive_timeout_s=300,
        ) as nginx:
            measure(args, nginx, certs.ca_cert)


def measure(args: argparse.Namespace, nginx: NginxServer, ca_cert: Path) -> None:
    """The rounds of each mode, then the memory of plain and TLS sessions; prints them."""
    assert nginx.tls_port is not None
    common = ["--port", str(nginx.tls_port), "--ca", str(ca_cert), "--duration", str(args.duration)]
    for mode in ("keepalive", "close"):
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            wrk = run_wrk(
                nginx.tls_base_url + "/",
                cpu=args.client_cpu,
                connections=args.connections,
                duration_s=args.duration,
                headers=["Connection: close"] if mode == "close" else [],
            )
            e = run_child(
                __file__,
                args.client_cpu,
                "--mode",
                mode,
                "--connections",
                str(args.connections),
                *common,
            )
            if e["errors"]:
                raise SystemExit(f"engine errors in {mode}: {e}")
            ours = (e["rps"], e["cpu_s"] / max(1, e["responses"]))
            for name, val in (("wrk", (wrk.rate_per_s, wrk.cpu_s_per_request)), ("engine", ours)):
                if name not in best or val[0] > best[name][0]:
                    best[name] = val
        for name, (rps, cpu) in best.items():
            print(f"{mode:9s} {name:6s} {rps:10.0f} req/s  {cpu * 1e6:7.2f} us CPU/request")
        print(
            f"{mode:9s} engine/wrk req/s {best['engine'][0] / best['wrk'][0]:.2f}  "
            f"CPU/request {best['engine'][1] / best['wrk'][1]:.2f}"
        )
    n = args.memory_sessions
    mem = {}
    for mode, port in (("plain", nginx.port), ("keepalive", nginx.tls_port)):
        r = run_child(
            __file__,
            args.client_cpu,
            "--mode",
            mode,
            "--connections",
            str(n),
            "--port",
            str(port),
            "--ca",
            str(ca_cert),
            "--duration",
            "2",
        )
        if r["errors"]:
            raise SystemExit(f"engine errors in memory/{mode}: {r}")
        mem[mode] = r["hwm_kb"]
    per_conn = (mem["keepalive"] - mem["plain"]) / n
    print(
        f"memory    {n} sessions: plain {mem['plain'] / 1024:.1f} MB, TLS "
        f"{mem['keepalive'] / 1024:.1f} MB peak RSS -> {per_conn:.1f} KB per TLS connection"
    )


if __name__ == "__main__":
    main()
