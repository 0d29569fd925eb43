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
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nginx did not listen on {port}")


def child_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_wrk(port: int, cpu: int, conns: int, duration_s: int) -> tuple[float, float]:
    before = child_cpu_s()
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(cpu),
            WRK,
            "-t1",
            f"-c{conns}",
            f"-d{duration_s}s",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu_s = child_cpu_s() - before
    m = re.search(r"^\s*(\d+) requests in", out, re.M)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m or not rps:
        raise SystemExit("cannot parse wrk output:\n" + out)
    return float(rps.group(1)), cpu_s / int(m.group(1))


def run_engine(port: int, cpu: int, conns: int, duration_s: int) -> tuple[float, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(cpu),
            sys.executable,
            __file__,
            "--child",
            "--port",
            str(port),
            "--connections",
            str(conns),
            "--duration",
            str(duration_s),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["rps"], res["cpu_s"] / max(1, res["responses"])


def child(port: int, conns: int, duration_s: int) -> None:
    """Runs pinned in its own process: the engine alone, measured from start to wait."""
    sys.path.insert(0, ROOT)
    from _fastpath.engine import OP_HTTP, Engine

    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    eng = Engine(
        targets=[("127.0.0.1", port)],
        metric_keys=["GET /"],
        ops=[(OP_HTTP, 0, 0, req, False)],
        sessions=conns,
        threads=1,
        duration_ns=duration_s * 1_000_000_000,
    )
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    eng.start()
    eng.wait()
    elapsed = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stats = eng.stats()
    errors = sum(row[3] for row in eng.swap())
    eng.close()
    cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    print(
        json.dumps(
            {
                "rps": stats["responses"] / elapsed,
                "responses": stats["responses"],
                "errors": errors,
                "cpu_s": cpu_s,
            }
        )
    )


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
    for tool in (NGINX, WRK, "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found; this benchmark needs nginx, wrk and taskset")
    tmp = tempfile.mkdtemp(prefix="chaperon-bench-")
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(tmp=tmp, port=port))
    nginx = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(args.nginx_cpu),
            NGINX,
            "-p",
            tmp,
            "-c",
            conf,
            "-e",
            f"{tmp}/error.log",
        ]
    )
    try:
        wait_port(port)
        wrk_runs, eng_runs = [], []
        for _ in range(args.rounds):  # interleaved, so drifting machine load hits both alike
            wrk_runs.append(run_wrk(port, args.client_cpu, args.connections, args.duration))
            eng_runs.append(run_engine(port, args.client_cpu, args.connections, args.duration))
            print(
                f"  round: wrk {wrk_runs[-1][0]:,.0f} req/s, engine {eng_runs[-1][0]:,.0f} req/s",
                flush=True,
            )
    finally:
        nginx.terminate()
        nginx.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
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
