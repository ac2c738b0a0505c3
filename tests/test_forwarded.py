"""
The client address behind trusted proxies.
"""

from __future__ import annotations

import ipaddress
from typing import cast

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from pxepilot.http.forwarded import client_address

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
