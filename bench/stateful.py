"""A 5-step stateful scenario against the plain GET loop, on the engine alone (issue 6, item 3).

The claim: a scenario of login, extract token, two authenticated GETs and a WebSocket echo
runs at least half as many *steps* per second as the plain ``GET /`` loop (goal: ratio >= 0.5).

Target: ``bench/stateful_target.c`` (compiled here with ``cc -O2 ... -lcrypto`` into a temp
dir), a single-threaded epoll HTTP/1.1 + WebSocket server that counts what it receives. A
fresh one is started for every measured run, pinned to ``--server-cpu`` (0), so its counts
belong to that run alone; it prints them on SIGTERM. Generators are pinned to
``--client-cpu`` (1), one thread, ``--sessions`` connections/sessions, ``--duration`` s.
Each round runs, in this order:

(a) wrk: ``wrk -t1 -cN -dDs http://127.0.0.1:PORT/`` (the reference for the plain loop);
(b) ours, plain: ``Engine`` closed model, N sessions looping one pre-rendered ``GET /``;
(c) ours, stateful: ``Engine`` closed model, N sessions, each with

    init: WS connect /ws (connection 0; measured, not a step)
    run:  POST /login  {"user":"u<session id>","password":"pw"}  extract $.token (EX_JSON)
          GET /me      Authorization: Bearer {{token}}
          GET /me      Authorization: Bearer {{token}}
          WS send      text "echo-<session id>-<iteration>" on connection 0
          WS recv      the echo (taken, not stored)

Steps. An iteration counts as 5 steps: login, extract, GET, GET, echo, where the echo is
ONE step made of the send and the recv ops (and the extraction is part of the login op, as
the compiler emits it). So per iteration: 5 steps, 5 ops, 4 round trips (the plain loop: 1
step = 1 op = 1 round trip). Steps/s: plain = req/s; stateful = 5 x completed iterations/s.
Round trips/s: responses plus echoes received (login, GET /me, WS recv), to compare the
network work of the two loops. CPU per step: the generator's user + system CPU seconds over
its steps (wrk's over its requests). Server busy: the target's own CPU seconds over the
run's length (near 100%: the server, not the generator, sets the pace).

Checks: the server's counts must equal the engine's (``GET /``; ``POST /login``; ``GET /me``
all authorized; WS upgrades = connects = sessions; text frames received = WS sends; the
echoes taken by recv at most one per session fewer than the sends, since a run may end
between a send and its recv), with no engine errors, no failed session and nothing the server
found bad. A mismatch exits 1; missing the goal only prints GOAL MISSED.

    python bench/stateful.py [--rounds 3] [--duration 5] [--sessions 50]
                             [--server-cpu 0] [--client-cpu 1]

Figures per round, then the medians over the rounds (the ratio's median is of the per-round
ratios, each from one round's plain and stateful runs).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from _common import GET_ROOT, emit, pinned, run_child, run_wrk, start_and_wait

HERE = Path(__file__).resolve().parent
STEPS_PER_ITERATION = 5  # login, extract, GET /me, GET /me, echo (send + recv)
STATEFUL_KEYS = ["POST /login", "GET /me", "WS connect /ws", "WS send", "WS recv"]
S = 1_000_000_000


# ------------------------------------------------------------------------------ the target


def compile_target(work: Path) -> Path:
    binary = work / "stateful_target"
    argv = ["cc", "-O2", "-Wall", "-o", str(binary), str(HERE / "stateful_target.c"), "-lcrypto"]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stderr}")
    return binary


@dataclass
class Target:
    """One running ``stateful_target``; :meth:`stop` returns its counts."""

    proc: subprocess.Popen[str]
    port: int

    @classmethod
    def start(cls, binary: Path, cpu: int | None) -> Target:
        proc = subprocess.Popen(
            pinned([str(binary), "0"], cpu),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        # The first line, {"port": N}, comes once it listens: no polling needed.
        line = _readline(proc.stdout, timeout_s=10.0)
        if not line:
            proc.kill()
            raise SystemExit(f"stateful_target did not start (exit {proc.wait()})")
        return cls(proc, int(json.loads(line)["port"]))

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise SystemExit("stateful_target did not stop on SIGTERM") from None
        if self.proc.returncode != 0 or not out.strip():
            raise SystemExit(f"stateful_target exited {self.proc.returncode} without its counts")
        counts: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return counts


def _readline(stream: IO[str] | None, timeout_s: float) -> str:
    """One line of a child's stdout pipe, or "" if none comes within the deadline."""
    assert stream is not None
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return ""
    return stream.readline()


# ------------------------------------------------------------------------------ the child


def plain_plan() -> tuple[list[str], Any, dict[str, Any]]:
    """(metric keys, plan, options beyond the run's): one pre-rendered GET / per iteration."""
    from _fastpath.engine import PlanBuilder

    plan = PlanBuilder()
    plan.http(0, 0, GET_ROOT)
    return ["GET /"], plan, {}


