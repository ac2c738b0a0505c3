"""
The client address and the public base URL behind trusted proxies.
"""

from __future__ import annotations

import ipaddress
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from pxepilot.http.forwarded import client_address, public_base

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


def request(peer: str, *forwarded: str) -> DummyRequest:
    r = DummyRequest([b""])
    r.client = (IPv6Address if ":" in peer else IPv4Address)("TCP", peer, 1234)
    for value in forwarded:
        r.requestHeaders.addRawHeader(b"X-Forwarded-For", value.encode())
    return r


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("192.0.2.9", ["198.51.100.1"], "192.0.2.9"),  # untrusted peer: header ignored
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["203.0.113.66, 198.51.100.1"], "198.51.100.1"),  # spoofed head
        ("10.0.0.2", ["198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # two proxies
        ("10.0.0.2", ["198.51.100.1", "10.0.0.3"], "198.51.100.1"),  # repeated header
        ("10.0.0.2", ["10.0.0.4, 10.0.0.3"], "10.0.0.4"),  # only proxies
        ("10.0.0.2", ["garbage, 10.0.0.3"], "10.0.0.3"),  # malformed: stop at last hop
        ("2001:db8::1", ["2001:db9::7"], "2001:db9::7"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], "198.51.100.1"),  # v4-mapped proxy
        # A dual-stack listener's IPv4 client is its IPv4 address, proxied or not.
        ("::ffff:192.0.2.9", [], "192.0.2.9"),
        ("::ffff:10.0.0.2", ["::ffff:198.51.100.1"], "198.51.100.1"),
        # IPv6 in its one spelling, as the ledger keys it.
        ("2001:DB8:0::1", ["2001:db9:0:0::7"], "2001:db9::7"),
        ("fd00:77:0:0:0:0:0:1f2", [], "fd00:77::1f2"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], expected: str) -> None:
    """
    Only trusted peers may name the client; the chain is read from the right.
    """
    assert client_address(cast(IRequest, request(peer, *forwarded)), PROXIES) == expected


def test_no_trusted_proxies() -> None:
    """
    Without trusted proxies the peer is always the client.
    """
    assert client_address(cast(IRequest, request("10.0.0.2", "198.51.100.1")), ()) == "10.0.0.2"


class BaseRequest(DummyRequest):
    """
    A request for a route, as it arrived: its path so far, headers, whether over TLS,
    and the local address it came in on.
    """

    def __init__(
        self,
        prepath: list[bytes],
        peer: str = "192.0.2.9",
        headers: dict[str, list[str]] | None = None,
        secure: bool = False,
        local: Any = None,
    ) -> None:
        super().__init__([])
        self.prepath = prepath
        self.client = (IPv6Address if ":" in peer else IPv4Address)("TCP", peer, 1234)
        for name, values in (headers or {}).items():
            self.requestHeaders.setRawHeaders(name, values)
        self._secure = secure
        self._local = local if local is not None else IPv4Address("TCP", "192.0.2.1", 8080)

    def isSecure(self) -> bool:
        return self._secure

    def getHost(self) -> Any:
        return self._local


