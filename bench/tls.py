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
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import engine_raw as raw  # noqa: E402  (free_port, wait_port, child_cpu_s, NGINX, WRK)

CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
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
        listen 127.0.0.1:{plain};
        location = / {{ return 200 "ok\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location = / {{ return 200 "ok\\n"; }}
    }}
}}
"""
GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def run_wrk(port: int, cpu: int, conns: int, duration_s: int, close: bool) -> tuple[float, float]:
    before = raw.child_cpu_s()
    header = ["-H", "Connection: close"] if close else []
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(cpu),
            raw.WRK,
            "-t1",
            f"-c{conns}",
            f"-d{duration_s}s",
            *header,
            f"https://localhost:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu_s = raw.child_cpu_s() - before
    import re

    m = re.search(r"^\s*(\d+) requests in", out, re.M)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m or not rps:
        raise SystemExit("cannot parse wrk output:\n" + out)
    return float(rps.group(1)), cpu_s / int(m.group(1))


def run_child(cpu: int, *args: str) -> dict:
    out = subprocess.run(
        ["taskset", "-c", str(cpu), sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def child(args: argparse.Namespace) -> None:
    """In its own pinned process: one engine run, measured from start to wait."""
    sys.path.insert(0, ROOT)
    from _fastpath.engine import OP_HTTP, Engine

    tls = args.mode != "plain"
    target = ("127.0.0.1", args.port, True, "localhost") if tls else ("127.0.0.1", args.port)
    eng = Engine(
        targets=[target],
        metric_keys=["GET /"],
        ops=[(OP_HTTP, 0, 0, GET_CLOSE if args.mode == "close" else GET, False)],
        sessions=args.connections,
        threads=1,
        duration_ns=args.duration * 1_000_000_000,
        tls_ca_file=args.ca,
    )
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    eng.start()
    eng.wait()
    elapsed = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stats = eng.stats()
    rows = eng.swap()
    tls_error = eng.tls_error
    eng.close()
    cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(
        json.dumps(
            {
                "rps": stats["responses"] / elapsed,
                "responses": stats["responses"],
                "errors": sum(r[3] for r in rows),
                "cpu_s": cpu_s,
                "hwm_kb": hwm_kb,
                "tls_error": tls_error,
            }
        )
    )


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
    for tool in (raw.NGINX, raw.WRK, "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found; this benchmark needs nginx, wrk and taskset")
    from support.certs import make_certs

    tmp = tempfile.mkdtemp(prefix="chaperon-bench-tls-")
    certs = make_certs(os.path.join(tmp, "certs"))
    plain, tls = raw.free_port(), raw.free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            CONF.format(tmp=tmp, plain=plain, tls=tls, cert=certs.server_cert, key=certs.server_key)
        )
    nginx = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(args.nginx_cpu),
            raw.NGINX,
            "-p",
            tmp,
            "-c",
            conf,
            "-e",
            f"{tmp}/error.log",
        ]
    )
    try:
        raw.wait_port(plain)
        raw.wait_port(tls)
        common = ["--port", str(tls), "--ca", str(certs.ca_cert), "--duration", str(args.duration)]
        for mode in ("keepalive", "close"):
            best: dict[str, tuple[float, float]] = {}
            for _ in range(args.rounds):
                w = run_wrk(tls, args.client_cpu, args.connections, args.duration, mode == "close")
                e = run_child(
                    args.client_cpu, "--mode", mode, "--connections", str(args.connections), *common
                )
                if e["errors"]:
                    raise SystemExit(f"engine errors in {mode}: {e}")
                ours = (e["rps"], e["cpu_s"] / max(1, e["responses"]))
                for name, val in (("wrk", w), ("engine", ours)):
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
        for mode, port in (("plain", plain), ("keepalive", tls)):
            r = run_child(
                args.client_cpu,
                "--mode",
                mode,
                "--connections",
                str(n),
                "--port",
                str(port),
                "--ca",
                str(certs.ca_cert),
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
    finally:
        nginx.terminate()
        nginx.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
