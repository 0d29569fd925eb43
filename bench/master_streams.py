"""The master's control plane under many open streams and workers (issue 12, "Streams and
heartbeats never starve").

    python bench/master_streams.py                          # 1000 streams + 1000 workers, 30 s
    python bench/master_streams.py --seconds 10 --watchers 200 --workers 200
    python bench/master_streams.py --master-tree /work/main # another checkout's master

Target (DESIGN.md): on this 2-core machine, 1000 open ``WatchLoadTestRun`` streams and 1000
workers heartbeating every second, with RPC p99 < 100 ms and no worker marked lost.

What runs, all on loopback:

1. **The master**: a real ``chaperon master`` process (``--master-tree``, default this
   checkout, is its PYTHONPATH, so an older tree's master can be measured with the same
   clients), SQLite in a temp dir, ``--worker-wait`` far longer than the measurement.
2. **The workers** (a child process, grpc.aio): ``--workers`` simulated workers, each
   registered (``RegisterWorker``, an address nothing listens on) and then set ignored
   (``SetWorkerIgnored``), which is how an operator keeps a node from taking load. Each
   sends a ``Heartbeat`` every second, the N workers spread evenly over the second, over
   ``--connections`` HTTP/2 connections. They are never given work: every run is submitted
   after all of them are ignored, and an ignored worker is never assigned one.
3. **The runs**: ``--runs`` load tests submitted after that. With no worker available, the
   oldest waits for one (up to ``--worker-wait``) and the others stay queued behind it, so
   every run is SCHEDULED, and every stream open, for the whole measurement. The streams
   cost the master what a watcher of a running run costs, except the run's figures: the
   state read, the message, the write.
4. **The watchers** (a second child process, grpc.aio): ``--watchers`` ``WatchLoadTestRun``
   streams over ``--connections`` connections, spread round-robin over the runs. The
   measurement starts once each has had its first message (or after ``--ramp-timeout``).
5. **This process** measures, for ``--seconds``: ``GetServerInfo`` latency (``--info-per-s``
   calls a second, a plain client), the heartbeats' latency (timed in the workers' process
   from send to answer), the watch messages (per stream: count and the longest gap), the
   master's CPU time and RSS (``/proc``). At the end, with everything still open,
   ``ListWorkers`` says whether any simulated worker was marked LOST; then the master is
   sent SIGTERM with all streams open, and the time it takes to exit is printed.

Every call has a deadline (``--call-timeout``); a call that fails or times out is counted,
never waited on for ever. The load processes record how late their own event loop fired
each heartbeat ("send lateness"): if that is small, the figures are the master's, not the
load generator's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

HEARTBEAT_INTERVAL_S = 1.0
TARGET_P99_MS = 100.0


def _channel_options() -> list[tuple[str, Any]]:
    # Each channel its own TCP connection (grpc would otherwise share one among channels
    # with the same target and options), as separate watchers and workers would have.
    return [("grpc.use_local_subchannel_pool", 1)]


# --- the workers' process -----------------------------------------------------------------------


def _workers_process(
    address: str, count: int, connections: int, timeout_s: float, pipe: Any
) -> None:
    """Register ``count`` workers, ignore them, heartbeat each every second; report the
    latencies of the heartbeats sent between "go" and "freeze"."""
    import grpc

    from chaperon.v1 import master_pb2, master_pb2_grpc, worker_pb2

    async def main() -> None:
        channels = [
            grpc.aio.insecure_channel(address, options=_channel_options())
            for _ in range(max(1, min(connections, count)))
        ]
        stubs = [master_pb2_grpc.MasterStub(c) for c in channels]
        t0 = time.monotonic()
        ids: list[str] = []
        for i in range(count):
            reply = await stubs[i % len(stubs)].RegisterWorker(
                master_pb2.RegisterWorkerRequest(
                    address=f"127.0.0.1:{20000 + i}", capacity=1, version="bench"
                ),
                timeout=timeout_s,
            )
            ids.append(reply.worker_id)
        for i, worker_id in enumerate(ids):
            await stubs[i % len(stubs)].SetWorkerIgnored(
                master_pb2.SetWorkerIgnoredRequest(worker_id=worker_id, ignored=True),
                timeout=timeout_s,
            )
        pipe.send(("registered", ids, time.monotonic() - t0))

        recording = False
        latencies_s: list[float] = []
        lateness_s: list[float] = []
        failures: Counter[str] = Counter()
        unknown = 0
        pending: set[asyncio.Task[None]] = set()

        async def beat(i: int, due: float) -> None:
            nonlocal unknown
            sent = time.monotonic()
            record = recording
            try:
                reply = await stubs[i % len(stubs)].Heartbeat(
                    master_pb2.HeartbeatRequest(worker_id=ids[i], state=worker_pb2.WORKER_IDLE),
                    timeout=timeout_s,
                )
            except grpc.aio.AioRpcError as exc:
                if record:
                    failures[exc.code().name] += 1
                return
            if record:
                latencies_s.append(time.monotonic() - sent)
                lateness_s.append(sent - due)
                unknown += not reply.known

        async def heartbeats() -> None:
            start = time.monotonic()
            k = 0
            while True:
                due = start + k * HEARTBEAT_INTERVAL_S / count
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.ensure_future(beat(k % count, due))
                pending.add(task)
                task.add_done_callback(pending.discard)
                k += 1

        driver = asyncio.ensure_future(heartbeats())
        loop = asyncio.get_running_loop()
        while True:
            message = await loop.run_in_executor(None, pipe.recv)
            if message == "go":
                recording = True
            elif message == "freeze":
                recording = False
                pipe.send(
                    {
                        "latencies_s": latencies_s,
                        "lateness_s": lateness_s,
                        "failures": dict(failures),
                        "unknown": unknown,
                    }
                )
            elif message == "stop":
                break
        driver.cancel()
        for task in list(pending):
            task.cancel()
        await asyncio.gather(driver, *pending, return_exceptions=True)
        for channel in channels:
            await channel.close(None)

    asyncio.run(main())


# --- the watchers' process ----------------------------------------------------------------------


def _watchers_process(
    address: str, run_ids: list[str], count: int, connections: int, ramp_s: float, pipe: Any
) -> None:
    """Open ``count`` watch streams; report how many opened, then per-stream message counts
    and gaps between "go" and "freeze"."""
    import grpc

    from chaperon.v1 import master_pb2, master_pb2_grpc

    async def main() -> None:
        channels = [
            grpc.aio.insecure_channel(address, options=_channel_options())
            for _ in range(max(1, min(connections, count)))
        ]
        stubs = [master_pb2_grpc.MasterStub(c) for c in channels]
        recording = False
        window: list[float] = [0.0, 0.0]
        opened = 0
        all_open = asyncio.Event()
        counts = [0] * count
        last_at = [0.0] * count
        max_gap_s = [0.0] * count
        failures: Counter[str] = Counter()
        ended = 0

        async def watch(i: int) -> None:
            nonlocal opened, ended
            call = stubs[i % len(stubs)].WatchLoadTestRun(
                master_pb2.WatchLoadTestRunRequest(id=run_ids[i % len(run_ids)])
            )
            first = True
            try:
                async for _ in call:
                    now = time.monotonic()
                    if first:
                        first = False
                        opened += 1
                        if opened == count:
                            all_open.set()
                    if recording:
                        counts[i] += 1
                        since = last_at[i] if last_at[i] >= window[0] else window[0]
                        max_gap_s[i] = max(max_gap_s[i], now - since)
                    last_at[i] = now
                if recording:
                    ended += 1
            except grpc.aio.AioRpcError as exc:
                if recording:
                    failures[exc.code().name] += 1

        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(watch(i)) for i in range(count)]
        try:
            await asyncio.wait_for(all_open.wait(), ramp_s)
        except TimeoutError:
            pass
        pipe.send(("opened", opened, time.monotonic() - t0))
        loop = asyncio.get_running_loop()
        while True:
            message = await loop.run_in_executor(None, pipe.recv)
            if message == "go":
                window[0] = time.monotonic()
                recording = True
            elif message == "freeze":
                recording = False
                window[1] = time.monotonic()
                # A stream that got nothing in the window had one gap: the whole window.
                gaps = [
                    g if c else window[1] - window[0]
                    for g, c in zip(max_gap_s, counts, strict=True)
                ]
                pipe.send(
                    {
                        "opened": opened,
                        "messages": sum(counts),
                        "silent": sum(1 for c in counts if c == 0),
                        "max_gap_s": max(gaps),
                        "gap_p99_s": _percentile(gaps, 99),
                        "failures": dict(failures),
                        "ended": ended,
                        "window_s": window[1] - window[0],
                    }
                )
            elif message == "stop":
                break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close(None)

    asyncio.run(main())


# --- this process: the master, the runs, GetServerInfo --------------------------------------


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_master(
    tree: Path, work: Path, worker_wait_s: float, log_path: Path, cpu: int | None
) -> tuple[subprocess.Popen[bytes], str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")
    argv = [
        *(["taskset", "-c", str(cpu)] if cpu is not None else []),
        sys.executable,
        "-c",
        "import sys; from chaperon.cli import main; sys.argv[0] = 'chaperon'; sys.exit(main())",
        "master",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        str(work / "master.db"),
        "--worker-wait",
        str(worker_wait_s),
    ]
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes it until it exits
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=work
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the master exited: {log_path.read_text()[-2000:]}")
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5, wait_for_ready=True
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return proc, address
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the master did not serve within 30 s")
            time.sleep(0.05)


def _submit_runs(stub: Any, runs: int, timeout_s: float) -> list[str]:
    from chaperon.core.loadtest import load_test_from_dict
    from chaperon.v1 import master_pb2

    ids = []
    for i in range(runs):
        lt = load_test_from_dict(
            {
                "name": f"master-streams-{i}",
                # Never contacted: no worker ever takes these runs.
                "config": {"base_url": "http://127.0.0.1:9"},
                "scenarios": [
                    {
                        "concurrency": 1,
                        "duration": "1s",
                        "scenario": {
                            "name": "s",
                            "run": [{"http": {"method": "GET", "path": "/"}}],
                        },
                    }
                ],
            }
        )
        run = stub.SubmitLoadTest(master_pb2.SubmitLoadTestRequest(load_test=lt), timeout=timeout_s)
        ids.append(run.id)
    return ids


def _measure_server_info(
    stub: Any, seconds: float, per_s: float, timeout_s: float
) -> tuple[list[float], Counter[str]]:
    import grpc

    from chaperon.v1 import master_pb2

    latencies: list[float] = []
    failures: Counter[str] = Counter()
    start = time.monotonic()
    k = 0
    while True:
        due = start + k / per_s
        # Bounded by the clock, not only by the count: a call may wait out its deadline.
        if due >= start + seconds or time.monotonic() >= start + seconds:
            return latencies, failures
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.monotonic()
        try:
            stub.GetServerInfo(master_pb2.GetServerInfoRequest(), timeout=timeout_s)
            latencies.append(time.monotonic() - sent)
        except grpc.RpcError as exc:
            failures[exc.code().name] += 1
        k += 1


def _row(name: str, latencies_s: list[float], failures: dict[str, int]) -> str:
    ms = [x * 1e3 for x in latencies_s]
    failed = sum(failures.values())
    detail = f" ({', '.join(f'{k} {v}' for k, v in sorted(failures.items()))})" if failed else ""
    if not ms:
        return f"  {name:<14} answered 0, failed {failed}{detail}"
    return (
        f"  {name:<14} answered {len(ms):>6}  p50 {_percentile(ms, 50):8.2f} ms  "
        f"p99 {_percentile(ms, 99):8.2f} ms  max {max(ms):8.2f} ms  failed {failed}{detail}"
    )


def _wait_message(pipe: Any, what: str, timeout_s: float) -> Any:
    if not pipe.poll(timeout_s):
        raise SystemExit(f"the {what} process did not answer within {timeout_s:g} s")
    return pipe.recv()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured period")
    parser.add_argument("--watchers", type=int, default=1000, help="open WatchLoadTestRun streams")
    parser.add_argument("--workers", type=int, default=1000, help="simulated workers")
    parser.add_argument("--runs", type=int, default=50, help="queued runs the streams watch")
    parser.add_argument(
        "--connections", type=int, default=100, help="HTTP/2 connections per load process"
    )
    parser.add_argument(
        "--info-per-s", type=float, default=5.0, help="GetServerInfo calls a second"
    )
    parser.add_argument(
        "--call-timeout", type=float, default=5.0, help="deadline of every call (s)"
    )
    parser.add_argument("--ramp-timeout", type=float, default=60.0, help="max wait for streams (s)")
    parser.add_argument(
        "--master-tree", type=Path, default=ROOT, help="PYTHONPATH of the master (a checkout)"
    )
    parser.add_argument("--master-log", type=Path, help="keep the master's output in this file")
    parser.add_argument("--master-cpu", type=int, help="pin the master to this CPU")
    parser.add_argument("--load-cpu", type=int, help="pin the load processes to this CPU")
    args = parser.parse_args()
    import grpc

    from chaperon.v1 import master_pb2, master_pb2_grpc, worker_pb2

    print("command: python bench/master_streams.py " + " ".join(sys.argv[1:]))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {load}; {os.cpu_count()} CPUs")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="master-streams-") as tmp:
        work = Path(tmp)
        worker_wait_s = args.seconds + args.ramp_timeout + 3600
        log_path = args.master_log or work / "master.log"
        master, address = _start_master(
            args.master_tree.resolve(), work, worker_wait_s, log_path, args.master_cpu
        )
        if args.load_cpu is not None:
            # This process and the two load processes it spawns (they inherit it).
            os.sched_setaffinity(0, {args.load_cpu})
        print(f"master: {args.master_tree.resolve()} (pid {master.pid}) on {address}")
        children: list[Any] = []
        pipes: list[Any] = []
        try:
            w_pipe, w_child = ctx.Pipe()
            pipes.append(w_pipe)
            workers = ctx.Process(
                target=_workers_process,
                args=(address, args.workers, args.connections, args.call_timeout, w_child),
                daemon=True,
            )
            workers.start()
            children.append(workers)
            _, worker_ids, reg_s = _wait_message(w_pipe, "workers", 300)
            print(f"setup: {len(worker_ids)} workers registered and ignored in {reg_s:.1f} s")

            channel = grpc.insecure_channel(address)
            stub = master_pb2_grpc.MasterStub(channel)
            run_ids = _submit_runs(stub, args.runs, args.call_timeout)
            print(
                f"setup: {len(run_ids)} runs submitted; no worker is available, so the oldest "
                "waits for one and the rest stay queued behind it"
            )
            v_pipe, v_child = ctx.Pipe()
            pipes.append(v_pipe)
            watchers = ctx.Process(
                target=_watchers_process,
                args=(
                    address,
                    run_ids,
                    args.watchers,
                    args.connections,
                    args.ramp_timeout,
                    v_child,
                ),
                daemon=True,
            )
            watchers.start()
            children.append(watchers)
            _, opened, ramp_s = _wait_message(v_pipe, "watchers", args.ramp_timeout + 60)
            print(
                f"setup: {opened} of {args.watchers} watch streams had their first message "
                f"within {ramp_s:.1f} s"
            )

            cpu0, wall0 = _proc_cpu_s(master.pid), time.monotonic()
            w_pipe.send("go")
            v_pipe.send("go")
            info_latencies, info_failures = _measure_server_info(
                stub, args.seconds, args.info_per_s, args.call_timeout
            )
            # Still under the full load: is any simulated worker marked lost?
            lost: int | str
            try:
                listed = stub.ListWorkers(
                    master_pb2.ListWorkersRequest(), timeout=2 * args.call_timeout
                ).workers
                ours = set(worker_ids)
                states = {w.worker_id: w.state for w in listed if w.worker_id in ours}
                lost = sum(1 for s in states.values() if s == worker_pb2.WORKER_LOST) + len(
                    ours - states.keys()
                )
            except grpc.RpcError as exc:
                lost = f"unknown (ListWorkers failed: {exc.code().name})"
            cpu_s, wall_s = _proc_cpu_s(master.pid) - cpu0, time.monotonic() - wall0
            rss = _proc_rss_mib(master.pid)
            w_pipe.send("freeze")
            v_pipe.send("freeze")
            beats = _wait_message(w_pipe, "workers", 60)
            streams = _wait_message(v_pipe, "watchers", 60)

            # SIGTERM with every stream still open: the master stops within its grace.
            t_stop = time.monotonic()
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(60)
                stop_s: str = f"{time.monotonic() - t_stop:.2f} s"
            except subprocess.TimeoutExpired:
                stop_s = "did not exit within 60 s"
            channel.close()
        finally:
            for pipe in pipes:
                try:
                    pipe.send("stop")
                except OSError:  # the child has gone already
                    pass
            for child in children:
                child.join(15)
                if child.is_alive():
                    child.kill()
            if master.poll() is None:
                master.kill()
                master.wait()

    print(
        f"\nmeasured {args.seconds:g} s: {args.watchers} streams on {args.runs} runs, "
        f"{args.workers} workers heartbeating every {HEARTBEAT_INTERVAL_S:g} s, "
        f"{args.connections} connections per load process"
    )
    print(_row("GetServerInfo", info_latencies, dict(info_failures)))
    print(_row("Heartbeat", beats["latencies_s"], beats["failures"]))
    lateness_ms = [x * 1e3 for x in beats["lateness_s"]]
    if lateness_ms:
        print(
            "  heartbeat send lateness (the load process's own delay): "
            f"p99 {_percentile(lateness_ms, 99):.2f} ms, max {max(lateness_ms):.2f} ms"
        )
    if beats["unknown"]:
        print(f"  heartbeats answered 'unknown worker': {beats['unknown']}")
    print(
        f"  watch streams: {streams['opened']} open; {streams['messages']} messages "
        f"({streams['messages'] / max(1, args.watchers) / streams['window_s']:.2f} per stream "
        "per s); "
        f"{streams['silent']} got none; longest gap {streams['max_gap_s']:.2f} s "
        f"(p99 {streams['gap_p99_s']:.2f} s); "
        f"failed {sum(streams['failures'].values())}"
        + (f" {streams['failures']}" if streams["failures"] else "")
    )
    print(f"  workers marked LOST (ListWorkers at the end): {lost} of {len(worker_ids)}")
    print(f"  master: CPU {cpu_s / wall_s:.2f} s per s; RSS {rss:.0f} MiB")
    print(f"  master stop (SIGTERM) with the streams open: exited in {stop_s}")
    info_ms = [x * 1e3 for x in info_latencies]
    beat_ms = [x * 1e3 for x in beats["latencies_s"]]
    met = (
        bool(info_ms)
        and bool(beat_ms)
        and not info_failures
        and not beats["failures"]
        and _percentile(info_ms, 99) < TARGET_P99_MS
        and _percentile(beat_ms, 99) < TARGET_P99_MS
        and lost == 0
        and streams["opened"] == args.watchers
    )
    print(
        f"goal (every call answered, p99 < {TARGET_P99_MS:g} ms for both, every stream open, "
        f"no worker lost): {'GOAL MET' if met else 'GOAL MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
