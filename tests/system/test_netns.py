"""A master, a worker and a target on three "hosts": network namespaces joined by a bridge.

Each process runs in its own namespace on a private /24 (see ``support.netns``), so the
master dials the worker at the worker's own address and the worker drives nginx over the
bridge, as across machines. The test process stays in the root namespace, which cannot
reach that network: every client call (readiness probes, ``chaperon submit``, ``chaperon
workers``) runs inside the master's namespace with ``ip netns exec``.

Skipped where namespaces cannot be made (not root, no ``ip``, a container without the
right), and the packet-loss test where ``iptables -m statistic`` is missing (``tc netem``
is not available on the machines this runs on).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.loadtests import minimal_load_test
from support.netns import (
    Host,
    PrivateNetwork,
    dropped_packets,
    iptables_loss_unavailable_reason,
    list_netns,
    netns_unavailable_reason,
    packet_loss,
    private_network,
    wait_for_health_in,
)
from support.ports import LOOPBACK
from support.procs import ManagedProcess, chaperon_command, python_env, running
from support.servers import NginxServer, nginx_binary, nginx_in_namespace

# Each namespace is a host of its own: fixed ports cannot clash with anything.
MASTER_PORT = 50051
WORKER_PORT = 50052
TARGET_PORT = 8080
READY_TIMEOUT_S = 30.0
SUBMIT_TIMEOUT_S = 30.0
# A run drives the target this long; the whole module stays well under a minute.
RUN_DURATION = "2s"
LOSS_PROBABILITY = 0.02


@dataclass
class NetnsCluster:
    net: PrivateNetwork
    directory: Path
    nginx: NginxServer
    master: ManagedProcess
    worker: ManagedProcess

    @property
    def master_host(self) -> Host:
        return self.net["master"]

    @property
    def worker_host(self) -> Host:
        return self.net["worker"]

    @property
    def target_host(self) -> Host:
        return self.net["target"]

    @property
    def master_address(self) -> str:
        return f"{self.master_host.address}:{MASTER_PORT}"

    @property
    def worker_address(self) -> str:
        return f"{self.worker_host.address}:{WORKER_PORT}"

    @property
    def target_url(self) -> str:
        return f"http://{self.target_host.address}:{TARGET_PORT}"

    def chaperon(self, *args: str, timeout_s: float = SUBMIT_TIMEOUT_S):
        """``chaperon ARGS --master MASTER`` run in the master's namespace."""
        return self.master_host.run(
            [*chaperon_command(), *args, "--master", self.master_address],
            timeout_s=timeout_s,
            env=python_env(),
        )

    def submit(self, load_test: dict[str, Any], name: str) -> subprocess.CompletedProcess[str]:
        path = self.directory / f"{name}.json"
        path.write_text(json.dumps(load_test))
        return self.chaperon("submit", str(path), "--wait", "--json")

    def workers(self) -> dict[str, str]:
        """``chaperon workers`` from the master's namespace: worker id -> address."""
        done = self.chaperon("workers", timeout_s=15.0)
        assert done.returncode == 0, done.stderr
        return {line.split()[0]: line.split()[1] for line in done.stdout.splitlines() if line}

    def describe(self) -> str:
        return "\n".join(p.describe() for p in (self.master, self.worker, self.nginx.process))


