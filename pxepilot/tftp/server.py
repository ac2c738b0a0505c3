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
import socket
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from attrs import Factory, define, field
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol

from pxepilot.events import EventBus, IEvents, TransferFinished
from pxepilot.logs import logger
from pxepilot.tftp.admission import (
    BUDGET_REFILL_SECONDS,
    GRACE_SECONDS,
    REFUSALS_PER_SECOND,
    Bucket,
    Digest,
    Load,
    Places,
    RequestBudgets,
    Verdict,
    admit,
    evictable_rate,
    take,
)
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
from pxepilot.tftp.sockets import PortOpener, TransferSocket
from pxepilot.tftp.sockets import reactor_port_opener as reactor_port_opener
from pxepilot.tftp.transfer import Outcome, OutcomeKind, ReadTransfer, RetransmitPolicy

log = logger(__name__)

Address = tuple[str, int]


_UNKNOWN_TID = encode_error(ErrorCode.UNKNOWN_TRANSFER_ID, "Unknown transfer ID")
# The opcodes of datagrams that may cost something: a transfer, or a reply.
_REQUESTS = (b"\0\1", b"\0\2")

# Endings that show the client heard the transfer: always worth their line.
_ANSWERED = frozenset({OutcomeKind.COMPLETE, OutcomeKind.PROBE, OutcomeKind.ABORTED})

# How each ending is logged.
_LEVELS = {
    OutcomeKind.COMPLETE: "info",
    OutcomeKind.PROBE: "info",
    OutcomeKind.ABORTED: "warn",
    OutcomeKind.TIMED_OUT: "warn",
    OutcomeKind.TOO_LONG: "warn",
    OutcomeKind.TOO_SLOW: "warn",
    OutcomeKind.EVICTED: "info",
    OutcomeKind.SHUTDOWN: "info",
    OutcomeKind.FAILED: "error",
}


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
        self.started = server.clock.seconds()
        self.transfer: ReadTransfer | None = None
        self.port: IListeningPort | None = None
        self.closed: Deferred[None] | None = None

    def startProtocol(self) -> None:
        transport: Any = self.transport
        peer = self.peer
        # Straight to the socket where there is one: the checks of a transport's write
        # were done once, for the request. The transfer treats a full buffer as loss.
        send: Callable[[bytes], object]
        if isinstance(transport, TransferSocket):
            send = transport.serve(peer)
        else:
            write = transport.write

            def send(datagram: bytes) -> None:
                write(datagram, peer)

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

    def confirmed(self) -> None:
        self.server.transfer_confirmed(self)

    def finished(self, outcome: Outcome) -> None:
        self.server.transfer_finished(self, outcome)


