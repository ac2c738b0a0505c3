"""
The TFTP server's Twisted side: a request port, and a fresh port for each transfer.

Requests arrive on one port (69). Each accepted read request gets its own UDP port,
bound to the local address the request was sent to, so a host with several addresses
never answers from the wrong one. A transfer's port is not connected: a datagram from
anyone but its client gets ERROR 5 and the transfer goes on (RFC 1350 section 4).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import Factory, define, field
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorFDSet,
    IReactorTime,
    IReadDescriptor,
    IUDPTransport,
)
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from pxepilot.events import EventBus, IEvents, TransferFinished
from pxepilot.logs import logger
from pxepilot.tftp.files import (
    AccessViolation,
    BadFileName,
    FileNotFound,
    ITFTPFiles,
    NetasciiReader,
    RequestContext,
    normalise_name,
)
from pxepilot.tftp.negotiation import Limits, negotiate
from pxepilot.tftp.packets import (
    OP_ACK,
    Error,
    ErrorCode,
    PacketError,
    ReadRequest,
    WriteRequest,
    decode,
    encode_error,
)
from pxepilot.tftp.transfer import Outcome, OutcomeKind, ReadTransfer, RetransmitPolicy

log = logger(__name__)

Address = tuple[str, int]


_UNKNOWN_TID = encode_error(ErrorCode.UNKNOWN_TRANSFER_ID, "Unknown transfer ID")

# How each ending is logged.
_LEVELS = {
    OutcomeKind.COMPLETE: "info",
    OutcomeKind.PROBE: "info",
    OutcomeKind.ABORTED: "warn",
    OutcomeKind.TIMED_OUT: "warn",
    OutcomeKind.TOO_LONG: "warn",
    OutcomeKind.EVICTED: "info",
    OutcomeKind.SHUTDOWN: "info",
    OutcomeKind.FAILED: "error",
}


@implementer(IReadDescriptor, IListeningPort, IUDPTransport)
class TransferSocket:
    """
    A transfer's UDP socket, on a free port of one local address.

    Leaner than Twisted's UDP port, because it sits on the per-block path: L{sendTo}
    skips the address checks of C{write} (the peer was checked once, when the request
    came in), a full send buffer counts as a lost datagram that the retransmission timer
    recovers, and each read event takes one datagram (the reactor polls again if more
    are waiting).
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
        try:
            datagram, address = self.socket.recvfrom(2048)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            return
        self.protocol.datagramReceived(datagram, address[:2])

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

    def connect(self, host: str, port: int) -> None:
        # Never connected: a connected socket could not answer strangers with ERROR 5.
        raise RuntimeError("a transfer socket is not connected")

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
            self.protocol.doStop()
            self.socket.close()
        return succeed(None)

    def connectionLost(self, reason: object) -> None:
        self.stopListening()


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


def reactor_port_opener(reactor: IReactorFDSet) -> PortOpener:
    """
    Opens transfer sockets on C{reactor}, polled together where the system has epoll.
    """
    registry: IReactorFDSet | TransferPoller = (
        TransferPoller(reactor) if hasattr(select, "epoll") else reactor
    )

    def open_port(protocol: DatagramProtocol, interface: str) -> IListeningPort:
        port = TransferSocket(registry, protocol, interface)
        port.startListening()
        return port

    return open_port