def stateful_plan() -> tuple[list[str], Any, dict[str, Any]]:
    """The scenario as the plan compiler emits it (see tests/system/test_engine_lang.py)."""
    from _fastpath.engine import EX_JSON, VAR_ITERATION, VAR_SESSION_ID, PlanBuilder

    host = b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    token = 0  # variable slot
    login_head = [b"POST /login", host, b"Content-Type: application/json\r\n"]
    login_body = [b'{"user":"u', VAR_SESSION_ID, b'","password":"pw"}']
    me_head = [b"GET /me", host, b"Authorization: Bearer ", token, b"\r\n"]
    ws_upgrade = [
        b"GET /ws" + host + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
    ]
    plan = PlanBuilder()
    plan.init()
    plan.ws_connect(0, 0, 2, ws_upgrade)
    plan.run()
    plan.http_template(0, 0, login_head, login_body, extract=[(token, EX_JSON, b"$.token", False)])
    plan.http_template(0, 1, me_head)
    plan.http_template(0, 1, me_head)
    plan.ws_send(0, 3, 1, [b"echo-", VAR_SESSION_ID, b"-", VAR_ITERATION])
    plan.ws_recv(0, 4, 5 * S, -1)
    return STATEFUL_KEYS, plan, {"var_names": ["token"], "nconns": 1}


def child(mode: str, port: int, sessions: int, duration_s: int) -> None:
    """Runs pinned in its own process: one engine run, measured from start to wait."""
    from _fastpath.engine import Engine, EngineOptions

    keys, plan, extra = stateful_plan() if mode == "stateful" else plain_plan()
    options = EngineOptions(sessions=sessions, threads=1, duration_ns=duration_s * S, **extra)
    eng = Engine([("127.0.0.1", port)], keys, plan, options)
    elapsed_s, cpu_s = start_and_wait(eng)
    rows = {key: (count, errors, dict(kinds)) for key, _h, count, errors, kinds, _s in eng.swap()}
    emit({"elapsed_s": elapsed_s, "cpu_s": cpu_s, "stats": eng.stats(), "rows": rows})
    eng.close()


# ------------------------------------------------------------------------------ the parent


class Run(NamedTuple):
    label: str
    rate_per_s: float  # steps/s (wrk: its Requests/sec)
    cpu_us_per_step: float  # of the generator
    server_busy: float  # the target's CPU seconds / the run's length
    round_trips_per_s: float  # requests answered + echoes received, per second


def check(mode: str, res: dict[str, Any], counts: dict[str, Any], sessions: int) -> list[str]:
    """The ways the server's counts and the engine's disagree (empty: they match)."""
    rows, stats = res["rows"], res["stats"]

    def n(key: str) -> int:
        return int(rows.get(key, (0, 0, {}))[0])

    problems = [f"engine errors on {k}: {r[2]}" for k, r in rows.items() if r[1]]
    if stats["sessions_failed"]:
        problems.append(f"{stats['sessions_failed']} sessions failed")
    for what in ("bad", "not_found", "login_bad", "me_unauthorized", "ws_drop", "open_at_exit"):
        if counts[what]:
            problems.append(f"server {what} = {counts[what]}")
    if mode == "plain":
        pairs = [("root", "GET /")]
    else:
        pairs = [
            ("login", "POST /login"),
            ("me_ok", "GET /me"),
            ("ws_connect", "WS connect /ws"),
            ("ws_text", "WS send"),
        ]
        if counts["ws_connect"] != sessions:
            problems.append(f"server ws_connect {counts['ws_connect']} != sessions {sessions}")
        if not 0 <= n("WS send") - n("WS recv") <= sessions:
            problems.append(f"WS recv {n('WS recv')} vs WS send {n('WS send')}")
        if counts["ws_sent"] != counts["ws_text"]:
            problems.append(f"server echoed {counts['ws_sent']} of {counts['ws_text']} frames")
    for server_key, engine_key in pairs:
        if counts[server_key] != n(engine_key):
            problems.append(
                f"server {server_key} {counts[server_key]} != engine {engine_key} {n(engine_key)}"
            )
    return [f"{mode}: {p}" for p in problems]