def base(request: BaseRequest, public_url: str | None = None, route_segments: int = 1) -> str:
    return public_base(cast(IRequest, request), public_url, PROXIES, route_segments)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Host": ["pxe.test"]}, "http://pxe.test/"),
        ({"Host": ["pxe.test:8080"]}, "http://pxe.test:8080/"),
        ({"Host": ["10.1.2.3:80"]}, "http://10.1.2.3:80/"),
        ({"Host": ["[2001:db8::5]:8080"]}, "http://[2001:db8::5]:8080/"),
        ({}, "http://192.0.2.1:8080/"),
        ({"Host": [""]}, "http://192.0.2.1:8080/"),
        ({"Host": ["evil host"]}, "http://192.0.2.1:8080/"),
        ({"Host": ["x${ip}"]}, "http://192.0.2.1:8080/"),
        ({"Host": ["pxe.test/menu.ipxe?"]}, "http://192.0.2.1:8080/"),
        ({"Host": ["pxe.test\nchain http://evil/"]}, "http://192.0.2.1:8080/"),
        ({"Host": ["user@pxe.test"]}, "http://192.0.2.1:8080/"),
        ({"Host": ["[::1"]}, "http://192.0.2.1:8080/"),
        ({"Host": ["pxe.test:"]}, "http://192.0.2.1:8080/"),
        # From an untrusted peer the forwarded headers are ignored.
        (
            {"Host": ["pxe.test"], "X-Forwarded-Host": ["proxy.test"]},
            "http://pxe.test/",
        ),
        (
            {"Host": ["pxe.test"], "X-Forwarded-Proto": ["https"]},
            "http://pxe.test/",
        ),
    ],
)
def test_base_from_the_host_header(headers: dict[str, list[str]], expected: str) -> None:
    """
    The Host header when it is a host name or address with an optional port; the
    address the connection came in on when it is missing or anything else.
    """
    assert base(BaseRequest([b"boot.ipxe"], headers=headers)) == expected


def test_base_over_tls() -> None:
    """
    A request over TLS gets an https URL.
    """
    request = BaseRequest([b"boot.ipxe"], headers={"Host": ["pxe.test"]}, secure=True)
    assert base(request) == "https://pxe.test/"


def test_base_on_an_ipv6_address() -> None:
    """
    Without a usable Host header, an IPv6 local address is bracketed.
    """
    request = BaseRequest([b"boot.ipxe"], local=IPv6Address("TCP", "2001:db8::1", 8080))
    assert base(request) == "http://[2001:db8::1]:8080/"


@pytest.mark.parametrize(
    ("local", "headers", "expected"),
    [
        # The Host header an IPv6 client sends is already bracketed.
        (
            IPv6Address("TCP", "fd00:77::1", 8080),
            {"Host": ["[fd00:77::1]:8080"]},
            "http://[fd00:77::1]:8080/",
        ),
        (IPv6Address("TCP", "fd00:77::1", 80), {"Host": ["[fd00:77::1]"]}, "http://[fd00:77::1]/"),
        # Unbracketed, it cannot be told from a port: the local address is used.
        (
            IPv6Address("TCP", "fd00:77::1", 8080),
            {"Host": ["fd00:77::1"]},
            "http://[fd00:77::1]:8080/",
        ),
        (
            IPv6Address("TCP", "fd00:77::1", 8080),
            {"Host": ["[fd00:77::zz]"]},
            "http://[fd00:77::1]:8080/",
        ),
        # A dual-stack listener's IPv4 connection: the IPv4 address, unbracketed.
        (IPv6Address("TCP", "::ffff:192.0.2.1", 8080), {}, "http://192.0.2.1:8080/"),
    ],
)
def test_base_for_an_ipv6_listener(
    local: IPv6Address, headers: dict[str, list[str]], expected: str
) -> None:
    """
    Behind an IPv6 or dual-stack listener the base URL brackets an IPv6 host and
    names an IPv4 one as IPv4.
    """
    assert base(BaseRequest([b"boot.ipxe"], headers=headers, local=local)) == expected


