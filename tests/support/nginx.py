"""A throw-away nginx on loopback: the load target of the system tests and the bench.

Theory of operation: everything nginx writes (pid, error log, access log, the temp dirs of
every module) lives in one directory, so it needs no root-owned path and leaves nothing
behind. It runs in the foreground (``daemon off``) with one worker, so stopping the process
we started stops all of it. The access log has one short line per request, written with a
plain ``write`` at the end of each request (no ``buffer=``), so counting its lines gives the
exact number of requests served, which the tests compare with the generator's count.

Paths: ``/`` answers ``200 "ok\\n"``; ``/status/<code>`` answers that code for
200, 204, 400, 404, 429, 500, 502 and 503.

The benchmarks under ``bench/`` use the same server under heavier load: :class:`Tuning`
raises the connection limits and the listen backlog, and ``tls_cert``/``tls_key`` add an
HTTPS listener on a second port serving the same paths. The defaults render the config the
tests have always had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .ports import LOOPBACK, free_port
from .procs import ManagedProcess, ProcessNotReady, running, wait_for_tcp

NGINX_BIN = os.environ.get("CHAPERON_TEST_NGINX", "/usr/sbin/nginx")
STATUS_CODES = (200, 204, 400, 404, 429, 500, 502, 503)
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    """The nginx executable, or None when it is not installed."""
    if os.access(NGINX_BIN, os.X_OK):
        return NGINX_BIN
    return shutil.which("nginx")


@dataclass(frozen=True)
class Tuning:
    """Limits to raise for heavy load; the defaults are what the tests run with."""

    worker_connections: int = 1024
    multi_accept: bool = False
    worker_rlimit_nofile: int | None = None
    listen_backlog: int | None = None  # None: nginx's default (511)
    keepalive_timeout_s: int = 75


@dataclass(frozen=True)
class TlsListener:
    """A second, HTTPS listener of the same server."""

    port: int
    cert: Path
    key: Path


def render_config(
    directory: Path,
    port: int,
    *,
    access_log: bool = True,
    tuning: Tuning | None = None,
    tls: TlsListener | None = None,
) -> str:
    """nginx.conf for a server on 127.0.0.1:``port`` keeping all its files in ``directory``."""
    d = directory
    t = tuning or Tuning()
    rlimit = f"worker_rlimit_nofile {t.worker_rlimit_nofile};\n" if t.worker_rlimit_nofile else ""
    multi_accept = "\n    multi_accept on;" if t.multi_accept else ""
    backlog = f" backlog={t.listen_backlog}" if t.listen_backlog else ""
    https = (
        f"\n        listen {LOOPBACK}:{tls.port} ssl{backlog};"
        f"\n        ssl_certificate {tls.cert};"
        f"\n        ssl_certificate_key {tls.key};"
        if tls
        else ""
    )
    # As root, nginx's workers would switch to "nobody", who cannot read a 0700 temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    log = f"access_log {d}/access.log short;" if access_log else "access_log off;"
    statuses = "\n".join(
        f'        location = /status/{code} {{ return {code} "{code}\\n"; }}'
        if code not in (204,)
        else f"        location = /status/{code} {{ return {code}; }}"
        for code in STATUS_CODES
    )
    temp_paths = "\n".join(f"    {name}_temp_path {d}/{name};" for name in TEMP_DIRS)
    return f"""\
{user}daemon off;
master_process on;
worker_processes 1;
{rlimit}pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections {t.worker_connections};{multi_accept}
}}

