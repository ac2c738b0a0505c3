"""
Pinning the answer server's certificate: the fingerprint's spelling, where the
certificate is fetched from, and how a failure to fetch it reads.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from builder.pin import (
    SERVER,
    Pin,
    answer_server,
    fetch_certificate,
    fingerprint,
    host_port,
    normalise_fingerprint,
    server_pin,
)
from builder.pipeline import BuildError
from tests.builder.servers import closed_port, self_signed, tls_server

DIGEST = "0123456789abcdef" * 4
PAIRS = ":".join(DIGEST[i : i + 2] for i in range(0, 64, 2)).upper()


def test_fingerprint_is_the_sha256_of_the_der(tmp_path: Path) -> None:
    """
    The fingerprint is what cryptography (and openssl) computes over the DER
    certificate, as upper-case pairs joined by colons.
    """
    certificate = self_signed(tmp_path)
    digest = x509.load_der_x509_certificate(certificate.der).fingerprint(hashes.SHA256())
    assert fingerprint(certificate.der) == ":".join(f"{b:02X}" for b in digest)


@pytest.mark.parametrize(
    "text", [DIGEST, DIGEST.upper(), PAIRS, PAIRS.lower(), f" {PAIRS}\n", PAIRS[:10] + DIGEST[7:]]
)
def test_fingerprint_spellings(text: str) -> None:
    """
    Colons or none, any case, surrounding white space: the installer reads them all as
    the same digest, and so they are normalised to one spelling.
    """
    assert normalise_fingerprint(text) == PAIRS


@pytest.mark.parametrize(
    "text", ["", DIGEST[:62], DIGEST + "01", "zz" + DIGEST[2:], PAIRS.replace(":", "-")]
)
def test_not_a_fingerprint(text: str) -> None:
    """
    Anything but 32 bytes of hex is refused, with a message that says what is expected.
    """
    with pytest.raises(ValueError, match="64 hex digits, with or without colons"):
        normalise_fingerprint(text)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("https://answers.example/answer", ("answers.example", 443)),
        ("https://192.0.2.10:8443/answer", ("192.0.2.10", 8443)),
        ("https://[2001:db8::10]:8443/answer", ("2001:db8::10", 8443)),
        ("http://192.0.2.10:8443/answer", None),
    ],
)
def test_answer_server(url: str, address: tuple[str, int] | None) -> None:
    """
    An https:// URL's host and port (443 by default) are pinned; an http:// URL has no
    certificate to pin.
    """
    assert answer_server(url) == address


def test_host_port_brackets_ipv6() -> None:
    """
    An IPv6 address is printed in brackets, so that its port stands apart.
    """
    assert host_port("https://[2001:db8::10]/answer") == "[2001:db8::10]:443"
    assert host_port("https://192.0.2.10:8443/answer") == "192.0.2.10:8443"


def test_fetches_the_certificate_trusting_nothing(tmp_path: Path) -> None:
    """
    A self-signed certificate for another name is fetched all the same, byte for byte:
    the installer checks neither chain nor name, so neither does the builder.
    """
    certificate = self_signed(tmp_path, name="not-this-host.test")
    with tls_server(certificate) as server:
        assert fetch_certificate("127.0.0.1", server.port) == certificate.der
        url = f"https://127.0.0.1:{server.port}/answer"
        assert server_pin(url) == Pin(fingerprint(certificate.der), SERVER)


def test_refused() -> None:
    """
    Nothing listening: the error names the URL, the cause, and --cert-fingerprint.
    """
    with closed_port() as port:
        url = f"https://127.0.0.1:{port}/answer"
        with pytest.raises(BuildError) as caught:
            server_pin(url)
    assert str(caught.value) == (
        f"cannot pin the certificate of {url}: Connection refused; to build while the "
        "server is down, give its fingerprint with --cert-fingerprint"
    )


def test_silent_server_times_out() -> None:
    """
    A server that accepts the connection but never answers the handshake is given up
    on after the timeout, not waited for.
    """
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"https://127.0.0.1:{silent.getsockname()[1]}/answer"
        with pytest.raises(BuildError, match=r"no TLS handshake within 0\.3 s"):
            server_pin(url, timeout=0.3)