class TransferProtocol(DatagramProtocol):
    """
    The port of one transfer: hears its client, turns strangers away.
    """

    noisy = False

    def __init__(
        self,
        server: TFTPServer,
        key: tuple[str, int, bytes],
        name: str,
        options: str,
        transfer_factory: Callable[[Callable[[bytes], object]], ReadTransfer],
    ) -> None:
        self.server = server
        self.key = key
        self.peer: Address = (key[0], key[1])
        self.name = name
        self.options = options
        self._factory = transfer_factory
        self.transfer: ReadTransfer | None = None
        self.port: IListeningPort | None = None
        self.closed: Deferred[None] | None = None

    def startProtocol(self) -> None:
        transport: Any = self.transport
        peer = self.peer
        # Straight to the socket where there is one: the checks of a transport's write
        # were done once, for the request. The transfer treats a full buffer as loss.
        sock = getattr(transport, "socket", None)
        sendto = sock.sendto if sock is not None else transport.write

        def send(datagram: bytes) -> None:
            sendto(datagram, peer)

        self.transfer = self._factory(send)
        try:
            self.transfer.start()
        except Exception as e:
            log.failure(
                "TFTP transfer of {file} to {client} failed to start",
                file=self.name,
                client=peer[0],
            )
            self.transfer.fail(f"{type(e).__name__}: {e}")

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        transfer = self.transfer
        if transfer is None:
            return
        if addr != self.peer:
            self._stranger(addr)
            return
        try:
            if len(datagram) == 4 and datagram[1] == OP_ACK and datagram[0] == 0:
                transfer.ack((datagram[2] << 8) | datagram[3])
            else:
                self._other(transfer, datagram)
        except Exception as e:
            log.failure(
                "TFTP transfer of {file} to {client} failed", file=self.name, client=self.peer[0]
            )
            transfer.fail(f"{type(e).__name__}: {e}")

    def _stranger(self, addr: Address) -> None:
        transport: Any = self.transport
        # A stranger we cannot answer is only ignored.
        with contextlib.suppress(Exception):
            transport.write(_UNKNOWN_TID, addr)

    def _other(self, transfer: ReadTransfer, datagram: bytes) -> None:
        try:
            packet = decode(datagram)
        except PacketError:
            # Garbled: dropped, the transfer goes on and retransmits if it must.
            return
        if isinstance(packet, Error):
            transfer.client_error(packet.code, packet.message)
        elif datagram[1] == OP_ACK:
            transfer.ack(packet.block)  # type: ignore[union-attr]
        else:
            transfer.stop(OutcomeKind.FAILED, "Illegal TFTP operation")

    def finished(self, outcome: Outcome) -> None:
        self.server.transfer_finished(self, outcome)


