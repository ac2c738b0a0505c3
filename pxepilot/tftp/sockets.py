"""
The sockets of TFTP transfers: one UDP socket per transfer, on a free port of the
address its request was sent to, all polled together as one reader of the reactor.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorFDSet,
    IReadDescriptor,
    IUDPTransport,
)
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from pxepilot.logs import logger

log = logger(__name__)

Address = tuple[str, int]


@implementer(IReadDescriptor, IListeningPort, IUDPTransport)
class TransferSocket:
    """
    A transfer's UDP socket, on a free port of one local address.

    Leaner than Twisted's UDP port, because it sits on the per-block path: L{sendTo}
    skips the address checks of C{write} (the peer was checked once, when the request
    came in), a full send buffer counts as a lost datagram that the retransmission timer
    recovers, and each read event takes one datagram (the reactor polls again if more
    are waiting). Once L{serve} has named the client, the socket is connected to it.
    """

    def __init__(
        self, readers: IReactorFDSet | TransferPoller, protocol: DatagramProtocol, interface: str
    ) -> None:
        # Where to register for reading: the reactor, or a TransferPoller.
        self._reactor = readers
        self.protocol = protocol
        self.interface = interface
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self._fileno = self.socket.fileno()
        self._listening = False
        self._peer: Address | None = None
        self._strangers: _StrangerSocket | None = None

    def startListening(self) -> None:
        try:
            self.socket.bind((self.interface, 0))
        except OSError:
            self.socket.close()
            raise
        self._listening = True
        self.protocol.makeConnection(self)
        self._reactor.addReader(self)

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return "TFTP transfer"

    def doRead(self) -> None:
        peer = self._peer
        if peer is None:
            _receive(self.socket, self.protocol)
            return
        try:
            datagram = self.socket.recv(2048)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            return
        self.protocol.datagramReceived(datagram, peer)

    def serve(self, peer: Address) -> Callable[[bytes], object]:
        """
        Connect the socket to C{peer}, the one client of its transfer, and return the
        quickest way to send it a datagram.

        A connected socket spares the kernel a route lookup for every block sent, and
        takes in only the peer's datagrams. Anyone else's go to a second socket bound
        to the same port, so that strangers still get ERROR 5 (RFC 1350 section 4).
        Where that second socket cannot be had, the socket stays unconnected.
        """
        try:
            strangers = socket.socket(self.socket.family, socket.SOCK_DGRAM)
        except OSError as e:
            # Out of descriptors, say: the transfer goes on, unconnected.
            return self._unconnected(peer, e)
        try:
            # Both sockets must allow the shared port. The transfer's own socket was
            # bound without it, so a new transfer can never be given this port.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            strangers.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            strangers.setblocking(False)
            strangers.bind(self.socket.getsockname())
            self.socket.connect(peer)
        except OSError as e:
            strangers.close()
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
            return self._unconnected(peer, e)
        self._peer = peer
        self._strangers = _StrangerSocket(strangers, self.protocol)
        self._reactor.addReader(self._strangers)
        return self.socket.send

    def sendTo(self, datagram: bytes, address: Address) -> None:
        try:
            self.socket.sendto(datagram, address)
        except InterruptedError:
            self.socket.sendto(datagram, address)
        except (BlockingIOError, ConnectionRefusedError):
            pass

    def write(self, datagram: bytes, addr: Address | None = None) -> None:
        assert addr is not None, "a transfer socket is not connected"
        self.sendTo(datagram, addr)

    def _unconnected(self, peer: Address, error: OSError) -> Callable[[bytes], object]:
        log.debug("TFTP transfer socket left unconnected: {error}", error=error)
        sendto = self.socket.sendto

        def send_to(datagram: bytes) -> None:
            sendto(datagram, peer)

        return send_to

    def connect(self, host: str, port: int) -> None:
        # Twisted's connected mode would drop strangers unanswered: see serve().
        raise RuntimeError("a transfer socket is connected by serve()")

    def setBroadcastAllowed(self, enabled: bool) -> None:
        raise RuntimeError("a transfer socket does not broadcast")

    def getBroadcastAllowed(self) -> bool:
        return False

    def getHost(self) -> IPv4Address | IPv6Address:
        host, port = self.socket.getsockname()[:2]
        kind = IPv6Address if self.socket.family == socket.AF_INET6 else IPv4Address
        return kind("UDP", host, port)

    def stopListening(self) -> Deferred[None]:
        if self._listening:
            self._listening = False
            self._reactor.removeReader(self)
            if self._strangers is not None:
                self._reactor.removeReader(self._strangers)
                self._strangers.socket.close()
                self._strangers = None
            self.protocol.doStop()
            self.socket.close()
        return succeed(None)

    def connectionLost(self, reason: object) -> None:
        self.stopListening()


@implementer(IReadDescriptor)
class _StrangerSocket:
    """
    The second socket on a connected transfer's port: what anyone but the transfer's
    client sends there arrives here, and goes to the transfer's protocol with its
    sender's address.
    """

    def __init__(self, sock: socket.socket, protocol: DatagramProtocol) -> None:
        self.socket = sock
        self.protocol = protocol
        self._fileno = sock.fileno()

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return "TFTP transfer"

    def doRead(self) -> None:
        _receive(self.socket, self.protocol)

    def connectionLost(self, reason: object) -> None:
        self.socket.close()


def _receive(sock: socket.socket, protocol: DatagramProtocol) -> None:
    """
    One datagram from an unconnected C{sock} to C{protocol}, with its sender's address.
    """
    try:
        datagram, address = sock.recvfrom(2048)
    except (BlockingIOError, InterruptedError, ConnectionRefusedError):
        return
    protocol.datagramReceived(datagram, address[:2])


PortOpener = Callable[[DatagramProtocol, str], IListeningPort]


@implementer(IReadDescriptor)
class TransferPoller:
    """
    The sockets of all running transfers, polled together (Linux epoll) as one reader
    of the reactor: a reactor event then serves every transfer with a datagram waiting,
    instead of one reactor dispatch for each datagram. Sockets register with it as they
    would with the reactor, through L{addReader} and L{removeReader}.
    """

    def __init__(self, reactor: IReactorFDSet) -> None:
        self._reactor = reactor
        self._epoll = select.epoll()
        self._readers: dict[int, IReadDescriptor] = {}

    def fileno(self) -> int:
        return self._epoll.fileno()

    def logPrefix(self) -> str:
        return "TFTP transfers"

    def addReader(self, reader: IReadDescriptor) -> None:
        fd = reader.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = reader
        if len(self._readers) == 1:
            self._reactor.addReader(self)

    def removeReader(self, reader: IReadDescriptor) -> None:
        fd = reader.fileno()
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)
            if not self._readers:
                self._reactor.removeReader(self)

    def doRead(self) -> None:
        readers = self._readers
        if not readers:
            return
        for fd, _events in self._epoll.poll(0, 256):
            reader = readers.get(fd)
            if reader is None:
                continue
            try:
                reader.doRead()
            except Exception:
                # One transfer's trouble must not stop the others from being served.
                log.failure("TFTP transfer socket failed")

    def connectionLost(self, reason: object) -> None:
        for reader in list(self._readers.values()):
            self.removeReader(reader)


def transfer_poller(reactor: IReactorFDSet) -> TransferPoller | None:
    """
    A poller for the transfer sockets on C{reactor}, where the system has epoll.
    """
    return TransferPoller(reactor) if hasattr(select, "epoll") else None


def reactor_port_opener(
    reactor: IReactorFDSet, poller: TransferPoller | None = None
) -> PortOpener:
    """
    Opens transfer sockets on C{reactor}, polled together by C{poller} when one is
    given, else by a poller of their own where the system has epoll.
    """
    registry: IReactorFDSet | TransferPoller = poller or transfer_poller(reactor) or reactor

    def open_port(protocol: DatagramProtocol, interface: str) -> IListeningPort:
        port = TransferSocket(registry, protocol, interface)
        port.startListening()
        return port

    return open_port