def wait_for_worker_listed(cluster: NetnsCluster, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``chaperon workers`` (from the master's namespace) until the worker is listed."""
    deadline = time.monotonic() + timeout_s
    listed: dict[str, str] = {}
    while time.monotonic() < deadline:
        cluster.master.check_running()
        cluster.worker.check_running()
        listed = cluster.workers()
        if cluster.worker_address in listed.values():
            return
        time.sleep(0.2)
    raise AssertionError(
        f"the master did not list {cluster.worker_address} within {timeout_s}s "
        f"(listed: {listed})\n{cluster.describe()}"
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (/usr/sbin/nginx): apt-get install nginx-light")
    directory = tmp_path_factory.mktemp("netns")
    env = python_env()
    tag = ""
    with ExitStack() as stack:
        net = stack.enter_context(private_network(("master", "worker", "target")))
        tag = net.tag
        master_host, worker_host = net["master"], net["worker"]
        nginx = stack.enter_context(
            nginx_in_namespace(net["target"], directory / "nginx", worker_host, TARGET_PORT)
        )
        master_argv = [*chaperon_command(), "master", "--host", master_host.address]
        master_argv += ["--port", str(MASTER_PORT), "--db", str(directory / "master.db")]
        master_argv += ["--allow-target", net.subnet]
        master = ManagedProcess(
            "master", master_host.argv(master_argv), directory, env=env, cwd=directory
        )
        stack.enter_context(
            running(
                master,
                lambda p: wait_for_health_in(
                    master_host, f"{master_host.address}:{MASTER_PORT}", processes=[p], env=env
                ),
            )
        )
        advertise = f"{worker_host.address}:{WORKER_PORT}"
        worker_argv = [*chaperon_command(), "worker", "--master"]
        worker_argv += [f"{master_host.address}:{MASTER_PORT}", "--host", worker_host.address]
        worker_argv += ["--port", str(WORKER_PORT), "--advertise", advertise]
        worker_argv += ["--allow-target", net.subnet, "--threads", "1"]
        worker = ManagedProcess(
            "worker", worker_host.argv(worker_argv), directory, env=env, cwd=directory
        )
        stack.enter_context(
            running(
                worker,
                lambda p: wait_for_health_in(
                    worker_host, advertise, processes=[p, master], env=env
                ),
            )
        )
        started = NetnsCluster(net, directory, nginx, master, worker)
        wait_for_worker_listed(started)
        yield started
    # Everything stopped and deleted: nothing of this run may be left behind.
    leftovers = [name for name in list_netns() if tag and name.startswith(tag)]
    assert not leftovers, f"namespaces left behind: {leftovers}"


def _get_root(run: dict[str, Any]) -> dict[str, Any]:
    metrics = run.get("result", {}).get("metrics", [])
    for m in metrics:
        if m["key"] == "GET /":
            return m
    raise AssertionError(f"no GET / metric in {[m['key'] for m in metrics]}")


def _lines_since(nginx: NginxServer, before: int) -> list[str]:
    return nginx.log_lines()[before:]


def test_load_test_across_namespaces(cluster: NetnsCluster) -> None:
    before = cluster.nginx.requests_served()
    load_test = minimal_load_test(cluster.target_url, concurrency=4, duration=RUN_DURATION)
    done = cluster.submit(load_test, "across")
    assert done.returncode == 0, f"{done.stderr}\n{cluster.describe()}"
    run = json.loads(done.stdout)
    assert run["state"] == "SUCCEEDED", run.get("error")
    root = _get_root(run)
    count = int(root["count"])
    assert count > 0
    assert int(root.get("errors", 0)) == 0, root.get("errorsByKind")

    # Every request the generator counted is one nginx served, from the worker's address.
    served = cluster.nginx.wait_for_served(before + count) - before
    assert served == count
    lines = _lines_since(cluster.nginx, before)
    assert all(line.split() == ["200", "GET", "/", cluster.worker_host.address] for line in lines)

    # The run names the one worker, and the master knows it by its namespace's address.
    workers = cluster.workers()
    assert run["result"]["workers"] == list(workers)
    assert workers == {run["result"]["workers"][0]: cluster.worker_address}


@pytest.mark.parametrize(
    "url",
    ["http://192.0.2.10:8080", f"http://{LOOPBACK}:{TARGET_PORT}"],
    ids=["outside-subnet", "loopback"],
)
def test_target_outside_the_allow_list_is_refused(cluster: NetnsCluster, url: str) -> None:
    before = cluster.nginx.requests_served()
    done = cluster.submit(minimal_load_test(url, concurrency=1, iterations=1), "refused")
    assert done.returncode == 2, done.stdout
    assert "PERMISSION_DENIED" in done.stderr
    host = re.sub(r"^http://|:\d+$", "", url)
    assert host in done.stderr
    assert cluster.nginx.requests_served() == before


def test_run_completes_with_packet_loss_on_the_worker_link(cluster: NetnsCluster) -> None:
    reason = iptables_loss_unavailable_reason(cluster.worker_host)
    if reason is not None:
        pytest.skip(reason)
    load_test = minimal_load_test(cluster.target_url, concurrency=4, duration=RUN_DURATION)
    # A lost segment costs a retransmit (200 ms and up); bound each request all the same.
    load_test["config"].update(connect_timeout="1s", request_timeout="2s")
    before = cluster.nginx.requests_served()
    with packet_loss(cluster.worker_host, LOSS_PROBABILITY):
        # subprocess's timeout is the deadline: the run has to end by itself before it.
        done = cluster.submit(load_test, "lossy")
        dropped = dropped_packets(cluster.worker_host)
    assert done.returncode in (0, 1), f"{done.stderr}\n{cluster.describe()}"
    run = json.loads(done.stdout)
    root = _get_root(run)
    count, errors = int(root["count"]), int(root.get("errors", 0))
    assert run["state"] == "SUCCEEDED" or errors > 0, (run["state"], run.get("error"))
    assert count > 0
    assert dropped > 0, "the loss rules dropped nothing: the run did not cross a lossy link"
    # Every response the generator counted is one nginx sent (requests it gave up on may
    # have been served too).
    assert cluster.nginx.wait_for_served(before + count) - before >= count