@define(repr=False)
class TFTPServer(DatagramProtocol):
    """
    The request port's protocol: turns read requests into transfers, within limits
    (see L{pxepilot.tftp.admission}).

    @ivar files: What is served.
    @ivar clock: Time, for every transfer.
    @ivar open_port: Opens a transfer's port on a local address.
    @ivar interface: The address the request port is bound to (C{""}: all IPv4; C{::}:
        all IPv6 and IPv4).
    @ivar limits: Option limits.
    @ivar policy: Retransmission, duration and progress limits.
    @ivar max_transfers: Concurrent transfers in all.
    @ivar max_per_client: Concurrent acknowledged transfers from one IP address; its
        request budget is in proportion.
    @ivar grace: Seconds a new transfer cannot be displaced by another address.
    @ivar events: Told of every transfer that ends.
    @ivar outcomes: Transfers by how they ended, and requests turned away (C{refused},
        with an ERROR or one rationed away; C{rate-limited} and C{dropped}, silently:
        over their address's budget, or while every place was new), since start.
    @ivar bytes_sent: Bytes acknowledged by clients, since start.
    @ivar digest: What is only counted for the periodic summary line (L{log_summary}).
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
    grace: float = GRACE_SECONDS
    send_refusal: Callable[[str, Address, bytes], None] = field(
        default=Factory(lambda: _send_once)
    )
    events: IEvents = field(factory=EventBus)
    transfers: dict[tuple[str, int, bytes], TransferProtocol] = field(factory=dict)
    per_client: Counter[str] = field(factory=Counter)
    outcomes: Counter[str] = field(factory=Counter)
    bytes_sent: int = 0
    digest: Digest = field(init=False)
    _closing: list[Deferred[None]] = field(factory=list)
    _places: Places = field(init=False)
    _budgets: RequestBudgets = field(init=False)
    _refusals: Bucket | None = field(init=False, default=None)
    # Transfers not acknowledged yet, oldest first, and how many of them and of the
    # acknowledged ones each address holds.
    _unconfirmed: OrderedDict[tuple[str, int, bytes], TransferProtocol] = field(
        init=False, factory=OrderedDict
    )
    _unconfirmed_of: Counter[str] = field(init=False, factory=Counter)
    _confirmed_of: Counter[str] = field(init=False, factory=Counter)

    def __attrs_post_init__(self) -> None:
        self._places = Places(self.max_transfers, self.max_per_client, self.grace)
        self._budgets = RequestBudgets(self._places.request_burst, BUDGET_REFILL_SECONDS)
        self.digest = Digest(self.clock.seconds())

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
        if destination == "255.255.255.255" or destination.startswith("ff"):
            # RFC 1123 4.2.3.5: requests to a broadcast address are ignored; IPv6's
            # multicast groups (ff00::/8) are its broadcast.
            return
        if datagram[:2] in _REQUESTS and not self._budgets.allow(client[0], self.clock.seconds()):
            # Before anything is parsed or allocated, and without a reply: a flood from
            # a few addresses costs no more than this, at any rate.
            self.outcomes["rate-limited"] += 1
            self.digest.count("rate-limited", client[0])
            return
        try:
            packet = decode(datagram)
        except PacketError as e:
            if len(datagram) >= 2 and datagram[:2] in _REQUESTS:
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
        admitted, victim = self._find_room(client, local)
        if not admitted:
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
        if victim is not None:
            # Only now: a request that is refused displaces nobody.
            self._evict(victim)
        netascii = request.mode == "netascii"
        if netascii:
            reader = NetasciiReader(reader)
        negotiated = negotiate(request.options, reader.size, netascii, self.limits)

        protocol: TransferProtocol

        def make_transfer(send: Callable[[bytes], object]) -> ReadTransfer:
            return ReadTransfer(
                reader,
                negotiated,
                send,
                self.clock,
                self.policy,
                protocol.finished,
                protocol.confirmed,
            )

        protocol = TransferProtocol(self, key, name, negotiated.describe(), make_transfer)
        self.transfers[key] = protocol
        self.per_client[client[0]] += 1
        self._unconfirmed[key] = protocol
        self._unconfirmed_of[client[0]] += 1
        try:
            # Where the system did not say which address was asked, one of the client's
            # family: the routing table picks the source.
            port = self.open_port(protocol, local or ("::" if ":" in client[0] else ""))
        except Exception as e:
            self._remove(protocol)
            reader.close()
            self._refuse(
                client,
                local,
                shown,
                ErrorCode.NOT_DEFINED,
                "Server error",
                f"cannot open a transfer port: {e}",
            )
            return
        if self.transfers.get(key) is protocol:
            protocol.port = port
        else:
            # It ended while it started (its first read failed): close what it opened.
            port.stopListening()

    def _find_room(self, client: Address, local: str) -> tuple[bool, TransferProtocol | None]:
        """
        Whether a new transfer from C{client} may start, and the transfer that must give
        way to it, if any; a request that may not is turned away here.
        """
        address = client[0]
        now = self.clock.seconds()
        unconfirmed = self._unconfirmed
        oldest = next(iter(unconfirmed.values())).started if unconfirmed else None
        load = Load(
            transfers=len(self.transfers),
            unconfirmed=len(unconfirmed),
            oldest_unconfirmed=oldest,
            held=self.per_client.get(address, 0),
            held_confirmed=self._confirmed_of.get(address, 0),
            held_unconfirmed=self._unconfirmed_of.get(address, 0),
        )
        verdict = admit(self._places, load, now)
        if verdict is Verdict.ADMIT:
            return True, None
        if verdict is Verdict.REPLACE_OWN:
            return True, next(p for p in unconfirmed.values() if p.peer[0] == address)
        if verdict is Verdict.EVICT_STALE:
            return True, next(iter(unconfirmed.values()))
        if verdict is Verdict.EVICT_SLOWEST:
            slowest = self._slowest(now)
            if slowest is not None:
                return True, slowest
            verdict = Verdict.BUSY
        self.digest.count("busy", address)
        if verdict is Verdict.DROP:
            # Every place unacknowledged is in its grace: a flood is on. A client asks
            # again when it hears nothing, which an ERROR would stop.
            self.outcomes["dropped"] += 1
        else:
            self.outcomes["refused"] += 1
            busy = encode_error(ErrorCode.NOT_DEFINED, "Server busy, try again later")
            self._reply(local, client, busy)
        return False, None

    def _slowest(self, now: float) -> TransferProtocol | None:
        slowest: TransferProtocol | None = None
        lowest = 0.0
        for protocol in self.transfers.values():
            transfer = protocol.transfer
            if transfer is None or not transfer.confirmed:
                continue
            rate = evictable_rate(now - transfer.started, transfer.bytes_acknowledged)
            if rate is not None and (slowest is None or rate < lowest):
                slowest, lowest = protocol, rate
        return slowest

    def _evict(self, protocol: TransferProtocol) -> None:
        if protocol.transfer is not None:
            # No ERROR: the address may be spoofed, and the client never answered.
            protocol.transfer.stop(OutcomeKind.EVICTED, None)
        else:
            self._remove(protocol)

    def _refuse(
        self, client: Address, local: str, shown: str, code: ErrorCode, message: str, reason: str
    ) -> None:
        if self.digest.may_log(client[0], self.clock.seconds()):
            log.info(
                "TFTP {client} {file}: refused ({code}), {reason}",
                client=client[0],
                file=shown,
                code=int(code),
                reason=reason,
                outcome="refused",
            )
        self.outcomes["refused"] += 1
        self._reply(local, client, encode_error(code, message))

    def _reply(self, local: str, client: Address, datagram: bytes) -> None:
        """
        Send an ERROR to a request, within the server's budget for them: beyond it, the
        request is only dropped.
        """
        now = self.clock.seconds()
        self._refusals, allowed = take(
            self._refusals, now, REFUSALS_PER_SECOND, REFUSALS_PER_SECOND
        )
        if allowed:
            self.send_refusal(local, client, datagram)

    # -- transfers

    def transfer_confirmed(self, protocol: TransferProtocol) -> None:
        """
        The client of C{protocol} acknowledged something: it is real.
        """
        if self._unconfirmed.get(protocol.key) is protocol:
            del self._unconfirmed[protocol.key]
            _decrement(self._unconfirmed_of, protocol.peer[0])
            self._confirmed_of[protocol.peer[0]] += 1

    def transfer_finished(self, protocol: TransferProtocol, outcome: Outcome) -> None:
        transfer = protocol.transfer
        assert transfer is not None
        now = self.clock.seconds()
        duration = now - transfer.started
        sent = transfer.bytes_acknowledged
        self.bytes_sent += sent
        self.outcomes[outcome.kind.value] += 1
        client = protocol.peer[0]
        if outcome.kind is OutcomeKind.EVICTED:
            # Thousands in a flood: counted for the summary, never a line each.
            self.digest.count("evicted", client)
        elif transfer.confirmed or outcome.kind in _ANSWERED or self.digest.may_log(client, now):
            detail = f", {outcome.detail}" if outcome.detail else ""
            getattr(log, _LEVELS[outcome.kind])(
                "TFTP {client} {file}: {outcome}{detail} (options {options}; {bytes} bytes "
                "in {duration:.3f} s)",
                client=client,
                file=protocol.name,
                outcome=outcome.kind.value,
                detail=detail,
                options=protocol.options,
                bytes=sent,
                duration=duration,
            )
        self._remove(protocol)
        self.events.publish(
            TransferFinished(client, protocol.name, outcome.kind.value, sent, duration)
        )

    def _remove(self, protocol: TransferProtocol) -> None:
        key = protocol.key
        address = protocol.peer[0]
        if self.transfers.get(key) is protocol:
            del self.transfers[key]
            _decrement(self.per_client, address)
            if self._unconfirmed.get(key) is protocol:
                del self._unconfirmed[key]
                _decrement(self._unconfirmed_of, address)
            else:
                _decrement(self._confirmed_of, address)
        port = protocol.port
        protocol.port = None
        if port is not None:
            stopped = port.stopListening()
            if isinstance(stopped, Deferred):
                self._closing.append(stopped)
                stopped.addBoth(lambda _: self._closing.remove(stopped))

    def log_summary(self) -> None:
        """
        Log one line of what was only counted since the last call, if anything was.
        """
        try:
            summary = self.digest.flush(self.clock.seconds())
            if summary is not None:
                log.warn(
                    "{summary}",
                    summary=summary.text(),
                    counts=dict(summary.counts),
                    addresses=summary.addresses,
                )
        except Exception:
            # Called from a timer that would stop for good on an exception.
            log.failure("TFTP summary failed")

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


def _decrement(counts: Counter[str], address: str) -> None:
    counts[address] -= 1
    if counts[address] <= 0:
        del counts[address]


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