@define(repr=False)
class TFTPServer(DatagramProtocol):
    """
    The request port's protocol: turns read requests into transfers, within limits.

    @ivar files: What is served.
    @ivar clock: Time, for every transfer.
    @ivar open_port: Opens a transfer's port on a local address.
    @ivar interface: The address the request port is bound to (C{""}: all).
    @ivar limits: Option limits.
    @ivar policy: Retransmission and duration limits.
    @ivar max_transfers: Concurrent transfers in all.
    @ivar max_per_client: Concurrent acknowledged transfers from one IP address.
    @ivar events: Told of every transfer that ends.
    @ivar outcomes: Transfers by how they ended (and requests refused), since start.
    @ivar bytes_sent: Bytes acknowledged by clients, since start.
    """

    noisy = False

    files: ITFTPFiles
    clock: IReactorTime
    open_port: PortOpener
    interface: str = ""
    limits: Limits = field(factory=Limits)
    policy: RetransmitPolicy = field(factory=RetransmitPolicy)
    max_transfers: int = 200
    max_per_client: int = 8
    send_refusal: Callable[[str, Address, bytes], None] = field(
        default=Factory(lambda: _send_once)
    )
    events: IEvents = field(factory=EventBus)
    transfers: dict[tuple[str, int, bytes], TransferProtocol] = field(factory=dict)
    per_client: Counter[str] = field(factory=Counter)
    outcomes: Counter[str] = field(factory=Counter)
    bytes_sent: int = 0
    _closing: list[Deferred[None]] = field(factory=list)

    # -- requests

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        local = self.interface if self.interface not in ("", "0.0.0.0", "::") else ""
        self.requestReceived(datagram, addr, local, local)

    def addressedDatagramReceived(
        self, datagram: bytes, client: Address, local: str, destination: str, interface: int
    ) -> None:
        self.requestReceived(datagram, client, local, destination)

    def requestReceived(
        self, datagram: bytes, client: Address, local: str, destination: str
    ) -> None:
        """
        A datagram sent to the request port by C{client}, to C{destination}; replies
        go out from C{local}.
        """
        if destination == "255.255.255.255":
            return  # RFC 1123 4.2.3.5: requests to a broadcast address are ignored.
        try:
            packet = decode(datagram)
        except PacketError as e:
            if len(datagram) >= 2 and datagram[:2] in (b"\0\1", b"\0\2"):
                self._refuse(
                    client,
                    local,
                    "?",
                    ErrorCode.ILLEGAL_OPERATION,
                    "Illegal TFTP operation",
                    f"malformed request: {e}",
                )
            else:
                log.debug(
                    "TFTP: ignored {size}-byte datagram from {client}: {reason}",
                    size=len(datagram),
                    client=client[0],
                    reason=str(e),
                )
            return
        if isinstance(packet, WriteRequest):
            self._refuse(
                client,
                local,
                _printable(packet.filename),
                ErrorCode.ACCESS_VIOLATION,
                "Write requests are not accepted",
                "write request",
            )
            return
        if not isinstance(packet, ReadRequest):
            # ACK, DATA or ERROR for a transfer that is not (or no longer) here.
            log.debug(
                "TFTP: ignored {kind} from {client} on the request port",
                kind=type(packet).__name__,
                client=client[0],
            )
            return
        self._read_request(packet, client, local)

    def _read_request(self, request: ReadRequest, client: Address, local: str) -> None:
        shown = _printable(request.filename)
        if request.mode not in ("octet", "netascii"):
            self._refuse(
                client,
                local,
                shown,
                ErrorCode.ILLEGAL_OPERATION,
                "Unsupported transfer mode",
                f"mode {request.mode!r}",
            )
            return
        key = (client[0], client[1], request.filename)
        if key in self.transfers:
            # The client sent its request again before our first reply arrived; the
            # running transfer answers it.
            log.debug("TFTP {client}: repeated request for {file}", client=client[0], file=shown)
            return
        if not self._make_room(client[0]):
            self._refuse(
                client,
                local,
                shown,
                ErrorCode.NOT_DEFINED,
                "Server busy, try again later",
                "too many transfers",
            )
            return
        try:
            name = normalise_name(request.filename)
            reader = self.files.open(name, RequestContext(client[0], local, request.options))
        except FileNotFound as e:
            self._refuse(client, local, shown, ErrorCode.FILE_NOT_FOUND, "File not found", str(e))
            return
        except AccessViolation as e:
            self._refuse(
                client, local, shown, ErrorCode.ACCESS_VIOLATION, "Access violation", str(e)
            )
            return
        except BadFileName as e:
            self._refuse(
                client, local, shown, ErrorCode.ILLEGAL_OPERATION, "Illegal file name", str(e)
            )
            return
        netascii = request.mode == "netascii"
        if netascii:
            reader = NetasciiReader(reader)
        negotiated = negotiate(request.options, reader.size, netascii, self.limits)

        protocol: TransferProtocol

        def make_transfer(send: Callable[[bytes], object]) -> ReadTransfer:
            return ReadTransfer(
                reader, negotiated, send, self.clock, self.policy, protocol.finished
            )

        protocol = TransferProtocol(self, key, name, negotiated.describe(), make_transfer)
        self.transfers[key] = protocol
        self.per_client[client[0]] += 1
        try:
            protocol.port = self.open_port(protocol, local)
        except Exception as e:
            del self.transfers[key]
            self._forget_client(client[0])
            reader.close()
            self._refuse(
                client,
                local,
                shown,
                ErrorCode.NOT_DEFINED,
                "Server error",
                f"cannot open a transfer port: {e}",
            )

    def _make_room(self, client: str) -> bool:
        """
        Free a place for a new transfer from C{client}.

        Only acknowledged transfers count against the per-client limit. Transfers never
        acknowledged (abandoned, or asked for with a spoofed address) take any free place
        and are the first to give way, oldest first: a flood of them cannot lock out a
        real client, even one on the flooding address, which keeps its place for as
        many further requests as the server has places.
        """
        confirmed = sum(
            1
            for protocol in self.transfers.values()
            if protocol.peer[0] == client
            and protocol.transfer is not None
            and protocol.transfer.confirmed
        )
        if confirmed >= self.max_per_client:
            return False
        if len(self.transfers) >= self.max_transfers:
            victim = self._oldest_unconfirmed()
            if victim is None:
                return False
            self._evict(victim)
        return True

    def _oldest_unconfirmed(self) -> TransferProtocol | None:
        for protocol in self.transfers.values():
            if protocol.transfer is None or not protocol.transfer.confirmed:
                return protocol
        return None

    def _evict(self, protocol: TransferProtocol) -> None:
        if protocol.transfer is not None:
            # No ERROR: the address may be spoofed, and the client never answered.
            protocol.transfer.stop(OutcomeKind.EVICTED, None)
        else:
            self._remove(protocol)

    def _refuse(
        self, client: Address, local: str, shown: str, code: ErrorCode, message: str, reason: str
    ) -> None:
        log.info(
            "TFTP {client} {file}: refused ({code}), {reason}",
            client=client[0],
            file=shown,
            code=int(code),
            reason=reason,
            outcome="refused",
        )
        self.outcomes["refused"] += 1
        self.send_refusal(local, client, encode_error(code, message))

    # -- transfers

    def transfer_finished(self, protocol: TransferProtocol, outcome: Outcome) -> None:
        transfer = protocol.transfer
        assert transfer is not None
        duration = self.clock.seconds() - transfer.started
        sent = transfer.bytes_acknowledged
        self.bytes_sent += sent
        self.outcomes[outcome.kind.value] += 1
        detail = f", {outcome.detail}" if outcome.detail else ""
        getattr(log, _LEVELS[outcome.kind])(
            "TFTP {client} {file}: {outcome}{detail} (options {options}; {bytes} bytes in "
            "{duration:.3f} s)",
            client=protocol.peer[0],
            file=protocol.name,
            outcome=outcome.kind.value,
            detail=detail,
            options=protocol.options,
            bytes=sent,
            duration=duration,
        )
        self._remove(protocol)
        self.events.publish(
            TransferFinished(protocol.peer[0], protocol.name, outcome.kind.value, sent, duration)
        )

    def _remove(self, protocol: TransferProtocol) -> None:
        if self.transfers.get(protocol.key) is protocol:
            del self.transfers[protocol.key]
            self._forget_client(protocol.peer[0])
        port = protocol.port
        protocol.port = None
        if port is not None:
            stopped = port.stopListening()
            if isinstance(stopped, Deferred):
                self._closing.append(stopped)
                stopped.addBoth(lambda _: self._closing.remove(stopped))

    def _forget_client(self, client: str) -> None:
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]

    def stop_all(self) -> Deferred[Any]:
        """
        End every transfer (telling each client), and fire when their ports are closed.
        """
        for protocol in list(self.transfers.values()):
            if protocol.transfer is not None:
                protocol.transfer.stop(OutcomeKind.SHUTDOWN, "Server shutting down")
            else:
                self._remove(protocol)
        if not self._closing:
            return succeed(None)
        return DeferredList(list(self._closing), consumeErrors=True)


def _send_once(local: str, client: Address, datagram: bytes) -> None:
    """
    Send one datagram to C{client} from a fresh port on C{local}, as a transfer would.
    """
    family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            if local and _same_family(local, family):
                sock.bind((local, 0))
            sock.sendto(datagram, client)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.EAGAIN):
            log.debug("TFTP: could not answer {client}: {error}", client=client[0], error=e)


def _same_family(address: str, family: int) -> bool:
    version = ipaddress.ip_address(address).version
    return (version == 6) == (family == socket.AF_INET6)


def _printable(raw: bytes) -> str:
    text = raw[:120].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)
