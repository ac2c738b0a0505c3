"""
The builder's HTTP client against real servers on 127.0.0.1: whole bodies arrive over
HTTP and HTTPS, on connections that read half a mebibyte from the socket at a time.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import StringTransport
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data
from zope.interface import implementer

import builder.http_client
from builder.http_client import READ_SIZE, LargeReadEndpoints, download_client, read_large
from pxepilot.tls import new_self_signed

BODY = os.urandom(3 << 20)


def site() -> Site:
    root = Resource()
    root.putChild(b"iso", Data(BODY, "application/octet-stream"))
    return Site(root)


@implementer(IPolicyForHTTPS)
class TrustOnly:
    """
    Trusts one certificate, for 127.0.0.1.
    """

    def __init__(self, certificate_pem: bytes) -> None:
        self._root = ssl.Certificate.loadPEM(certificate_pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.optionsForClientTLS(hostname.decode(), trustRoot=self._root)


@pytest.fixture
def connected(monkeypatch: pytest.MonkeyPatch) -> list[IProtocol]:
    """
    The protocols the client's connections were made for.
    """
    protocols: list[IProtocol] = []

    def recorded(protocol: IProtocol) -> IProtocol:
        protocols.append(protocol)
        return read_large(protocol)

    monkeypatch.setattr(builder.http_client, "read_large", recorded)
    return protocols


def socket_connection(protocol: IProtocol) -> Any:
    transport: Any = getattr(protocol, "transport", None)
    while not hasattr(transport, "socket"):
        transport = transport.transport
    return transport


@pytest_twisted.ensureDeferred
async def test_a_download_over_http_reads_half_a_mebibyte_at_a_time(
    connected: list[IProtocol],
) -> None:
    from twisted.internet import reactor

    listening: Any = reactor
    port: Any = listening.listenTCP(0, site(), interface="127.0.0.1")
    try:
        client = download_client(reactor)
        response = await client.get(f"http://127.0.0.1:{port.getHost().port}/iso")
        assert socket_connection(connected[0]).bufferSize == READ_SIZE
        assert await response.content() == BODY
    finally:
        await maybeDeferred(port.stopListening)


@pytest_twisted.ensureDeferred
async def test_a_download_over_https_reads_half_a_mebibyte_at_a_time(
    connected: list[IProtocol],
) -> None:
    from twisted.internet import reactor

    certificate, key = new_self_signed(["127.0.0.1"], datetime.now(UTC))
    server = ssl.PrivateCertificate.loadPEM(key + certificate)
    listening: Any = reactor
    port: Any = listening.listenSSL(0, site(), server.options(), interface="127.0.0.1")
    try:
        client = download_client(reactor)
        # Twisted's agent trusts the system's CAs only: this certificate is refused.
        with pytest.raises(Exception, match="certificate verify failed"):
            await client.get(f"https://127.0.0.1:{port.getHost().port}/iso")
        agent = Agent.usingEndpointFactory(
            reactor,
            LargeReadEndpoints(reactor, TrustOnly(certificate)),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        response = await HTTPClient(agent).get(f"https://127.0.0.1:{port.getHost().port}/iso")
        assert await response.content() == BODY
        # Through TLS, the socket connection under it reads as much at a time.
        assert socket_connection(connected[-1]).bufferSize == READ_SIZE
    finally:
        await maybeDeferred(port.stopListening)


def test_a_transport_without_a_socket_is_left_alone() -> None:
    class Plain:
        transport = StringTransport()

    protocol: Any = Plain()
    assert read_large(protocol) is protocol
    assert not hasattr(Plain.transport, "bufferSize")


def test_other_schemes_are_refused() -> None:
    from twisted.internet import reactor

    endpoints = LargeReadEndpoints(reactor, BrowserLikePolicyForHTTPS())
    uri: Any = type("URI", (), {"scheme": b"ftp", "host": b"mirror.test", "port": 21})()
    with pytest.raises(SchemeNotSupported):
        endpoints.endpointForURI(uri)
