"""
Pinning the answer server's certificate: the C{cert_fingerprint} of
C{/auto-installer-mode.toml}, given with C{--cert-fingerprint} or taken from the server
itself.

The installer trusts an HTTPS answer server by one thing only: the SHA-256 of the DER
certificate it presents, compared with the fingerprint baked into the ISO. Names, chain
and expiry are not checked. So the builder fetches the certificate the same way, trusting
nothing, and pins whatever the server presents; from then on the asset's installers talk
to that certificate and no other.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl

from attrs import frozen
from hyperlink import DecodedURL

from builder.pipeline import BuildError

#: Seconds to connect and finish the handshake: a wrong URL fails in seconds.
TIMEOUT = 10.0

SERVER = "server"
OPTION = "option"

_HEX = re.compile(r"[0-9A-F]{64}")


@frozen
class Pin:
    """
    The one certificate an asset's installers accept from the answer server.

    @ivar fingerprint: The SHA-256 of its DER bytes, upper-case pairs joined by colons.
    @ivar pinned_from: L{SERVER} when fetched from the answer server, L{OPTION} when
        given with C{--cert-fingerprint}.
    """

    fingerprint: str
    pinned_from: str


def fingerprint(der: bytes) -> str:
    """
    The installer's fingerprint of a certificate: the SHA-256 of its DER bytes as
    upper-case pairs joined by colons, as C{openssl x509 -fingerprint -sha256} prints.
    """
    return _pairs(hashlib.sha256(der).hexdigest().upper())


def normalise_fingerprint(text: str) -> str:
    """
    C{text} in the form L{fingerprint} returns. The installer drops the colons and reads
    the rest as hex in any case, so every such spelling of the same digest is accepted.

    @raise ValueError: when C{text} is not 32 bytes of hex.
    """
    digits = text.strip().replace(":", "").upper()
    if not _HEX.fullmatch(digits):
        raise ValueError(
            "a certificate fingerprint is the SHA-256 of the certificate: 64 hex digits, "
            "with or without colons"
        )
    return _pairs(digits)


def _pairs(digits: str) -> str:
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def answer_server(url: str) -> tuple[str, int] | None:
    """
    The host and port to pin for an answer URL (port 443 unless it names one), or
    L{None} for an C{http://} URL, which has no certificate.
    """
    parsed = DecodedURL.from_text(url)
    if parsed.scheme != "https":
        return None
    return parsed.host, parsed.port or 443


def fetch_certificate(host: str, port: int, timeout: float = TIMEOUT) -> bytes:
    """
    The DER certificate the server at C{host}, C{port} presents, verifying nothing,
    exactly as the installer will see it. Blocks: run it in a thread.

    The standard library does this in a dozen lines with no dependency: Twisted's TLS
    client would need pyOpenSSL, which the builder does not otherwise install, and a
    verify callback to accept every certificate.

    @raise OSError: (L{ssl.SSLError}, L{TimeoutError}, L{socket.gaierror}) when no TLS
        connection could be made within C{timeout} seconds.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # The installer speaks TLS 1.2 and 1.3 only: a server it cannot talk to fails here.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        # The name is sent for SNI, as the installer sends it: a server with one
        # certificate per name presents the one the installer will get.
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return der


def cause(error: OSError, host: str, timeout: float = TIMEOUT) -> str:
    """
    Why L{fetch_certificate} failed, in a few words.
    """
    if isinstance(error, TimeoutError):
        return f"no TLS handshake within {timeout:g} s"
    if isinstance(error, ssl.SSLError):
        # OpenSSL's reason is a constant such as WRONG_VERSION_NUMBER (a plain HTTP
        # server): said in words, it reads as a sentence.
        words = error.reason.lower().replace("_", " ") if error.reason else str(error)
        return f"TLS handshake failed: {words}"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {host}: {error.strerror}"
    return error.strerror or str(error) or type(error).__name__


def server_pin(url: str, timeout: float = TIMEOUT) -> Pin:
    """
    Pin the certificate the answer server at the C{https://} URL C{url} presents.
    Blocks: run it in a thread.

    @raise BuildError: when the server cannot be reached or does not complete a TLS
        handshake; the message names the URL, the cause and the way around.
    """
    address = answer_server(url)
    assert address is not None, "only an https:// URL has a certificate to pin"
    host, port = address
    try:
        der = fetch_certificate(host, port, timeout)
    except OSError as e:
        raise BuildError(
            f"cannot pin the certificate of {url}: {cause(e, host, timeout)}; to build "
            "while the server is down, give its fingerprint with --cert-fingerprint"
        ) from None
    return Pin(fingerprint(der), SERVER)


def host_port(url: str) -> str:
    """
    C{HOST:PORT} of an C{https://} URL, with an IPv6 address in brackets.
    """
    address = answer_server(url)
    assert address is not None
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
