"""
The Twisted internals pxe-pilot relies on, as checked against Twisted 26.10.0: what
L{PlainTCPSocket} reads and sets on a TCP connection so the kernel can send asset
bodies, and what L{AddressedPort} overrides and reads on a UDP port so TFTP and
proxyDHCP know which address a datagram came in on.

These are not part of Twisted's public interface and may change in any release. Each
test fails if one disappears or changes shape, and its docstring says what breaks in
pxe-pilot when it does. Over real loopback sockets, with the real reactor.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
from attrs import define
from twisted.internet import ssl, tcp, udp
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from pxepilot.http.tcp_access import PlainTCPSocket
from pxepilot.udp import AddressedPort


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def until(condition: Callable[[], bool], turns: int = 500) -> None:
    """
    Let the reactor run until C{condition} holds (at most C{turns} turns of 10 ms).
    """
    for _ in range(turns):
        if condition():
            return
        await deferLater(reactor(), 0.01, lambda: None)
    raise AssertionError("the condition never held")


class Receiver(Protocol):
    """
    Keeps what it receives.
    """

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


@define
class Loopback:
    """
    Both ends of a real TCP connection on 127.0.0.1: the server's transport (what a
    response's channel writes to) and the client, which reads what it is sent.
    """

    server: Any
    client: Receiver


@pytest_twisted.async_yield_fixture
async def loopback() -> AsyncIterator[Loopback]:
    accepted: Deferred[Protocol] = Deferred()

    class Accepted(Protocol):
        def connectionMade(self) -> None:
            accepted.callback(self)

    port = reactor().listenTCP(0, Factory.forProtocol(Accepted), interface="127.0.0.1")
    client = Receiver()
    connector = reactor().connectTCP("127.0.0.1", port.getHost().port, _ClientFactory(client))
    server = await accepted
    transport: Any = server.transport
    yield Loopback(transport, client)
    if transport.connected:
        transport.abortConnection()
    connector.disconnect()
    await maybeDeferred(port.stopListening)
    # Let both ends see their connection lost before the next test.
    await deferLater(reactor(), 0.01, lambda: None)


class _ClientFactory(Factory):
    def __init__(self, client: Receiver) -> None:
        self._client = client

    def buildProtocol(self, addr: object) -> Protocol:
        return self._client

    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        pass

    def clientConnectionLost(self, connector: object, reason: object) -> None:
        pass

    def startedConnecting(self, connector: object) -> None:
        pass


@implementer(IPushProducer)
class Producer:
    """
    A push producer that counts how often it is resumed.
    """

    def __init__(self) -> None:
        self.resumed = 0

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


# TCP: what PlainTCPSocket relies on.


@pytest_twisted.ensureDeferred
async def test_accepted_connection_is_a_tcp_connection_with_its_socket(
    loopback: Loopback,
) -> None:
    """
    The transport of an accepted connection is a C{tcp.Connection} whose C{socket}
    attribute is its socket, and C{TLS} says it is not encrypted. If not, every asset
    body is read and written through the transport instead of sent by the kernel:
    correct, but far slower and costlier in a boot storm.
    """
    transport = loopback.server
    assert isinstance(transport, tcp.Connection)
    assert isinstance(transport.socket, socket.socket)
    assert transport.socket is transport.getHandle()
    assert transport.TLS is False


@pytest_twisted.ensureDeferred
async def test_socket_is_deleted_when_the_connection_is_lost(loopback: Loopback) -> None:
    """
    A lost connection has no C{socket} attribute any more, which is how a body
    started on a connection that is already gone is written through the transport
    (which drops it) rather than sent to a closed socket.
    """
    transport = loopback.server
    transport.abortConnection()
    await until(lambda: not transport.connected)
    assert not hasattr(transport, "socket")
    assert PlainTCPSocket.of(transport) is None


@pytest_twisted.ensureDeferred
async def test_start_tls_marks_the_connection(loopback: Loopback) -> None:
    """
    C{startTLS} sets C{TLS} on the connection. If it stopped, pxe-pilot behind
    C{startTLS} would write file bodies in clear into an encrypted stream.
    """
    transport: Any = loopback.client.transport
    before = transport.TLS
    transport.startTLS(ssl.optionsForClientTLS("localhost"))
    assert (before, transport.TLS) == (False, True)
    assert PlainTCPSocket.of(transport) is None


@pytest_twisted.ensureDeferred
async def test_write_is_held_in_temp_data_buffer(loopback: Loopback) -> None:
    """
    C{_tempDataBuffer} is an instance attribute, a list, and holds what C{write} was
    given until the reactor writes it. If Twisted buffers elsewhere, pxe-pilot no
    longer sees that the response headers are still waiting, sends the body ahead of
    them, and every download over plain HTTP is garbage.
    """
    transport = loopback.server
    assert isinstance(vars(transport)["_tempDataBuffer"], list)
    assert isinstance(transport.dataBuffer, bytes)
    assert PlainTCPSocket(transport, transport.socket).has_buffered_data() is False

    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport._tempDataBuffer == [b"HTTP/1.1 200 OK\r\n\r\n"]
    assert PlainTCPSocket(transport, transport.socket).has_buffered_data() is True

    await until(lambda: loopback.client.received == b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport._tempDataBuffer == []
    assert transport.dataBuffer == b""
    assert PlainTCPSocket(transport, transport.socket).has_buffered_data() is False


@pytest_twisted.ensureDeferred
async def test_unsent_bytes_are_held_in_data_buffer(loopback: Loopback) -> None:
    """
    C{doWrite} moves what was written into C{dataBuffer} (bytes) and keeps there what
    the socket has not taken yet. If it kept it elsewhere, pxe-pilot would send a body
    while part of the headers still waits, and the download would be garbage.
    """
    transport = loopback.server
    data = b"x" * (4 * transport.SEND_LIMIT)
    transport.write(data)
    transport.doWrite()
    assert transport._tempDataBuffer == []
    assert isinstance(transport.dataBuffer, bytes)
    assert 0 < len(transport.dataBuffer) - transport.offset < len(data)
    assert PlainTCPSocket(transport, transport.socket).has_buffered_data() is True
    await until(lambda: len(loopback.client.received) == len(data))
    assert PlainTCPSocket(transport, transport.socket).has_buffered_data() is False


@pytest_twisted.ensureDeferred
async def test_do_write_resumes_a_streaming_producer_only_when_paused(
    loopback: Loopback,
) -> None:
    """
    Once it has nothing left to send, C{doWrite} resumes a registered streaming
    producer if C{producerPaused} is set, and only then; and it clears the flag. If
    not, a body sent by the kernel stops after its first turn and the download hangs
    until the client gives up.
    """
    transport = loopback.server
    producer = Producer()
    transport.registerProducer(producer, True)
    assert transport.producerPaused is False
    transport.doWrite()
    assert producer.resumed == 0

    transport.producerPaused = True
    transport.doWrite()
    assert producer.resumed == 1
    assert transport.producerPaused is False
    transport.unregisterProducer()


@pytest_twisted.ensureDeferred
async def test_start_writing_then_the_reactor_resumes_the_producer(loopback: Loopback) -> None:
    """
    With C{producerPaused} set, C{startWriting} has the reactor call C{doWrite} as soon
    as the socket is writable, even with nothing buffered, which resumes the
    producer: how a body sent by the kernel gets its next turn. If not, the download
    hangs after its first turn.
    """
    transport = loopback.server
    producer = Producer()
    transport.registerProducer(producer, True)
    PlainTCPSocket(transport, transport.socket).wait_until_writable()
    assert producer.resumed == 0
    await until(lambda: producer.resumed == 1)
    assert transport.producerPaused is False
    transport.unregisterProducer()


# PlainTCPSocket itself.


def test_no_access_to_a_transport_that_is_not_tcp() -> None:
    """
    An in-memory transport (or TLS over a protocol, or anything but a TCP connection)
    gets none: its bodies are written through it.
    """
    assert PlainTCPSocket.of(StringTransport()) is None
    assert PlainTCPSocket.of(None) is None


@pytest_twisted.ensureDeferred
async def test_access_to_a_plain_tcp_connection(loopback: Loopback) -> None:
    """
    A plain TCP connection gets access to its own socket; once marked as TLS (what
    C{startTLS} does), none.
    """
    transport = loopback.server
    access = PlainTCPSocket.of(transport)
    assert access is not None
    assert access.socket is transport.socket
    assert access.connection is transport
    transport.TLS = True
    try:
        assert PlainTCPSocket.of(transport) is None
    finally:
        transport.TLS = False


@pytest_twisted.ensureDeferred
async def test_no_access_without_the_internals(loopback: Loopback) -> None:
    """
    A connection without the internals relied on (a Twisted that changed them) gets
    no access: slower, but its bodies are written through it correctly.
    """
    transport = loopback.server
    held = transport._tempDataBuffer
    del transport._tempDataBuffer
    try:
        assert PlainTCPSocket.of(transport) is None
    finally:
        transport._tempDataBuffer = held


# UDP: what AddressedPort relies on.


@define
class Bound:
    """
    What a port looked like when C{_bindSocket} returned.
    """

    socket: object
    started: bool


class RecordingPort(udp.Port):
    """
    Records each call of C{_bindSocket}.
    """

    bound: list[Bound]

    def _bindSocket(self) -> None:
        super()._bindSocket()
        self.bound.append(Bound(self.socket, self.protocol.transport is not None))


def test_start_listening_binds_through_bind_socket() -> None:
    """
    C{startListening} calls C{_bindSocket}, which sets C{socket}, and only then starts
    the protocol. If not, C{AddressedPort} never asks for C{IP_PKTINFO} (or asks too
    late): TFTP answers from whichever address the routing table picks, and proxyDHCP
    cannot answer a client that has no address yet.
    """
    protocol = DatagramProtocol()
    port = RecordingPort(0, protocol, "127.0.0.1", reactor=reactor())
    port.bound = []
    port.startListening()
    try:
        [bound] = port.bound
        assert isinstance(bound.socket, socket.socket)
        assert bound.socket is port.socket
        assert bound.started is False
        assert protocol.transport is port
    finally:
        port.stopListening()


def test_udp_port_attributes() -> None:
    """
    A listening port keeps its socket, address family, interface, largest datagram
    and protocol in C{socket}, C{addressFamily}, C{interface}, C{maxPacketSize} and
    C{protocol}. If one is renamed, the TFTP and proxyDHCP ports fail to start or fail
    on their first datagram.
    """
    protocol = DatagramProtocol()
    port = udp.Port(0, protocol, "127.0.0.1", maxPacketSize=1234, reactor=reactor())
    port.startListening()
    try:
        assert isinstance(port.socket, socket.socket)
        assert port.socket.fileno() == port.fileno()
        assert port.addressFamily == socket.AF_INET
        assert port.interface == "127.0.0.1"
        assert port.maxPacketSize == 1234
        assert port.protocol is protocol
    finally:
        port.stopListening()


class Addressed(DatagramProtocol):
    """
    Keeps each datagram with the addresses it came with.
    """

    def __init__(self) -> None:
        self.received: list[tuple[Any, ...]] = []

    def addressedDatagramReceived(
        self, data: bytes, address: Any, local: str, destination: str, interface: int
    ) -> None:
        self.received.append((data, address, local, destination, interface))

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))


@pytest.mark.parametrize(
    ("bound", "client_address"),
    [
        ("", "127.0.0.1"),
        ("::", "::1"),
        # The dual-stack socket's IPv4 client: told, and answered, as IPv4.
        ("::", "127.0.0.1"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_addressed_port_over_a_socket(bound: str, client_address: str) -> None:
    """
    Bound to every address, C{AddressedPort} learns the local address and interface
    of each datagram, and answers through its socket: the whole chain through
    C{_bindSocket}, C{socket}, C{maxPacketSize} and C{protocol} works, for IPv4 and
    IPv6, and for IPv4 on an IPv6 socket.
    """
    protocol = Addressed()
    port = AddressedPort(0, protocol, bound, reactor=reactor())
    port.startListening()
    family = socket.AF_INET6 if ":" in client_address else socket.AF_INET
    client = socket.socket(family, socket.SOCK_DGRAM)
    try:
        client.bind((client_address, 0))
        client.setblocking(False)
        client.sendto(b"hello", (client_address, port.getHost().port))
        await until(lambda: bool(protocol.received))
        [(data, address, local, destination, interface)] = protocol.received
        assert (data, address) == (b"hello", client.getsockname()[:2])
        assert (local, destination) == (client_address, client_address)
        assert interface == socket.if_nametoindex("lo")

        port.send_from(b"hi", address, local, interface)
        await until(lambda: _readable(client))
        reply, source = client.recvfrom(100)
        assert (reply, source[:2]) == (b"hi", (client_address, port.getHost().port))
    finally:
        client.close()
        await maybeDeferred(port.stopListening)


def _readable(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    return True


@pytest.mark.parametrize("name", ["_bindSocket", "startListening"])
def test_udp_port_methods_exist(name: str) -> None:
    """
    C{udp.Port} still defines the method C{AddressedPort} overrides or relies on; if
    C{_bindSocket} went, C{AddressedPort}'s override would silently never run.
    """
    assert callable(vars(udp.Port).get(name))
