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
        self._checked_addresses(host, 0, where, resolve_listed=False)

    def checked_address(self, host: str, port: int, where: str = "") -> str:
        """Resolve ``host`` once and return the address to connect to (IPv4 first).

        The address returned is one of those the check saw: a name whose answer changes
        between a check and a connect (DNS rebinding) cannot slip past the allow-list, because
        there is no second lookup. Raises PermissionDenied as ``check_host`` does, and
        OSError when a host allowed by name does not resolve.
        """
        addresses = self._checked_addresses(host, port, where, resolve_listed=True)
        if not addresses:
            raise OSError(f"{host!r} did not resolve to any address")
        return addresses[0]

    def _checked_addresses(
        self, host: str, port: int, where: str, resolve_listed: bool
    ) -> list[str]:
        """The addresses ``host`` stands for, IPv4 first, once they are known to be allowed.
        A host allowed by name may resolve to anything: it is looked up only when
        ``resolve_listed`` (and a failed lookup then raises OSError)."""
        name = host.strip("[]").lower().rstrip(".")
        if _is_ip(name):
            if self.allows_ip(name):
                return [name]
        elif name in self._names:
            return _resolve(name, port, strict=True) if resolve_listed else []
        else:
            addresses = _resolve(name, port, strict=False)
            if addresses and all(self.allows_ip(a) for a in addresses):
                return addresses
        place = f" ({where})" if where else ""
        raise PermissionDenied(
            f"target host {host!r}{place} is not in the allow-list ({', '.join(self.entries)}); "
            "start the master and workers with --allow-target to allow it"
        )


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _resolve(name: str, port: int, strict: bool) -> list[str]:
    """Every address ``name`` resolves to, IPv4 first, in one lookup. A failed lookup raises
    OSError when ``strict``, else gives no address."""
    try:
        infos = socket.getaddrinfo(name, port or None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
        if strict:
            raise OSError(str(exc)) from None
        return []
    seen: dict[str, int] = {}
    for family, *_, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), 0 if family == socket.AF_INET else 1)
    return sorted(seen, key=lambda a: seen[a])
