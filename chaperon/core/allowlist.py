"""Which targets a cluster may send load to.

The master checks every target host of a load test against its allow-list before it stores
the test (``PERMISSION_DENIED`` naming the host), and each worker checks again before it
connects, so a cluster cannot be aimed at hosts its operators did not allow. Entries are IP
addresses or CIDR networks (``10.1.0.0/16``, ``::1``) or host names (``api.internal``,
matched exactly, case-insensitive). A host name not listed by name is allowed only when every
address it resolves to is inside an allowed network. The default is loopback only.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from chaperon.core.errors import PermissionDenied

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1/128", "localhost")


class AllowList:
    def __init__(self, entries: Iterable[str] | None = None) -> None:
        self.entries = list(entries) if entries else list(LOOPBACK)
        self._networks: list[IPNetwork] = []
        self._names: set[str] = set()
        for entry in self.entries:
            text = entry.strip()
            try:
                self._networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                if not text or any(c in text for c in "/ \t\r\n"):
                    raise ValueError(
                        f"allow-list entry {entry!r} is not a host, IP or CIDR"
                    ) from None
                self._names.add(text.lower().rstrip("."))

    def __repr__(self) -> str:
        return f"AllowList({', '.join(self.entries)})"

    def allows_ip(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        return any(addr in net for net in self._networks if net.version == addr.version)

    def check_host(self, host: str, where: str = "") -> None:
        """Raise PermissionDenied unless ``host`` (name or IP literal) is allowed."""
        name = host.strip("[]").lower().rstrip(".")
        if name in self._names:
            return
        try:
            ipaddress.ip_address(name.split("%", 1)[0])
            is_ip = True
        except ValueError:
            is_ip = False
        if is_ip:
            if self.allows_ip(name):
                return
            addresses = [name]
        else:
            try:
                infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except OSError:
                infos = []
            addresses = sorted({str(info[4][0]) for info in infos})
            if addresses and all(self.allows_ip(a) for a in addresses):
                return
        place = f" ({where})" if where else ""
        raise PermissionDenied(
            f"target host {host!r}{place} is not in the allow-list ({', '.join(self.entries)}); "
            "start the master and workers with --allow-target to allow it"
        )