def test_public_url_wins() -> None:
    """
    A configured public URL is used as it is, whatever the request says.
    """
    request = BaseRequest(
        [b"provisioning", b"boot.ipxe"],
        peer="10.0.0.2",
        headers={"Host": ["pxe.test"], "X-Forwarded-Host": ["proxy.test"]},
        secure=True,
    )
    assert base(request, "http://boot.example.com/pxe/") == "http://boot.example.com/pxe/"


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("10.0.0.2", {"X-Forwarded-Host": ["proxy.test"]}, "http://proxy.test/"),
        ("10.0.0.2", {"X-Forwarded-Proto": ["https"]}, "https://pxe.test/"),
        (
            "10.0.0.2",
            {"X-Forwarded-Host": ["proxy.test:8443"], "X-Forwarded-Proto": ["https"]},
            "https://proxy.test:8443/",
        ),
        # The last value is the one the nearest proxy added.
        ("10.0.0.2", {"X-Forwarded-Host": ["spoofed.test, proxy.test"]}, "http://proxy.test/"),
        ("10.0.0.2", {"X-Forwarded-Host": ["spoofed.test", "proxy.test"]}, "http://proxy.test/"),
        ("10.0.0.2", {"X-Forwarded-Proto": ["http, https"]}, "https://pxe.test/"),
        ("10.0.0.2", {"X-Forwarded-Proto": ["ftp"]}, "http://pxe.test/"),
        # Schemes are case-insensitive (RFC 3986).
        ("10.0.0.2", {"X-Forwarded-Proto": ["HTTPS"]}, "https://pxe.test/"),
        ("10.0.0.2", {"X-Forwarded-Host": [""]}, "http://pxe.test/"),
        ("10.0.0.2", {"X-Forwarded-Host": ["evil ${x}"]}, "http://192.0.2.1:8080/"),
        ("::ffff:10.0.0.2", {"X-Forwarded-Host": ["proxy.test"]}, "http://proxy.test/"),
        ("2001:db8::7", {"X-Forwarded-Proto": ["https"]}, "https://pxe.test/"),
        ("192.0.2.9", {"X-Forwarded-Host": ["proxy.test"]}, "http://pxe.test/"),
        ("2001:db9::7", {"X-Forwarded-Proto": ["https"]}, "http://pxe.test/"),
        # A proxy may name pxe-pilot by an IPv6 address, in brackets only.
        ("2001:db8::7", {"X-Forwarded-Host": ["[fd00::1]:8443"]}, "http://[fd00::1]:8443/"),
        ("2001:db8::7", {"X-Forwarded-Host": ["fd00::1"]}, "http://192.0.2.1:8080/"),
    ],
)
def test_base_from_forwarded_headers(
    peer: str, headers: dict[str, list[str]], expected: str
) -> None:
    """
    Only a trusted proxy may name the host and scheme the client used; a malformed host
    is refused from it too.
    """
    request = BaseRequest([b"boot.ipxe"], peer=peer, headers={"Host": ["pxe.test"], **headers})
    assert base(request) == expected


@pytest.mark.parametrize(
    ("prepath", "route_segments", "expected"),
    [
        ([b"boot.ipxe"], 1, "http://pxe.test/"),
        ([b"pxe", b"boot.ipxe"], 1, "http://pxe.test/pxe/"),
        ([b"provisioning", b"pxe", b"menu.ipxe"], 1, "http://pxe.test/provisioning/pxe/"),
        ([b"provisioning", b"pxe", b"hosts", b"aa-bb"], 2, "http://pxe.test/provisioning/pxe/"),
        ([b"pxe", b"boot.ipxe"], 0, "http://pxe.test/pxe/boot.ipxe/"),
        ([b"boot.ipxe"], 3, "http://pxe.test/"),
        ([], 1, "http://pxe.test/"),
        ([b"a b", b"${x}", b"boot.ipxe"], 1, "http://pxe.test/a%20b/%24%7Bx%7D/"),
        ([b"caf\xc3\xa9", b"boot.ipxe"], 1, "http://pxe.test/caf%C3%A9/"),
    ],
)
def test_base_keeps_the_mount_prefix(
    prepath: list[bytes], route_segments: int, expected: str
) -> None:
    """
    Mounted under another path, the base keeps it (less the route's own segments),
    quoted so that nothing in it is expanded by iPXE.
    """
    request = BaseRequest(prepath, headers={"Host": ["pxe.test"]})
    assert base(request, route_segments=route_segments) == expected
