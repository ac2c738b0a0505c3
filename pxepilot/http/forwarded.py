"""
Who is asking: the peer address, or the client named in C{X-Forwarded-For} when the
peer is a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import quote

from twisted.web.iweb import IRequest

from pxepilot.address import plain_address, url_host
from pxepilot.boot.ipxe import valid_host
from pxepilot.config import IPNetwork


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    if not trusted:
        return False
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
    # A dual-stack listener's IPv4 peer (::ffff:10.0.0.5) is the IPv4 address the
    # ledger, the logs and the limits know it by.
    peer = plain_address(peer)
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
        client = plain_address(hop)
        if not _is_trusted(hop, trusted):
            return client
    return client


def _last(request: IRequest, name: bytes) -> str | None:
    values = request.requestHeaders.getRawHeaders(name, [])
    if not values:
        return None
    last = values[-1].decode("latin-1").split(",")[-1].strip()
    return last or None


def public_base(
    request: IRequest,
    public_url: str | None,
    trusted: Sequence[IPNetwork],
    route_segments: int = 1,
) -> str:
    """
    The base URL (ending in C{/}) under which the client reached pxe-pilot's routes.

    The configured public URL wins; otherwise the C{Host} header (and C{X-Forwarded-Proto}
    and C{X-Forwarded-Host}, from trusted proxies only), or the address the connection
    came in on when the header is missing or malformed; plus the prefix pxe-pilot is
    mounted under (the request's path so far, less the route's own C{route_segments}).
    """
    if public_url:
        return public_url
    scheme = "https" if request.isSecure() else "http"
    header = request.getHeader(b"host")
    host = header.decode("latin-1") if header is not None else None
    peer = getattr(request.getClientAddress(), "host", None)
    if isinstance(peer, str) and _is_trusted(peer, trusted):
        forwarded_proto = (_last(request, b"x-forwarded-proto") or "").lower()
        if forwarded_proto in ("http", "https"):
            scheme = forwarded_proto
        host = _last(request, b"x-forwarded-host") or host
    if host is None or not valid_host(host):
        local = request.getHost()
        address = plain_address(str(getattr(local, "host", "localhost")))
        host = f"{url_host(address)}:{local.port}"
    prepath: list[bytes] = getattr(request, "prepath", [])
    prepath = prepath[: max(0, len(prepath) - route_segments)]
    prefix = "".join(f"{quote(segment.decode('utf-8', 'replace'))}/" for segment in prepath)
    return f"{scheme}://{host}/{prefix}"


def is_secure(request: IRequest, trusted: Sequence[IPNetwork]) -> bool:
    """
    Whether the client reached pxe-pilot over TLS: the connection is, or a trusted
    proxy says (C{X-Forwarded-Proto: https}) that it terminated TLS for it.
    """
    if request.isSecure():
        return True
    peer = getattr(request.getClientAddress(), "host", None)
    if not isinstance(peer, str) or not _is_trusted(peer, trusted):
        return False
    return (_last(request, b"x-forwarded-proto") or "").lower() == "https"
