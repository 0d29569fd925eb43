"""A small private network of Linux network namespaces: several "hosts" on one machine.

Theory of operation: :func:`private_network` creates a *switch* namespace holding a Linux
bridge, and one namespace per host (``chp-<random>-master``, ``-worker``, ``-target``), each
joined to the bridge by a veth pair created directly between the two namespaces (``ip -n
SWITCH link add ... peer ... netns HOST``), so no interface ever appears in the root
namespace. Every host gets ``lo`` up and one address on a private /24
(``10.231.<random>.0/24``) that exists only inside these namespaces: there is no default
route, no NAT and no link to the root namespace, so nothing sent there can leave the
network. The names carry a random tag, so parallel or leftover runs never clash.

``finally`` always deletes every namespace this run created (which deletes the veths and
the bridge), also when the setup stops half-way; any process still left inside one of them
(ours: the namespaces are private to this run) is SIGKILLed first, by pid.

A command runs on a host as ``[*host.exec_prefix, *argv]`` (``ip netns exec NAME ...``,
which execs the command, so the pid ManagedProcess holds is the command's own).
:func:`netns_unavailable_reason` probes once by creating and deleting a throw-away
namespace, so tests can skip with the reason where namespaces cannot be made (not root, no
``ip``, EPERM in a container).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache

from .procs import ManagedProcess, ProcessNotReady

# Second octet of the private /24s the tests own; the third is random per network.
SUBNET_PREFIX = "10.231"
# The veth end inside each host namespace.
HOST_IFACE = "eth0"
BRIDGE = "br0"
_IP_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.1


class NetnsError(RuntimeError):
    """An ``ip`` command that builds the network failed."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise :class:`NetnsError` with its stderr when it fails."""
    done = subprocess.run(
        ["ip", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_IP_TIMEOUT_S,
    )
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def exec_prefix(netns: str) -> list[str]:
    """argv prefix that runs a command inside network namespace ``netns``."""
    return ["ip", "netns", "exec", netns]


def list_netns() -> list[str]:
    """Names of the named network namespaces that exist now."""
    done = ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


@cache
def netns_unavailable_reason() -> str | None:
    """None when this process can build namespaces; otherwise why not (a skip message)."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the tests as root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed: apt-get install iproute2"
    probe = f"chp-probe-{secrets.token_hex(4)}"
    try:
        added = ip("netns", "add", probe, check=False)
        if added.returncode != 0:
            return f"cannot create a network namespace: {added.stderr.strip()}"
        veth = ip(
            "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False
        )
        if veth.returncode != 0:
            return f"cannot create a veth pair in a namespace: {veth.stderr.strip()}"
        bridge = ip("-n", probe, "link", "add", BRIDGE, "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"cannot create a bridge in a namespace: {bridge.stderr.strip()}"
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run ip netns: {exc}"
    finally:
        ip("netns", "delete", probe, check=False)


@dataclass
class Host:
    """One host of the network: its namespace and its address."""

    role: str
    netns: str
    address: str

    @property
    def exec_prefix(self) -> list[str]:
        return exec_prefix(self.netns)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return [*self.exec_prefix, *argv]

    def run(
        self, argv: Sequence[str], *, timeout_s: float = 30.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in this host's namespace to its end; output captured as text."""
        return subprocess.run(
            self.argv(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )


@dataclass
class PrivateNetwork:
    """The namespaces of one :func:`private_network` and their addresses."""

    tag: str
    subnet: str
    switch: str
    hosts: dict[str, Host] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def __getitem__(self, role: str) -> Host:
        return self.hosts[role]


def _kill_leftovers(netns: str) -> None:
    """SIGKILL any process still inside ``netns`` (one of ours: the namespace is private)."""
    done = ip("netns", "pids", netns, check=False)
    for word in done.stdout.split():
        try:
            os.kill(int(word), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def _teardown(names: Sequence[str]) -> list[str]:
    """Delete the namespaces ``names`` (hosts first, the switch last); return the failures."""
    failures = []
    for name in reversed(names):
        _kill_leftovers(name)
        done = ip("netns", "delete", name, check=False)
        if done.returncode != 0 and name in list_netns():
            failures.append(f"{name}: {done.stderr.strip()}")
    return failures


@contextmanager
def private_network(
    roles: Sequence[str] = ("master", "worker", "target"),
) -> Iterator[PrivateNetwork]:
    """Build a bridge namespace and one namespace per role on a private /24; always delete them.

    Host ``i`` (in ``roles`` order) gets ``10.231.X.(10 + i)/24``. No route leads out of the
    /24 and nothing is attached to the root namespace.
    """
    tag = f"chp-{secrets.token_hex(3)}"
    third = secrets.randbelow(256)
    net = PrivateNetwork(tag=tag, subnet=f"{SUBNET_PREFIX}.{third}.0/24", switch=f"{tag}-switch")
    try:
        # Listed before they are added: a namespace half-made by a failing ``ip`` goes too.
        net.created.append(net.switch)
        ip("netns", "add", net.switch)
        ip("-n", net.switch, "link", "set", "lo", "up")
        ip("-n", net.switch, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", net.switch, "link", "set", BRIDGE, "up")
        for i, role in enumerate(roles):
            name = f"{tag}-{role}"
            net.created.append(name)
            ip("netns", "add", name)
            host = Host(role, name, f"{SUBNET_PREFIX}.{third}.{10 + i}")
            port = f"p{i}"  # the switch's end of this host's cable
            ip(
                "-n", net.switch, "link", "add", port, "type", "veth",
                "peer", "name", HOST_IFACE, "netns", name,
            )  # fmt: skip
            ip("-n", net.switch, "link", "set", port, "master", BRIDGE)
            ip("-n", net.switch, "link", "set", port, "up")
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "addr", "add", f"{host.address}/24", "dev", HOST_IFACE)
            ip("-n", name, "link", "set", HOST_IFACE, "up")
            net.hosts[role] = host
        yield net
    finally:
        failures = _teardown(net.created)
        if failures:
            raise NetnsError("could not delete namespaces: " + "; ".join(failures))


# --- readiness from inside a namespace -----------------------------------------------------

# Polls a gRPC health check from inside a namespace: argv[1] address, argv[2] timeout (s).
_HEALTH_SNIPPET = """\
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
address, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
last = "no answer"
with grpc.insecure_channel(address) as channel:
    stub = health_pb2_grpc.HealthStub(channel)
    while time.monotonic() < deadline:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5, wait_for_ready=True)
        except grpc.RpcError as exc:
            last = f"{exc.code()}: {exc.details()}"
        else:
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                sys.exit(0)
            last = str(reply.status)
        time.sleep(0.05)
print(f"health check on {address} not SERVING: {last}", file=sys.stderr)
sys.exit(1)
"""

# Polls a TCP connect from inside a namespace: argv[1] host, argv[2] port, argv[3] timeout.
_TCP_SNIPPET = """\
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
last = None
while time.monotonic() < deadline:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        sys.exit(0)
    except OSError as exc:
        last = exc
    time.sleep(0.05)
print(f"nothing accepted connections on {host}:{port}: {last}", file=sys.stderr)
sys.exit(1)
"""


def _wait_snippet(
    host: Host,
    snippet: str,
    args: Sequence[str],
    what: str,
    timeout_s: float,
    processes: Sequence[ManagedProcess],
    env: dict[str, str] | None,
) -> None:
    """Run a polling snippet in ``host``'s namespace; fail fast if a watched process exits."""
    probe = subprocess.Popen(
        host.argv([sys.executable, "-c", snippet, *args]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + timeout_s + 5.0
    try:
        while probe.poll() is None:
            for proc in processes:
                proc.check_running()
            if time.monotonic() >= deadline:
                raise ProcessNotReady(f"{what} from {host.netns}: the probe hung")
            time.sleep(_POLL_INTERVAL_S)
    finally:
        if probe.poll() is None:
            probe.kill()
        _, err = probe.communicate()
    if probe.returncode != 0:
        logs = "\n".join(p.describe() for p in processes)
        raise ProcessNotReady(f"{what} from {host.netns}: {err.strip()}\n{logs}")


def wait_for_health_in(
    host: Host,
    address: str,
    timeout_s: float = 30.0,
    *,
    processes: Sequence[ManagedProcess] = (),
    env: dict[str, str] | None = None,
) -> None:
    """Poll gRPC health on ``address`` from ``host``'s namespace until SERVING."""
    _wait_snippet(
        host,
        _HEALTH_SNIPPET,
        [address, str(timeout_s)],
        f"health of {address}",
        timeout_s,
        processes,
        env,
    )


def wait_for_tcp_in(
    host: Host,
    address: str,
    port: int,
    timeout_s: float = 15.0,
    *,
    processes: Sequence[ManagedProcess] = (),
) -> None:
    """Poll a TCP connect to ``address:port`` from ``host``'s namespace until it succeeds."""
    _wait_snippet(
        host,
        _TCP_SNIPPET,
        [address, str(port), str(timeout_s)],
        f"TCP {address}:{port}",
        timeout_s,
        processes,
        None,
    )


# --- packet loss ---------------------------------------------------------------------------


def iptables_loss_unavailable_reason(host: Host) -> str | None:
    """None when ``iptables -m statistic`` works in ``host``'s namespace; else why not."""
    if shutil.which("iptables") is None:
        return (
            "iptables is not installed (tc netem is not available here either), so packet "
            "loss cannot be simulated: apt-get install iptables"
        )
    rule = ["INPUT", "-i", "lo", "-m", "statistic", "--mode", "random", "--probability", "0"]
    added = host.run(["iptables", "-A", *rule, "-j", "DROP"], timeout_s=10)
    if added.returncode != 0:
        return (
            "iptables -m statistic does not work in a namespace here (and tc netem is not "
            f"available): {added.stderr.strip()}"
        )
    host.run(["iptables", "-D", *rule, "-j", "DROP"], timeout_s=10)
    return None


@contextmanager
def packet_loss(host: Host, probability: float) -> Iterator[list[list[str]]]:
    """Drop packets at random on ``host``'s link, both ways; yields the rules (removed after).

    ``tc qdisc ... netem`` is not always available; iptables' ``statistic`` match is. The
    rules live in the host's own namespace, so they vanish with it in any case.
    """
    rules = [
        [chain, flag, HOST_IFACE, "-m", "statistic", "--mode", "random",
         "--probability", str(probability), "-j", "DROP"]
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o"))
    ]  # fmt: skip
    added: list[list[str]] = []
    try:
        for rule in rules:
            done = host.run(["iptables", "-A", *rule], timeout_s=10)
            if done.returncode != 0:
                raise NetnsError(f"iptables -A {' '.join(rule)}: {done.stderr.strip()}")
            added.append(rule)
        yield added
    finally:
        for rule in added:
            host.run(["iptables", "-D", *rule], timeout_s=10)


def dropped_packets(host: Host) -> int:
    """Packets the DROP rules in ``host``'s INPUT and OUTPUT chains have dropped so far."""
    total = 0
    for chain in ("INPUT", "OUTPUT"):
        done = host.run(["iptables", "-L", chain, "-n", "-v", "-x"], timeout_s=10)
        for line in done.stdout.splitlines():
            words = line.split()
            if len(words) > 2 and words[2] == "DROP" and words[0].isdigit():
                total += int(words[0])
    return total
