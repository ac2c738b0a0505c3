"""
The HTTP client the builder downloads with: treq over Twisted's Agent, its connections
reading half a mebibyte from the socket at a time.

Twisted's connections read 64 KiB at once. For an ISO arriving at the speed of a local
mirror, each read is a system call, a new 64 KiB string and a pass through Twisted's
HTTP client, which made the reactor thread the slowest part of a build. A 1.5 GB build
over loopback, three alternate runs of each: 2.1-2.7 s wall and 3.3-3.8 s of CPU reading
512 KiB at a time, against 2.8-3.4 s and 4.2-5.2 s reading 64 KiB. Larger reads gained
no more (1 MiB: 2.3-2.7 s) and made the allocator map and fault in more pages.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

# Bytes asked of the socket at once.
READ_SIZE = 512 << 10


def download_client(reactor: Any) -> HTTPClient:
    """
    A treq client whose connections read L{READ_SIZE} bytes at a time, trusting HTTPS
    servers as Twisted's Agent does by default.
    """
    agent = Agent.usingEndpointFactory(
        reactor,
        LargeReadEndpoints(reactor, BrowserLikePolicyForHTTPS()),
        pool=HTTPConnectionPool(reactor, persistent=False),
    )
    return HTTPClient(agent)


@implementer(IAgentEndpointFactory)
class LargeReadEndpoints:
    """
    The endpoints Twisted's Agent makes (a host name and port, TLS for C{https} with
    C{policy}), whose connections read L{READ_SIZE} bytes at a time.
    """

    def __init__(self, reactor: Any, policy: IPolicyForHTTPS) -> None:
        self._reactor = reactor
        self._policy = policy

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self._reactor, uri.host, uri.port)
        if uri.scheme == b"https":
            creator = self._policy.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        elif uri.scheme != b"http":
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        return _LargeReads(endpoint)


@implementer(IStreamClientEndpoint)
class _LargeReads:
    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        connecting = self._endpoint.connect(protocolFactory)
        connecting.addCallback(read_large)
        return connecting


def read_large(protocol: IProtocol) -> IProtocol:
    """
    Have the socket connection under C{protocol} (through TLS, when there is TLS) read
    L{READ_SIZE} bytes at a time; C{protocol} is returned.
    """
    transport: Any = getattr(protocol, "transport", None)
    while transport is not None:
        # Twisted's socket connections read bufferSize bytes at a time.
        if hasattr(transport, "socket") and hasattr(transport, "bufferSize"):
            transport.bufferSize = READ_SIZE
            break
        transport = getattr(transport, "transport", None)
    return protocol
