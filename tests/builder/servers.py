"""
Servers for builder tests: an HTTP server of ISOs (Range requests, SHA256SUMS,
connections that drop part-way), and a TLS server with a self-signed certificate, the
answer server whose certificate the builder pins.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request


class IsoServer(Resource):
    """
    Serves C{files} by name. Records every request's Range header; the first
    C{drops} responses of a file stop after C{drop_after} bytes and lose the connection.
    Every request's path is in C{requests}, in order.

    @ivar ignore_range: Answer Range requests with the whole file (200), as some
        servers do.
    """

    isLeaf = True

    def __init__(
        self,
        files: dict[str, bytes],
        drops: int = 0,
        drop_after: int = 0,
        ignore_range: bool = False,
        status: int = 200,
    ) -> None:
        super().__init__()
        self.files = files
        self.drops = drops
        self.drop_after = drop_after
        self.ignore_range = ignore_range
        self.status = status
        self.ranges: list[str | None] = []
        self.requests: list[str] = []

    def render_GET(self, request: Request) -> Any:
        self.requests.append(request.path.decode())
        name = request.path.decode().rsplit("/", 1)[-1]
        data = self.files.get(name)
        if data is None:
            request.setResponseCode(404)
            return b"not found"
        if self.status != 200 and name != "SHA256SUMS":
            request.setResponseCode(self.status)
            return b"server error"
        header = request.getHeader(b"range")
        text = header.decode() if header is not None else None
        if name != "SHA256SUMS":
            self.ranges.append(text)
        start = 0
        found = re.fullmatch(r"bytes=(\d+)-", text or "")
        if found and not self.ignore_range:
            start = int(found.group(1))
            if start >= len(data):
                request.setResponseCode(416)
                return b""
            request.setResponseCode(206)
            request.setHeader(b"content-range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        request.setHeader(b"content-length", str(len(body)).encode())
        if name != "SHA256SUMS" and self.drops > 0 and self.drop_after < len(body):
            self.drops -= 1
            request.write(body[: self.drop_after])
            # Abort, not close: a closing channel waits for the response to end. What
            # was written goes out first.
            transport: Any = request.channel.transport
            transport.unregisterProducer()
            transport.loseConnection()
            return NOT_DONE_YET
        return body


@frozen
class Certificate:
    """
    A self-signed certificate and its key, as files a TLS server loads.

    @ivar der: The certificate's DER bytes, which the installer fingerprints.
    """

    der: bytes
    certificate_file: Path
    key_file: Path


def self_signed(directory: Path, name: str = "answers.test") -> Certificate:
    """
    A new ECDSA P-256 certificate for C{name}, signed by its own key, written to
    C{directory}.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate_file = directory / "server.crt"
    key_file = directory / "server.key"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(
        certificate.public_bytes(serialization.Encoding.DER), certificate_file, key_file
    )


class TLSServer:
    """
    Completes TLS handshakes on 127.0.0.1 with one certificate, in a thread, and closes
    each connection: all the builder needs of an answer server.

    @ivar port: The port it listens on.
    @ivar handshakes: How many handshakes completed.
    """

    def __init__(self, certificate: Certificate) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate.certificate_file, certificate.key_file)
        self._socket = socket.create_server(("127.0.0.1", 0))
        # Short, so that stop() is noticed between connections.
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self.handshakes = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            connection.settimeout(5)
            # The client hangs up as soon as it has the certificate; whatever that
            # does to this side of the handshake is of no interest.
            with (
                contextlib.suppress(OSError),
                self._context.wrap_socket(connection, server_side=True),
            ):
                self.handshakes += 1
            connection.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._socket.close()


@contextlib.contextmanager
def tls_server(certificate: Certificate) -> Iterator[TLSServer]:
    """
    A running L{TLSServer}, stopped afterwards.
    """
    server = TLSServer(certificate)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """
    A port on 127.0.0.1 where nothing listens: bound, so that nothing else takes it
    meanwhile, but not listening, so that connections are refused.
    """
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield reserved.getsockname()[1]
