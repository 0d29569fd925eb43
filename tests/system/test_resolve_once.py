"""A worker resolves a target name once: what the name resolves to later does not matter.

Four "hosts" (network namespaces on a private /24, ``support.netns``): master, worker, the
target (nginx) and a decoy (another nginx). ``target.test`` is a name in each host's own
``/etc/hosts``: ``ip netns exec`` bind-mounts ``/etc/netns/NS/hosts`` over ``/etc/hosts`` for
the commands it starts, and glibc reads that file at every lookup, so rewriting it (in place:
the mount follows the inode) changes what the name resolves to, at once, for that host only.
Master and worker allow only the target's address.

1. The run starts with ``target.test`` -> the target. The target's nginx closes every
   connection after its response (``keepalive_timeout 0``), so the engine reconnects for
   every request. Mid-run, the worker's hosts file is rewritten to send the name to the
   decoy. The run still succeeds with every request on the target and none on the decoy:
   the engine reconnects to the address the allow-list checked, never to the name.
2. A second run, after the swap: the master (whose hosts file still says target) accepts
   it; the worker resolves the name once more, finds the decoy's address, which is not in
   its allow-list, and refuses the assignment: the run fails saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from support.loadtests import minimal_load_test
from support.netns import (
    Host,
    PrivateNetwork,
    netns_unavailable_reason,
    private_network,
    wait_for_health_in,
)
from support.nginx import Tuning
from support.procs import ManagedProcess, chaperon_command, python_env, running
from support.servers import NginxServer, nginx_binary, nginx_in_namespace

MASTER_PORT = 50051
WORKER_PORT = 50052
TARGET_PORT = 8080
NAME = "target.test"
RUN_S = 4
SUBMIT_TIMEOUT_S = 60.0
NETNS_ETC = Path("/etc/netns")


def _hosts_file(host: Host) -> Path:
    return NETNS_ETC / host.netns / "hosts"


def _point(host: Host, address: str) -> None:
    """Make ``NAME`` resolve to ``address`` on ``host`` (in place, see the module docstring)."""
    with open(_hosts_file(host), "r+") as f:
        f.truncate(0)
        f.write(f"127.0.0.1 localhost\n{address} {NAME}\n")


def _resolves_to(host: Host) -> str:
    done = host.run(["getent", "hosts", NAME], timeout_s=10)
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout else ""


class Cluster:
    def __init__(
        self, net: PrivateNetwork, directory: Path, target: NginxServer, decoy: NginxServer
    ):
        self.net, self.directory, self.target, self.decoy = net, directory, target, decoy
        self.master_address = f"{net['master'].address}:{MASTER_PORT}"

    def submit(self, name: str) -> subprocess.Popen[str]:
        """``chaperon submit --wait --json`` of a run on ``http://target.test``, from the
        master's namespace; started, not waited for."""
        load_test = minimal_load_test(
            f"http://{NAME}:{TARGET_PORT}", concurrency=2, duration=f"{RUN_S}s", name=name
        )
        path = self.directory / f"{name}.json"
        path.write_text(json.dumps(load_test))
        argv = [*chaperon_command(), "submit", str(path), "--wait", "--json"]
        argv += ["--master", self.master_address]
        return subprocess.Popen(
            self.net["master"].argv(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=python_env(),
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (/usr/sbin/nginx): apt-get install nginx-light")
    env = python_env()
    with ExitStack() as stack:
        net = stack.enter_context(private_network(("master", "worker", "target", "decoy")))
        master, worker, target = net["master"], net["worker"], net["target"]
        for host in (master, worker):
            _hosts_file(host).parent.mkdir(parents=True, exist_ok=True)
            stack.callback(shutil.rmtree, _hosts_file(host).parent, ignore_errors=True)
            _hosts_file(host).write_text("")
            _point(host, target.address)
        closing = Tuning(keepalive_timeout_s=0)
        target_nginx = stack.enter_context(
            nginx_in_namespace(target, tmp_path / "target", worker, TARGET_PORT, closing)
        )
        decoy_nginx = stack.enter_context(
            nginx_in_namespace(net["decoy"], tmp_path / "decoy", worker, TARGET_PORT, closing)
        )
        allow = ["--allow-target", f"{target.address}/32"]
        master_argv = [*chaperon_command(), "master", "--host", master.address]
        master_argv += ["--port", str(MASTER_PORT), "--db", str(tmp_path / "master.db"), *allow]
        master_proc = ManagedProcess("master", master.argv(master_argv), tmp_path, env=env)
        master_address = f"{master.address}:{MASTER_PORT}"
        stack.enter_context(
            running(
                master_proc,
                lambda p: wait_for_health_in(master, master_address, processes=[p], env=env),
            )
        )
        advertise = f"{worker.address}:{WORKER_PORT}"
        worker_argv = [*chaperon_command(), "worker", "--master", master_address]
        worker_argv += ["--host", worker.address, "--port", str(WORKER_PORT)]
        worker_argv += ["--advertise", advertise, "--threads", "1", *allow]
        worker_proc = ManagedProcess("worker", worker.argv(worker_argv), tmp_path, env=env)
        stack.enter_context(
            running(
                worker_proc,
                lambda p: wait_for_health_in(
                    worker, advertise, processes=[p, master_proc], env=env
                ),
            )
        )
        yield Cluster(net, tmp_path, target_nginx, decoy_nginx)


def _finished(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=SUBMIT_TIMEOUT_S)
    assert out, err
    return json.loads(out)


def test_a_name_that_changes_mid_run_is_not_followed_and_a_new_run_is_refused(
    cluster: Cluster,
) -> None:
    worker = cluster.net["worker"]
    assert _resolves_to(worker) == cluster.net["target"].address
    running_run = cluster.submit("before-the-swap")
    deadline = time.monotonic() + 30
    while cluster.target.requests_served() < 20:  # the run is under way, reconnecting
        assert running_run.poll() is None, running_run.communicate()
        assert time.monotonic() < deadline, "the run did not reach the target"
        time.sleep(0.05)
    _point(worker, cluster.net["decoy"].address)
    assert _resolves_to(worker) == cluster.net["decoy"].address  # the swap took effect
    served_at_swap = cluster.target.requests_served()

    run = _finished(running_run)
    assert run["state"] == "SUCCEEDED", run.get("error")
    (metric,) = run["result"]["metrics"]
    count, errors = int(metric["count"]), int(metric.get("errors", 0))
    assert errors == 0
    assert cluster.target.wait_for_served(count) == count > served_at_swap  # reconnected after
    assert cluster.decoy.requests_served() == 0

    refused = _finished(cluster.submit("after-the-swap"))
    assert refused["state"] == "FAILED"
    assert f"'{NAME}'" in refused["error"] and "not in the allow-list" in refused["error"]
    assert cluster.decoy.requests_served() == 0
