"""
Where machines are told pxe-pilot's HTTP and HTTPS sides are.
"""

from __future__ import annotations

import pytest

from pxepilot.address import HTTPAddress


@pytest.mark.parametrize(
    ("public_url", "host", "expected"),
    [
        (None, "192.0.2.10", "https://192.0.2.10:8443/"),
        (None, "fd00::1", "https://[fd00::1]:8443/"),
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