http {{
{temp_paths}
    log_format short '$status $request_method $request_uri';
    {log}
    keepalive_requests 1000000;
    keepalive_timeout {t.keepalive_timeout_s}s;
    default_type text/plain;

    server {{
        listen {LOOPBACK}:{port}{backlog};{https}
        location = / {{ return 200 "ok\\n"; }}
{statuses}
        location / {{ return 404 "not found\\n"; }}
    }}
}}
"""


class NginxServer:
    """A running nginx; ``base_url`` to aim at, ``requests_served()`` to count hits."""

    def __init__(
        self, directory: Path, port: int, process: ManagedProcess, *, tls_port: int | None = None
    ) -> None:
        self.directory = directory
        self.port = port
        self.process = process
        self.access_log = directory / "access.log"
        self.tls_port = tls_port

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def tls_base_url(self) -> str:
        """The HTTPS listener, by the name its certificate is for (see ``support.certs``)."""
        assert self.tls_port is not None, "nginx was started without tls_cert"
        return f"https://localhost:{self.tls_port}"

    def log_lines(self) -> list[str]:
        try:
            return self.access_log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def requests_served(self, status: int | None = None) -> int:
        """Requests logged so far (all, or those answered with ``status``)."""
        lines = self.log_lines()
        if status is None:
            return len(lines)
        prefix = f"{status} "
        return sum(1 for line in lines if line.startswith(prefix))

    def wait_for_served(self, expected: int, timeout_s: float = 3.0, settle_s: float = 0.1) -> int:
        """Poll until at least ``expected`` requests are logged and the count holds still.

        nginx logs a request right after sending its response, so a client can see the
        response a moment before the line is written; and a request the client gave up on
        is logged when nginx is done with it. Waiting for ``expected`` and then for the count
        to stay put for ``settle_s`` lets an exact comparison see both. Returns the count
        (whatever it is at the deadline).
        """
        deadline = time.monotonic() + timeout_s
        served = self.requests_served()
        stable_since = time.monotonic()
        while True:
            now = time.monotonic()
            if served >= expected and now - stable_since >= settle_s or now >= deadline:
                return served
            time.sleep(0.02)
            latest = self.requests_served()
            if latest != served:
                served, stable_since = latest, time.monotonic()


@contextmanager
def nginx_server(
    directory: Path,
    *,
    access_log: bool = True,
    port: int | None = None,
    cpu: int | None = None,
    ready_timeout_s: float = 15.0,
    tuning: Tuning | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_port: int | None = None,
) -> Iterator[NginxServer]:
    """Run nginx with its config and files in ``directory`` (created); stop it on exit.

    ``cpu`` pins it (master and worker) to that CPU with ``taskset``. ``tuning`` raises its
    limits. ``tls_cert`` and ``tls_key`` add an HTTPS listener on ``tls_port`` (default: a
    free one), ``NginxServer.tls_port``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in TEMP_DIRS:
        (directory / name).mkdir(exist_ok=True)
    port = free_port() if port is None else port
    tls = None
    if tls_cert is not None and tls_key is not None:
        tls = TlsListener(free_port() if tls_port is None else tls_port, tls_cert, tls_key)
    config = render_config(directory, port, access_log=access_log, tuning=tuning, tls=tls)
    listeners = [(LOOPBACK, port)] + ([(LOOPBACK, tls.port)] if tls is not None else [])
    with run_nginx(directory, config, listeners, cpu=cpu, ready_timeout_s=ready_timeout_s) as proc:
        yield NginxServer(directory, port, proc, tls_port=None if tls is None else tls.port)


def has_ssl_module() -> bool:
    """Whether the installed nginx was built with the SSL module (``nginx -V``)."""
    binary = nginx_binary()
    if binary is None:
        return False
    build = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    return "--with-http_ssl_module" in build.stderr + build.stdout


def wait_for_pid_file(path: Path, proc: ManagedProcess, timeout_s: float) -> None:
    """Wait until ``path`` holds ``proc``'s pid; raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc.check_running()
        try:
            if int(path.read_text().strip() or 0) == proc.pid:
                return
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() >= deadline:
            raise ProcessNotReady(f"nginx wrote no pid file {path} within {timeout_s}s")
        time.sleep(0.01)


@contextmanager
def run_nginx(
    directory: Path,
    config: str,
    listeners: Sequence[tuple[str, int]],
    *,
    cpu: int | None = None,
    ready_timeout_s: float = 15.0,
    wrap: Callable[[list[str]], list[str]] | None = None,
    ready: Callable[[ManagedProcess], None] | None = None,
) -> Iterator[ManagedProcess]:
    """Run nginx with ``config`` as ``directory/nginx.conf``; ready once every (host, port) of
    ``listeners`` accepts a connection and nginx is still running (or once ``ready`` returns);
    stopped on exit. ``wrap`` rewrites the command (to run it in a network namespace, say).

    The one place an nginx process is started: :func:`nginx_server` renders the usual config,
    ``support.servers`` renders the special ones (several HTTPS listeners, say)."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError(f"nginx not found at {NGINX_BIN} nor on PATH")
    conf = directory / "nginx.conf"
    conf.write_text(config)
    argv = [binary, "-p", f"{directory}/", "-c", str(conf), "-e", str(directory / "error.log")]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    if wrap is not None:
        argv = wrap(argv)
    process = ManagedProcess("nginx", argv, directory, extra_logs=[directory / "error.log"])

    def listening(proc: ManagedProcess) -> None:
        for host, port in listeners:
            wait_for_tcp(host, port, ready_timeout_s, process=proc)
        # Connected, but to whom? Another process may hold the port (a free port picked by
        # two test runs at once). nginx writes its pid file only once it has bound every
        # listener, and exits if it cannot: wait for the file to name this process.
        wait_for_pid_file(directory / "nginx.pid", proc, ready_timeout_s)

    with running(process, ready or listening) as proc:
        yield proc
