"""What the benchmarks under ``bench/`` share: the nginx target, wrk, pinned children, meters.

Theory of operation: a benchmark runs nginx pinned to one CPU (:func:`nginx_target`, the
``tests/support/nginx.py`` server with its access log off) and its load generators pinned to
another with ``taskset`` (:func:`pinned`), so that the two never compete for a core and the
machine's other work hits each run alike.

Two kinds of generator run:

* wrk (:func:`run_wrk`), measured from outside: its CPU time is the user + system time of
  the process (all its threads) that ``os.wait4`` reports (:func:`run_measured`), and its
  request count and rate are read from its output (:func:`parse_wrk`);
* our engine, run by the same script in a fresh child process (``--child``, see
  :func:`run_child`) so that nothing of the parent (nginx's runner, gRPC) counts in its CPU
  time or its RSS. The child measures itself (:func:`timed_engine_run`, :func:`self_cpu_s`,
  :func:`proc_status_kb`) and hands its figures back as one JSON line (:func:`emit`).

The child imports this module too, so it imports only what the children imported before it
existed: ``support.nginx`` (and with it gRPC) is imported when a parent starts nginx.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from support.certs import CertFiles
    from support.nginx import NginxServer

    from _fastpath.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
# tests/ has the nginx runner (support); the repo root has _fastpath and chaperon when the
# package is not installed.
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

# The request of the plain benchmarks: the cheapest GET nginx answers with a body.
GET_ROOT = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def require(*tools: str) -> None:
    """Exit with a message when one of ``tools`` (nginx as support.nginx finds it) is missing."""
    from support.nginx import nginx_binary

    needs = ", ".join(tools[:-1]) + " and " + tools[-1] if len(tools) > 1 else tools[0]
    for tool in tools:
        if not (nginx_binary() if tool == "nginx" else shutil.which(tool)):
            raise SystemExit(
                f"{tool} not found; this benchmark needs {needs} "
                "(apt-get install nginx-light wrk util-linux)"
            )


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` run on ``cpu`` only (through ``taskset``), or as it is when ``cpu`` is None."""
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else list(argv)


@contextmanager
def nginx_target(
    work: Path, *, cpu: int | None = None, tls: CertFiles | None = None, **tuning: Any
) -> Iterator[NginxServer]:
    """nginx (access log off) with its files in ``work/nginx``, pinned to ``cpu``.

    ``tuning``: the fields of ``support.nginx.Tuning`` (worker_connections, ...); ``tls``: the
    certificate of an HTTPS listener beside the plain one (``NginxServer.tls_port``).
    """
    from support.nginx import Tuning, nginx_server

    with nginx_server(
        work / "nginx",
        access_log=False,
        cpu=cpu,
        tuning=Tuning(**tuning),
        tls_cert=None if tls is None else tls.server_cert,
        tls_key=None if tls is None else tls.server_key,
    ) as nginx:
        yield nginx


def run_measured(
    argv: Sequence[str], stdout_path: Path | None = None, env: dict[str, str] | None = None
) -> tuple[str, float]:
    """Run ``argv``; return its output and CPU seconds (user + sys, all threads, from wait4).

    The output goes to ``stdout_path`` (kept) or to a temporary file, never to a pipe: the
    process is reaped by ``os.wait4`` for its rusage, so nobody may wait on a full pipe first.
    """
    with open(stdout_path, "w+b") if stdout_path else tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} exited {proc.returncode}:\n{text[-2000:]}")
    return text, usage.ru_utime + usage.ru_stime


class WrkRun(NamedTuple):
    requests: int
    rate_per_s: float  # wrk's Requests/sec: requests over its own measured duration
    cpu_s: float  # of the wrk process
    argv: list[str]

    @property
    def cpu_s_per_request(self) -> float:
        return self.cpu_s / self.requests


def parse_wrk(text: str) -> tuple[int, float]:
    """(requests, Requests/sec) from wrk's output."""
    total = re.search(r"^\s*(\d+) requests in", text, re.M)
    rate = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if not total or not rate:
        raise SystemExit(f"cannot parse wrk output:\n{text}")
    return int(total.group(1)), float(rate.group(1))


def run_wrk(
    url: str,
    *,
    cpu: int | None,
    connections: int,
    duration_s: int,
    headers: Sequence[str] = (),
    stdout_path: Path | None = None,
) -> WrkRun:
    """One wrk run (one thread, ``connections`` connections) pinned to ``cpu``."""
    header_args = [arg for header in headers for arg in ("-H", header)]
    wrk = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", *header_args, url]
    argv = pinned(wrk, cpu)
    text, cpu_s = run_measured(argv, stdout_path)
    requests, rate_per_s = parse_wrk(text)
    return WrkRun(requests, rate_per_s, cpu_s, argv)


def run_child(
    script: str, cpu: int | None, *args: str, timeout_s: float | None = None
) -> dict[str, Any]:
    """Run ``script --child *args`` pinned to ``cpu``; return the JSON line it :func:`emit`\\ s."""
    argv = pinned([sys.executable, script, "--child", *args], cpu)
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout_s)
    if out.returncode != 0:
        raise SystemExit("child failed:\n" + out.stderr)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def emit(result: dict[str, Any]) -> None:
    """In a child: hand ``result`` to :func:`run_child` (the last line of stdout)."""
    print(json.dumps(result))


def self_cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_status_kb(field: str) -> int:
    """A kB figure of this process from /proc/self/status (VmRSS, VmHWM, ...); -1 if absent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def start_and_wait(eng: Engine) -> tuple[float, float]:
    """Start ``eng`` and wait for it: (elapsed seconds, this process's CPU seconds)."""
    cpu0_s = self_cpu_s()
    t0 = time.monotonic()
    eng.start()
    eng.wait()
    return time.monotonic() - t0, self_cpu_s() - cpu0_s


def timed_engine_run(eng: Engine) -> dict[str, Any]:
    """Start ``eng`` and wait for it; its req/s and CPU seconds from start to wait.

    Returns ``rps``, ``responses``, ``errors`` (all metric keys) and ``cpu_s``; the engine
    stays open (the caller may read more from it, and closes it).
    """
    elapsed_s, cpu_s = start_and_wait(eng)
    stats = eng.stats()
    errors = sum(row[3] for row in eng.swap())
    return {
        "rps": stats["responses"] / elapsed_s,
        "responses": stats["responses"],
        "errors": errors,
        "cpu_s": cpu_s,
    }