def run_engine(
    mode: str, binary: Path, args: argparse.Namespace, problems: list[str]
) -> tuple[Run, str]:
    target = Target.start(binary, args.server_cpu)
    try:
        res = run_child(
            __file__,
            args.client_cpu,
            "--mode",
            mode,
            "--port",
            str(target.port),
            "--sessions",
            str(args.sessions),
            "--duration",
            str(args.duration),
            timeout_s=args.duration + 60,
        )
    finally:
        counts = target.stop()
    problems += check(mode, res, counts, args.sessions)
    rows, elapsed_s = res["rows"], res["elapsed_s"]
    if mode == "plain":
        steps = rows["GET /"][0]
        round_trips = steps
        note = f"server GET / {counts['root']:,} = engine {steps:,}"
    else:
        steps = STEPS_PER_ITERATION * res["stats"]["iterations"]
        round_trips = sum(rows[k][0] for k in ("POST /login", "GET /me", "WS recv"))
        note = "server/engine: " + ", ".join(
            f"{what} {counts[server_key]:,}/{rows[engine_key][0]:,}"
            for what, server_key, engine_key in (
                ("login", "login", "POST /login"),
                ("me", "me_ok", "GET /me"),
                ("ws text", "ws_text", "WS send"),
            )
        )
        note += f"; {rows['WS recv'][0]:,} echoes taken, {res['stats']['iterations']:,} iterations"
    run = Run(
        mode,
        steps / elapsed_s,
        res["cpu_s"] / max(1, steps) * 1e6,
        counts["cpu_s"] / elapsed_s,
        round_trips / elapsed_s,
    )
    return run, note


def run_reference(binary: Path, args: argparse.Namespace) -> tuple[Run, str]:
    target = Target.start(binary, args.server_cpu)
    t0 = time.monotonic()
    try:
        w = run_wrk(
            f"http://127.0.0.1:{target.port}/",
            cpu=args.client_cpu,
            connections=args.sessions,
            duration_s=args.duration,
        )
    finally:
        elapsed_s = time.monotonic() - t0
        counts = target.stop()
    note = f"server GET / {counts['root']:,}, wrk {w.requests:,}"
    cpu_us = w.cpu_s_per_request * 1e6
    run = Run("wrk", w.rate_per_s, cpu_us, counts["cpu_s"] / elapsed_s, w.rate_per_s)
    return run, note


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per run")
    ap.add_argument("--sessions", type=int, default=50, help="wrk connections = our sessions")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--mode", choices=("plain", "stateful"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.mode, args.port, args.sessions, args.duration)
        return
    for tool in ("cc", "wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install gcc libssl-dev wrk util-linux)")
    if (os.cpu_count() or 1) < 2:
        args.server_cpu = args.client_cpu = None
        print("one CPU: nothing pinned; the figures mean little", file=sys.stderr)

    problems: list[str] = []
    runs: dict[str, list[Run]] = {"wrk": [], "plain": [], "stateful": []}
    ratios: list[float] = []
    print(
        f"{args.rounds} rounds x {args.duration} s, {args.sessions} sessions/connections, "
        f"server on CPU {args.server_cpu}, generator on CPU {args.client_cpu} (one thread)"
    )
    columns = ("steps/s", "round trips/s", "us CPU/step", "server busy")
    header = f"  {'':9}{columns[0]:>11}  {columns[1]:>14}  {columns[2]:>11}  {columns[3]:>11}"
    with tempfile.TemporaryDirectory(prefix="chaperon-bench-") as tmp:
        binary = compile_target(Path(tmp))
        for i in range(args.rounds):
            print(f"round {i + 1}\n{header}", flush=True)
            for run, note in (
                run_reference(binary, args),
                run_engine("plain", binary, args, problems),
                run_engine("stateful", binary, args, problems),
            ):
                runs[run.label].append(run)
                print(f"  {run.label:9}{_figures(run)}  {note}", flush=True)
            ratio = runs["stateful"][-1].rate_per_s / runs["plain"][-1].rate_per_s
            ratios.append(ratio)
            print(f"  stateful/plain steps/s {ratio:.3f}", flush=True)

    print(f"\nmedians of {args.rounds} rounds\n{header}")
    for label, rs in runs.items():
        print(f"  {label:9}{_figures(_median_run(label, rs))}")
    plain_rps = statistics.median(r.rate_per_s for r in runs["plain"])
    wrk_rps = statistics.median(r.rate_per_s for r in runs["wrk"])
    ratio = statistics.median(ratios)
    print(f"  ours plain / wrk req/s           {plain_rps / wrk_rps:.3f}")
    print(f"  stateful / plain steps/s         {ratio:.3f}   (goal >= 0.5)")
    print("  a stateful step = login | extract | GET /me | GET /me | WS echo (send + recv)")
    if problems:
        print("\nCOUNTS MISMATCH:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print("\ncounts: the server's equal the engine's in every run, no errors")
    print("GOAL MET" if ratio >= 0.5 else "GOAL MISSED")


def _figures(run: Run) -> str:
    return (
        f"{run.rate_per_s:11,.0f}  {run.round_trips_per_s:14,.0f}  "
        f"{run.cpu_us_per_step:11.2f}  {run.server_busy:10.0%}"
    )


def _median_run(label: str, rs: list[Run]) -> Run:
    """A row of per-column medians (not one of the runs)."""
    return Run(label, *(statistics.median(column) for column in list(zip(*rs, strict=True))[1:]))


if __name__ == "__main__":
    main()
