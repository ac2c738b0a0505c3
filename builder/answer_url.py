"""
Whether an answer URL can be the one installers use: the URL is baked into the ISO and
only tried once a machine has booted the installer, minutes later and on another
machine, so a URL that cannot reach pxe-pilot from there is caught here instead.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket

from hyperlink import DecodedURL

#: The last path segment of pxe-pilot's answer route: C{/answer}, or C{/PREFIX/answer}
#: when pxe-pilot is embedded under a prefix.
ROUTE = "answer"

# Names every resolver maps to the machine itself (RFC 6761 and Debian's /etc/hosts).
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
_DOTTED = re.compile(r"[0-9.]+")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _DOTTED.fullmatch(host):
            return None
        # The short forms inet_aton accepts (127.1), which HTTP clients accept too.
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Unreachable(enum.Enum):
    """
    Why no installer can reach a host: it names the machine itself (C{localhost}), is a
    loopback address, the unspecified address, or a link-local one.
    """

    LOOPBACK_NAME = "loopback name"
    LOOPBACK = "loopback"
    UNSPECIFIED = "unspecified"
    LINK_LOCAL = "link-local"


def unreachable(host: str) -> Unreachable | None:
    """
    Why C{host}, as an answer URL names it, cannot be pxe-pilot as an installer on
    another machine reaches it; L{None} when nothing says so (names other than the
    machine's own are never resolved). The server's assets health asks the same.
    """
    name = host.lower().rstrip(".")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return Unreachable.LOOPBACK_NAME
    address = _address(host)
    if address is None:
        return None
    if address.is_unspecified:
        return Unreachable.UNSPECIFIED
    if address.is_loopback:
        return Unreachable.LOOPBACK
    if address.is_link_local:
        return Unreachable.LINK_LOCAL
    return None


def _host_problem(host: str) -> str | None:
    kind = unreachable(host)
    if kind in (Unreachable.LOOPBACK_NAME, Unreachable.LOOPBACK):
        return f"its host {host} is loopback: each installer would ask itself"
    if kind is Unreachable.UNSPECIFIED:
        return f"its host {host} is the unspecified address, which no machine can connect to"
    if kind is Unreachable.LINK_LOCAL:
        return (
            f"its host {host} is link-local, which an installer with an address from DHCP "
            "does not reach"
        )
    return None


def problems(url: str) -> list[str]:
    """
    What makes C{url} unlikely to be pxe-pilot's answer route as the installed machines
    reach it: a loopback host (the installer would ask itself), a link-local or
    unspecified one, or a path that is not pxe-pilot's C{/answer}.

    @param url: An C{http://} or C{https://} URL.
    @return: One short reason for each problem; empty when there is none.
    """
    parsed = DecodedURL.from_text(url)
    found = []
    host = _host_problem(parsed.host)
    if host is not None:
        found.append(host)
    path = parsed.path
    if not path or path[-1] != ROUTE:
        shown = "/" + "/".join(path) if path else "empty"
        found.append(f"its path is {shown}, not pxe-pilot's /{ROUTE}")
    return found
