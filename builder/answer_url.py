"""
Whether an answer URL can be the one installers use: the URL is baked into the ISO and
only tried once a machine has booted the installer, minutes later and on another
machine, so a URL that cannot reach pxe-pilot from there is caught here instead.
"""

from __future__ import annotations

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


def _host_problem(host: str) -> str | None:
    name = host.lower().rstrip(".")
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return f"its host {host} is loopback: each installer would ask itself"
    address = _address(host)
    if address is None:
        return None
    if address.is_unspecified:
        return f"its host {host} is the unspecified address, which no machine can connect to"
    if address.is_loopback:
        return f"its host {host} is loopback: each installer would ask itself"
    if address.is_link_local:
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
