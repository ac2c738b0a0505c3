"""
The TFTP request port and transfer ports in memory: requests become transfers on the
right address, bad input changes nothing, limits hold, strangers are turned away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel
from zope.interface import implementer

from pxepilot.tftp.files import TFTPRoot
from pxepilot.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OptionAck,
    Packet,
    ReadRequest,
    RequestOption,
    WriteRequest,
    decode,
    encode,
)
from pxepilot.tftp.server import Address, TFTPServer, TransferProtocol
from pxepilot.tftp.transfer import READ_AHEAD

CLIENT = ("192.0.2.50", 2000)
LOCAL = "192.0.2.10"
CLIENT6 = ("fd00:77::1f2", 2000)
LOCAL6 = "fd00:77::1"


@implementer(IListeningPort)
class FakePort:
    """
    A transfer port that records what is sent through it.
    """

    def __init__(self, protocol: DatagramProtocol, interface: str) -> None:
        self.protocol = protocol
        self.interface = interface
        self.sent: list[tuple[bytes, Address]] = []
        self.stopped = False
        protocol.makeConnection(self)  # type: ignore[arg-type]

    def write(self, datagram: bytes, addr: Address) -> None:
        self.sent.append((datagram, addr))

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface, 40000)

    def packets(self) -> list[Packet]:
        packets = [decode(d) for d, _ in self.sent]
        self.sent.clear()
        return packets

    def receive(self, packet: Packet | bytes, sender: Address = CLIENT) -> None:
        datagram = packet if isinstance(packet, bytes) else encode(packet)
        self.protocol.datagramReceived(datagram, sender)


class Harness:
    def __init__(self, root: Path, **kwargs: Any) -> None:
        self.clock = Clock()
        self.ports: list[FakePort] = []
        self.refusals: list[tuple[str, Address, Packet]] = []
        self.server = TFTPServer(
            files=TFTPRoot(root),
            clock=self.clock,
            open_port=self.open_port,
            send_refusal=lambda local, client, d: self.refusals.append((local, client, decode(d))),
            **kwargs,
        )

    def open_port(self, protocol: DatagramProtocol, interface: str) -> FakePort:
        port = FakePort(protocol, interface)
        self.ports.append(port)
        return port

    def request(
        self,
        name: bytes | str,
        *options: tuple[str, str],
        client: Address = CLIENT,
        mode: str = "octet",
        local: str = LOCAL,
        destination: str = LOCAL,
    ) -> None:
        raw = name.encode() if isinstance(name, str) else name
        packet = ReadRequest(raw, mode, tuple(RequestOption(n, v.encode()) for n, v in options))
        self.server.requestReceived(encode(packet), client, local, destination)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "tftp"
    root.mkdir()
    (root / "undionly.kpxe").write_bytes(b"k" * 1000)
    (tmp_path / "secret").write_bytes(b"s")
    return root


def transfer_events(events: list[LogEvent]) -> list[LogEvent]:
    return [
        e for e in events if e.get("log_namespace") == "pxepilot.tftp.server" and "outcome" in e
    ]


def test_request_becomes_transfer_on_the_local_address(root: Path, events: list[LogEvent]) -> None:
    """
    A read request opens a port on the address it was sent to; the file goes out and one
    log event says how it went.
    """
    h = Harness(root)
    h.request("undionly.kpxe", ("blksize", "512"), ("tsize", "0"))
    [port] = h.ports
    assert port.interface == LOCAL
    assert port.packets() == [OptionAck((("blksize", "512"), ("tsize", "1000")))]
    port.receive(Ack(0))
    assert port.packets() == [Data(1, b"k" * 512)]
    port.receive(Ack(1))
    port.receive(Ack(2))
    assert port.stopped
    assert h.server.transfers == {}
    [event] = transfer_events(events)
    assert (event["outcome"], event["client"], event["file"], event["bytes"]) == (
        "complete",
        "192.0.2.50",
        "undionly.kpxe",
        1000,
    )
    assert event["options"] == "blksize=512 tsize=1000"
    assert h.server.outcomes["complete"] == 1


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (b"missing.efi", ErrorCode.FILE_NOT_FOUND),
        (b"../secret", ErrorCode.ACCESS_VIOLATION),
        (b"..\\secret", ErrorCode.ACCESS_VIOLATION),
        (b"/etc/passwd", ErrorCode.FILE_NOT_FOUND),
        (b"a" * 300, ErrorCode.ILLEGAL_OPERATION),
    ],
)
def test_refused_names(root: Path, name: bytes, code: ErrorCode) -> None:
    """
    Missing files, traversal and absurd names are refused with the right code, from the
    request's local address, and the message never names a server path.
    """
    h = Harness(root)
    h.request(name)
    assert h.ports == []
    [(local, client, packet)] = h.refusals
    assert (local, client) == (LOCAL, CLIENT)
    assert isinstance(packet, Error)
    assert packet.code == code
    assert str(root) not in packet.message
    assert "/" not in packet.message


def test_write_requests_are_refused(root: Path) -> None:
    """
    No file is ever created.
    """
    h = Harness(root)
    h.server.requestReceived(encode(WriteRequest(b"new.bin", "octet")), CLIENT, LOCAL, LOCAL)
    assert h.refusals[0][2] == Error(ErrorCode.ACCESS_VIOLATION, "Write requests are not accepted")
    assert not (root / "new.bin").exists()
    assert h.ports == []


@pytest.mark.parametrize("mode", ["mail", "binary", "ascii", "en_US.UTF-8"])
def test_unknown_modes(root: Path, mode: str) -> None:
    """
    Only octet and netascii are served.
    """
    h = Harness(root)
    h.request("undionly.kpxe", mode=mode)
    assert h.refusals[0][2].code == ErrorCode.ILLEGAL_OPERATION  # type: ignore[union-attr]


def test_netascii(root: Path) -> None:
    """
    netascii requests are converted and carry no tsize.
    """
    (root / "menu.txt").write_bytes(b"a\nb\n")
    h = Harness(root)
    h.request("menu.txt", ("tsize", "0"), mode="netascii")
    [port] = h.ports
    assert port.packets() == [Data(1, b"a\r\nb\r\n")]


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\0",
        b"\0\1",
        b"\0\1\0",
        b"\0\1x",
        b"\0\1x\0",
        b"\x00\x09abc",
        b"\0\3\0\1data",
        b"\0\4\0\1",
        b"\0\5\0\0oops\0",
        b"\xff" * 700,
        b"\0\1" + b"x" * 2000,
    ],
)
def test_malformed_datagrams_change_nothing(root: Path, datagram: bytes) -> None:
    """
    Garbage on the request port is dropped or answered with ERROR 4; no transfer starts
    and the next request is served.
    """
    h = Harness(root)
    h.server.requestReceived(datagram, CLIENT, LOCAL, LOCAL)
    assert h.ports == []
    for _, _, packet in h.refusals:
        assert packet == Error(ErrorCode.ILLEGAL_OPERATION, "Illegal TFTP operation") or (
            isinstance(packet, Error) and packet.code == ErrorCode.FILE_NOT_FOUND
        )
    h.request("undionly.kpxe")
    assert len(h.ports) == 1


@pytest.mark.parametrize("destination", ["255.255.255.255", "ff02::1", "ff05::1:3"])
def test_broadcast_requests_are_ignored(root: Path, destination: str) -> None:
    """
    RFC 1123 4.2.3.5: a request sent to the broadcast address, or to an IPv6 multicast
    group (IPv6's broadcast), gets nothing.
    """
    h = Harness(root)
    client = CLIENT6 if ":" in destination else CLIENT
    h.request("undionly.kpxe", destination=destination, client=client, local="")
    assert h.ports == []
    assert h.refusals == []


def test_an_ipv6_request_becomes_an_ipv6_transfer(root: Path) -> None:
    """
    A request sent to an IPv6 address opens its transfer there; where the system did
    not say which address was asked, the transfer still opens in the client's family.
    """
    h = Harness(root)
    h.request("undionly.kpxe", client=CLIENT6, local=LOCAL6, destination=LOCAL6)
    h.request("undionly.kpxe", client=("fd00:77::1f3", 2001), local="", destination="")
    h.request("undionly.kpxe", client=("192.0.2.51", 2002), local="", destination="")
    assert [port.interface for port in h.ports] == [LOCAL6, "::", ""]
    assert h.ports[0].protocol.peer == CLIENT6  # type: ignore[attr-defined]


def test_repeated_request_does_not_start_a_second_transfer(root: Path) -> None:
    """
    The same client port asking again for the same file is answered by the running
    transfer; another port or another file is a new transfer.
    """
    h = Harness(root)
    h.request("undionly.kpxe")
    h.request("undionly.kpxe")
    assert len(h.ports) == 1
    h.request("undionly.kpxe", client=("192.0.2.50", 2001))
    (root / "ipxe.efi").write_bytes(b"e")
    h.request("ipxe.efi")
    assert len(h.ports) == 3


def test_strangers_get_error_5_and_the_transfer_goes_on(root: Path) -> None:
    """
    A datagram from another address or port gets ERROR 5; the transfer is untouched.
    """
    h = Harness(root)
    h.request("undionly.kpxe")
    [port] = h.ports
    port.packets()
    for stranger in [("192.0.2.50", 2001), ("192.0.2.99", 2000)]:
        port.receive(Ack(1), stranger)
        assert port.sent == [(b"\0\5\0\5Unknown transfer ID\0", stranger)]
        port.sent.clear()
    port.receive(Ack(1))
    assert port.packets() == [Data(2, b"k" * 488)]


def test_peer_garbage_and_illegal_packets(root: Path) -> None:
    """
    From the client: garbled datagrams are dropped; a DATA or request packet is an
    illegal operation that ends the transfer with ERROR 4... (reported as ERROR 0 text).
    """
    h = Harness(root)
    h.request("undionly.kpxe")
    [port] = h.ports
    port.packets()
    port.receive(b"\0")
    port.receive(b"\0\4\0")
    assert port.packets() == []
    assert not port.stopped
    port.receive(Data(1, b"x"))
    assert port.packets() == [Error(0, "Illegal TFTP operation")]
    assert port.stopped


def test_client_error_ends_transfer(root: Path, events: list[LogEvent]) -> None:
    """
    EDK2's size probe is logged as a probe; the next request is served.
    """
    h = Harness(root)
    h.request("undionly.kpxe", ("tsize", "0"), ("blksize", "1468"))
    h.ports[0].receive(Error(8, "User aborted the transfer"))
    assert h.ports[0].stopped
    h.request("undionly.kpxe", ("tsize", "0"), ("blksize", "1468"))
    assert len(h.ports) == 2
    [probe] = transfer_events(events)
    assert probe["outcome"] == "probe"
    assert probe["log_level"] == LogLevel.info


def test_per_client_limit_counts_acknowledged_transfers(root: Path) -> None:
    """
    A client may run as many acknowledged transfers as the per-client limit; its next
    request is refused as busy, while other clients are served.
    """
    h = Harness(root, max_per_client=2)
    for number in (3001, 3002):
        h.request("undionly.kpxe", client=("192.0.2.50", number))
        h.ports[-1].receive(Ack(1), ("192.0.2.50", number))
    h.request("undionly.kpxe", client=("192.0.2.50", 3003))
    assert len(h.ports) == 2
    assert h.refusals[-1][2] == Error(0, "Server busy, try again later")
    h.request("undionly.kpxe", client=("192.0.2.51", 3003))
    assert len(h.ports) == 3


def test_global_limit_evicts_the_oldest_unacknowledged(root: Path) -> None:
    """
    When the places for unacknowledged transfers are taken, a new request is dropped
    without a reply while they are within their grace; past it, the oldest gives way,
    without an ERROR (its address may be spoofed). Acknowledged transfers are never
    displaced for being new, and a full server then says it is busy.
    """
    h = Harness(root, max_transfers=4)
    for number in (3001, 3002):
        h.request("undionly.kpxe", client=("192.0.2.50", number))
    h.ports[0].receive(Ack(1), ("192.0.2.50", 3001))
    h.request("undionly.kpxe", client=("192.0.2.60", 3004))
    h.request("undionly.kpxe", client=("192.0.2.70", 3005))
    assert len(h.ports) == 3
    assert h.refusals == []
    h.clock.advance(2)
    h.request("undionly.kpxe", client=("192.0.2.70", 3005))
    assert [p.stopped for p in h.ports] == [False, True, False, False]
    assert [type(p) for p in h.ports[1].packets()] == [Data, Data]  # DATA 1 and its resend
    for port in h.ports[2:]:
        port.receive(Ack(1), port.protocol.peer)  # type: ignore[attr-defined]
    h.request("undionly.kpxe", client=("192.0.2.80", 3006))
    h.ports[-1].receive(Ack(1), ("192.0.2.80", 3006))
    h.request("undionly.kpxe", client=("192.0.2.90", 3007))
    assert len(h.ports) == 5
    assert h.refusals[-1][2] == Error(0, "Server busy, try again later")


def test_flood_of_abandoned_requests(root: Path) -> None:
    """
    Thousands of requests that are never acknowledged, from the very address of a real
    client and two others: each address is held to its request budget and to the
    per-client limit of unacknowledged transfers. The real client's request, once its
    address's budget has refilled a little, gets its transfer, and completes while the
    flood goes on.
    """
    h = Harness(root, max_transfers=50, max_per_client=8)
    for number in range(3000):
        h.request("undionly.kpxe", client=(f"192.0.2.{number % 3}", 10000 + number))
    assert len(h.server.transfers) == 24
    assert h.server.outcomes["rate-limited"] == 3000 - 3 * 64
    h.clock.advance(0.5)
    real = ("192.0.2.1", 40000)
    h.request("undionly.kpxe", client=real)
    port = h.ports[-1]
    assert port.packets() == [Data(1, b"k" * 512)]
    for number in range(49):
        h.request("undionly.kpxe", client=("192.0.2.1", 20000 + number))
    port.receive(Ack(1), real)
    assert port.packets() == [Data(2, b"k" * 488)]
    for number in range(1000):
        h.request("undionly.kpxe", client=("192.0.2.1", 30000 + number))
    port.receive(Ack(2), real)
    assert port.stopped
    assert h.server.outcomes["complete"] == 1
    assert h.refusals == []


def test_timeouts_close_ports(root: Path) -> None:
    """
    Abandoned transfers time out and their ports close: nothing is left behind.
    """
    h = Harness(root)
    for number in range(5):
        h.request("undionly.kpxe", client=("192.0.2.50", 5000 + number))
    h.clock.pump([1] * 40)
    assert all(p.stopped for p in h.ports)
    assert h.server.transfers == {}
    assert not h.server.per_client
    assert h.server.outcomes["timed-out"] == 5


def test_exception_in_a_transfer_ends_it_with_an_error(root: Path, events: list[LogEvent]) -> None:
    """
    An exception inside a transfer sends ERROR 0 and logs; the server keeps serving.
    """
    (root / "big.bin").write_bytes(b"b" * (READ_AHEAD + 5000))
    h = Harness(root)
    h.request("big.bin")
    port = h.ports[0]
    protocol = port.protocol
    assert isinstance(protocol, TransferProtocol)
    assert protocol.transfer is not None

    def broken(offset: int, length: int) -> bytes:
        raise OSError(5, "Input/output error")

    protocol.transfer._reader.read = broken  # type: ignore[method-assign]
    # The blocks of the first piece read come from it; reading past it fails, quietly
    # while reading ahead, then for the block the client asks for.
    last_read = READ_AHEAD // 512
    for block in range(1, last_read):
        port.receive(Ack(block))
    assert port.packets()[-1] == Data(last_read, b"b" * 512)
    port.receive(Ack(last_read))
    assert port.packets() == [Error(0, "server error")]
    assert port.stopped
    assert [e for e in events if e.get("log_failure")]
    assert transfer_events(events)[-1]["outcome"] == "failed"
    h.request("undionly.kpxe", client=("192.0.2.50", 2001))
    assert not h.ports[-1].stopped


def test_stop_all(root: Path) -> None:
    """
    On shutdown every client is told and every port closed.
    """
    h = Harness(root)
    for number in range(3):
        h.request("undionly.kpxe", client=("192.0.2.50", 6000 + number))
    d = h.server.stop_all()
    assert all(p.stopped for p in h.ports)
    assert all(p.packets()[-1] == Error(0, "Server shutting down") for p in h.ports)
    assert h.server.transfers == {}
    results: list[object] = []
    d.addCallback(results.append)
    assert results


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shared") / "tftp"
    root.mkdir()
    (root / "undionly.kpxe").write_bytes(b"k" * 1000)
    return root


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=700), st.sampled_from([(CLIENT, LOCAL), (CLIENT6, LOCAL6)]))
def test_any_datagram_on_the_request_port(
    shared_root: Path, datagram: bytes, family: tuple[Address, str]
) -> None:
    """
    Whatever arrives on the request port, over IPv4 or IPv6, nothing escapes and the
    next request is served.
    """
    client, local = family
    h = Harness(shared_root)
    h.server.requestReceived(datagram, client, local, local)
    h.request("undionly.kpxe", client=("192.0.2.77", 7777))
    assert h.ports[-1].protocol.peer == ("192.0.2.77", 7777)  # type: ignore[attr-defined]
    h.request("undionly.kpxe", client=("fd00:77::77", 7777), local=LOCAL6, destination=LOCAL6)
    assert h.ports[-1].protocol.peer == ("fd00:77::77", 7777)  # type: ignore[attr-defined]
    h.server.stop_all()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_any_datagrams_on_a_transfer_port(shared_root: Path, datagrams: list[bytes]) -> None:
    """
    Whatever the client sends to its transfer's port, the transfer either goes on or
    ends with an outcome; nothing escapes, and the server keeps serving.
    """
    h = Harness(shared_root)
    h.request("undionly.kpxe")
    port = h.ports[0]
    for datagram in datagrams:
        port.receive(datagram)
    h.clock.pump([1] * 40)
    assert h.server.transfers == {}
    assert sum(h.server.outcomes.values()) == 1
    h.request("undionly.kpxe", client=("192.0.2.77", 7777))
    assert len(h.ports) == 2
