"""
Who is asking: the peer address, or the client named in C{X-Forwarded-For} when the
peer is a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from twisted.web.iweb import IRequest

from pxepilot.config import IPNetwork


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def client_address(request: IRequest, trusted: Sequence[IPNetwork]) -> str:
    """
    The address of the client behind C{request}.

    Only a peer in C{trusted} may name another client. The C{X-Forwarded-For} chain is
    read from the right: every trusted hop is skipped, and the first address that is not
    trusted is the client. A malformed entry ends the walk at the last trusted hop.
    """
    peer = getattr(request.getClientAddress(), "host", None)
    if not isinstance(peer, str):
        return "unknown"
    if not _is_trusted(peer, trusted):
        return peer
    chain: list[str] = [
        hop.strip()
        for header in request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])
        for hop in header.decode("latin-1").split(",")
        if hop.strip()
    ]
    client: str = peer
    for hop in reversed(chain):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client
        client = hop
        if not _is_trusted(hop, trusted):
            return hop
    return client
