"""
Where machines are told pxe-pilot's HTTP and HTTPS sides are.
"""

from __future__ import annotations

import pytest

from pxepilot.address import HTTPAddress, plain_address, url_host


@pytest.mark.parametrize(
    ("public_url", "host", "expected"),
    [
        (None, "192.0.2.10", "https://192.0.2.10:8443/"),
        (None, "fd00::1", "https://[fd00::1]:8443/"),
        # As Twisted reads it from a Host header: already in brackets.
        (None, "[fd00::1]", "https://[fd00::1]:8443/"),
        ("http://[fd00:77::1]:8080/", "192.0.2.10", "https://[fd00:77::1]:8443/"),
        ("http://pxe.example.com:8080/", "192.0.2.10", "https://pxe.example.com:8443/"),
        ("https://pxe.example.com/", "192.0.2.10", "https://pxe.example.com/"),
    ],
)
def test_https_base_url(public_url: str | None, host: str, expected: str) -> None:
    """
    The HTTPS URL uses the host the machine reached, or the public URL's host, on the
    HTTPS port; a public URL that is itself HTTPS is used as it is.
    """
    assert HTTPAddress(public_url, 8080, None, 8443).https_base_url(host) == expected


def test_https_base_url_follows_the_listener() -> None:
    """
    Once HTTPS listens, its real port is named; without HTTPS there is no URL.
    """
    address = HTTPAddress(None, 8080, None, 8443)
    address.https_listening(44321)
    assert address.https_base_url("192.0.2.10") == "https://192.0.2.10:44321/"
    assert HTTPAddress(None, 8080, None, 0).https_base_url("192.0.2.10") is None


@pytest.mark.parametrize(
    ("public_url", "elsewhere"),
    [
        (None, False),
        ("http://pxe.example.com:8080/", False),
        ("https://pxe.example.com:8443/", False),
        ("https://pxe.example.com/", True),
        ("https://proxy.example.com:9443/pxe/", True),
    ],
)
def test_tls_terminated_elsewhere(public_url: str | None, elsewhere: bool) -> None:
    """
    An HTTPS public URL on another port than pxe-pilot's HTTPS port is a proxy that
    terminates TLS: its certificate, not pxe-pilot's, is what machines meet.
    """
    assert HTTPAddress(public_url, 8080, None, 8443).tls_elsewhere() is elsewhere


@pytest.mark.parametrize(
    ("given", "plain"),
    [
        ("192.0.2.5", "192.0.2.5"),
        # An IPv4 client of a dual-stack socket.
        ("::ffff:192.0.2.5", "192.0.2.5"),
        ("::FFFF:c000:0205", "192.0.2.5"),
        # IPv6 in one spelling, without a scope.
        ("FD00:77:0:0:0:0:0:1F2", "fd00:77::1f2"),
        ("fe80::1%eth0", "fe80::1"),
        ("::1", "::1"),
        # Not an address: as it is.
        ("unknown", "unknown"),
        ("?", "?"),
        ("", ""),
    ],
)
def test_plain_address(given: str, plain: str) -> None:
    """
    Client addresses are kept and shown in one form: IPv4 as IPv4 however it arrived,
    IPv6 compressed and in lower case.
    """
    assert plain_address(given) == plain


@pytest.mark.parametrize(
    ("host", "in_url"),
    [
        ("192.0.2.10", "192.0.2.10"),
        ("pxe.example.com", "pxe.example.com"),
        ("fd00:77::1", "[fd00:77::1]"),
        ("[fd00:77::1]", "[fd00:77::1]"),
    ],
)
def test_url_host(host: str, in_url: str) -> None:
    """
    An IPv6 address goes into a URL in brackets, once.
    """
    assert url_host(host) == in_url


@pytest.mark.parametrize(
    ("public_url", "interface", "host", "base"),
    [
        (None, "fd00:77::1", "fd00:77::1", "http://[fd00:77::1]:8080/"),
        (None, "::", "fd00:77::1", "http://[fd00:77::1]:8080/"),
        (None, "::", "192.0.2.10", "http://192.0.2.10:8080/"),
        ("http://[fd00:77::1]:8080/", "::", "192.0.2.10", "http://[fd00:77::1]:8080/"),
    ],
)
def test_base_url_for_ipv6(public_url: str | None, interface: str, host: str, base: str) -> None:
    """
    The base URL a machine is told brackets an IPv6 host; a public URL with an IPv6
    address is used as it is.
    """
    assert HTTPAddress(public_url, 8080, interface).base_url(host) == base


@pytest.mark.parametrize(
    ("public_url", "interface", "ipv4", "ipv6"),
    [
        (None, None, None, None),
        (None, "192.0.2.10", "192.0.2.10", None),
        (None, "fd00:77::1", None, "fd00:77::1"),
        # Every address: the system says which one a request came to, not this.
        (None, "::", None, None),
        ("http://[fd00:77::1]:8080/", "::", None, "fd00:77::1"),
        ("http://192.0.2.10:8080/", "::", "192.0.2.10", None),
        ("http://pxe.example.com:8080/", None, None, None),
    ],
)
def test_own_addresses(
    public_url: str | None, interface: str | None, ipv4: str | None, ipv6: str | None
) -> None:
    """
    pxe-pilot's own address of each family, where the system cannot say: the bound
    address, else the public URL's host when it is an address of that family.
    """
    address = HTTPAddress(public_url, 8080, interface)
    assert (address.own_ipv4(), address.own_ipv6()) == (ipv4, ipv6)
