"""
The TFTP server under abuse, in memory on a L{Clock}: floods of requests nobody
acknowledges, from spoofed addresses or a few real ones, do not lock real clients out;
slow readers neither hold places for long nor lock out new addresses, while a slow real
client is left alone; deciding what iPXE gets reads little; a flood writes a bounded log.
One test does it over real sockets.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import LogEvent, LogLevel
from zope.interface import implementer

from pxepilot.boot.tftp import BootFiles
from pxepilot.tftp.admission import (
    DETAILED_LINES,
    EVICTABLE_AGE,
    GRACE_SECONDS,
    REQUESTS_PER_PLACE,
    SUMMARY_SECONDS,
    RequestBudgets,
)
from pxepilot.tftp.files import IReader, ITFTPFiles, RequestContext, TFTPRoot
from pxepilot.tftp.packets import (
    Ack,
    Data,
    Error,
    OptionAck,
    Packet,
    ReadRequest,
    RequestOption,
    decode,
    encode,
)
from pxepilot.tftp.server import Address, TFTPServer, TransferProtocol, reactor_port_opener
from pxepilot.tftp.service import TFTPService
from tests.test_tftp_server import FakePort

LOCAL = "192.0.2.10"
REAL = ("192.0.2.50", 2000)
SMALL = b"k" * 1000
IPXE_SHAPE = (RequestOption("blksize", b"1432"), RequestOption("tsize", b"0"))


def spoofed(number: int) -> Address:
    """
    The source of the C{number}th request of a flood from random addresses.
    """
    return (f"10.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}", 1024 + number)


@implementer(ITFTPFiles)
class CountingFiles:
    """
    Files as another L{ITFTPFiles} has them, counting opens and bytes read.
    """

    def __init__(self, files: ITFTPFiles) -> None:
        self.files = files
        self.opened = 0
        self.bytes_read = 0

    def open(self, name: str, context: RequestContext) -> IReader:
        self.opened += 1
        return CountingReader(self, self.files.open(name, context))


@implementer(IReader)
class CountingReader:
    def __init__(self, owner: CountingFiles, reader: IReader) -> None:
        self._owner = owner
        self._reader = reader
        self.size = reader.size

    def read(self, offset: int, length: int) -> bytes:
        data = self._reader.read(offset, length)
        self._owner.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._reader.close()


@implementer(IReader)
class LargeEFIReader:
    """
    A large PE image that is not iPXE: C{MZ}, then zeros, never stored.
    """

    def __init__(self, size: int) -> None:
        self.size: int | None = size

    def read(self, offset: int, length: int) -> bytes:
        assert self.size is not None
        length = max(0, min(length, self.size - offset))
        data = b"\0" * length
        return b"MZ" + data[2:] if offset == 0 else data

    def close(self) -> None:
        pass


@implementer(ITFTPFiles)
class LargeEFIFiles:
    def __init__(self, size: int) -> None:
        self.size = size

    def open(self, name: str, context: RequestContext) -> IReader:
        return LargeEFIReader(self.size)


class Harness:
    """
    A TFTP server on a L{Clock}, its transfer ports and refusals kept in memory.
    """

    def __init__(self, files: ITFTPFiles, **kwargs: Any) -> None:
        self.clock = Clock()
        self.ports: list[FakePort] = []
        self.refusals: list[tuple[Address, Packet]] = []
        self.server = TFTPServer(
            files=files,
            clock=self.clock,
            open_port=self.open_port,
            send_refusal=lambda local, client, d: self.refusals.append((client, decode(d))),
            **kwargs,
        )

    def open_port(self, protocol: DatagramProtocol, interface: str) -> FakePort:
        port = FakePort(protocol, interface)
        self.ports.append(port)
        return port

    def request(self, name: str, *options: tuple[str, str], client: Address = REAL) -> None:
        raw = ReadRequest(
            name.encode(), "octet", tuple(RequestOption(k, v.encode()) for k, v in options)
        )
        self.server.requestReceived(encode(raw), client, LOCAL, LOCAL)

    def port_of(self, client: Address) -> FakePort | None:
        """
        The port of the latest transfer to C{client}, if its request was admitted.
        """
        port = self.ports[-1] if self.ports else None
        if port is None or peer(port) != client:
            return None
        return port


def peer(port: FakePort) -> Address:
    protocol = port.protocol
    assert isinstance(protocol, TransferProtocol)
    return protocol.peer


def running(port: FakePort) -> bool:
    return not port.stopped


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "tftp"
    root.mkdir()
    (root / "undionly.kpxe").write_bytes(SMALL)
    (root / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return root


def tftp_events(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if e.get("log_namespace", "").startswith("pxepilot.tftp")]


# Floods of requests nobody acknowledges.


def test_spoofed_flood_between_a_request_and_its_first_ack(root: Path) -> None:
    """
    Between a real client's request and its first ACK, 5,000 requests a second arrive
    from as many spoofed addresses for 1.5 s: the real client's transfer is not
    displaced, and completes; the spoofed addresses get no ERROR.
    """
    h = Harness(TFTPRoot(root))
    h.request("undionly.kpxe")
    port = h.port_of(REAL)
    assert port is not None
    assert port.packets() == [Data(1, SMALL[:512])]
    for number in range(7500):
        h.clock.advance(1 / 5000)
        h.request("undionly.kpxe", client=spoofed(number))
    assert running(port)
    port.receive(Ack(1))
    assert port.packets()[-1] == Data(2, SMALL[512:])
    port.receive(Ack(2))
    assert h.server.outcomes["complete"] == 1
    assert h.refusals == []


def test_a_spoofed_flood_is_bounded(root: Path) -> None:
    """
    Ten seconds of 5,000 requests a second from random addresses: the flood never holds
    more than half the places, opens about one transfer per place and grace period
    instead of one per request, and never displaces an acknowledged transfer; once it
    stops, a new client is served at once.
    """
    h = Harness(TFTPRoot(root))
    steady_client = ("192.0.2.60", 3000)
    h.request("big.bin", client=steady_client)
    steady = h.ports[-1]
    steady.receive(Ack(1), steady_client)
    number = 0
    for block in range(2, 12):
        for _ in range(5000):
            h.clock.advance(1 / 5000)
            h.request("undionly.kpxe", client=spoofed(number))
            number += 1
        assert len(h.server.transfers) <= 1 + h.server.max_transfers // 2
        steady.receive(Ack(block), steady_client)
    places = h.server.max_transfers // 2
    assert len(h.ports) <= 1 + places * (1 + 10 / GRACE_SECONDS)
    assert running(steady)
    assert h.server.outcomes["evicted"] > 0
    assert h.refusals == []
    h.clock.advance(GRACE_SECONDS)
    h.request("undionly.kpxe")
    assert h.port_of(REAL) is not None


def test_a_few_flooding_addresses_cost_nothing(root: Path) -> None:
    """
    A flood from four addresses is cut to their request budgets before any file is
    opened or port allocated, without replies; another client is served as usual.
    """
    files = CountingFiles(TFTPRoot(root))
    h = Harness(files)
    for number in range(20000):
        h.request("big.bin", client=(f"198.51.100.{number % 4}", 1024 + number))
    budget = REQUESTS_PER_PLACE * h.server.max_per_client
    assert files.opened == len(h.ports) <= 4 * budget
    assert h.server.outcomes["rate-limited"] >= 20000 - 4 * budget
    assert h.refusals == []
    h.request("undionly.kpxe")
    port = h.port_of(REAL)
    assert port is not None
    port.receive(Ack(1))
    port.receive(Ack(2))
    assert h.server.outcomes["complete"] == 1


def test_flood_from_the_clients_own_address(root: Path) -> None:
    """
    A flood spoofing a real client's own address holds no more of the server than the
    per-client limit of unacknowledged transfers; once its budget refills a little, the
    client's request displaces the address's oldest unanswered transfer, and the
    client's transfer completes while the flood goes on.
    """
    h = Harness(TFTPRoot(root), max_per_client=8)
    for number in range(3000):
        h.request("undionly.kpxe", client=(REAL[0], 10000 + number))
    assert len(h.server.transfers) == 8
    h.clock.advance(0.5)
    h.request("undionly.kpxe")
    port = h.port_of(REAL)
    assert port is not None
    assert port.packets() == [Data(1, SMALL[:512])]
    for number in range(100):
        h.request("undionly.kpxe", client=(REAL[0], 20000 + number))
    port.receive(Ack(1))
    port.receive(Ack(2))
    assert h.server.outcomes["complete"] == 1
    assert len(h.server.transfers) <= 8
    assert h.refusals == []


def test_an_address_that_asks_again_replaces_its_unanswered_request(root: Path) -> None:
    """
    An address at the per-client limit of unacknowledged transfers that asks again gets
    a transfer, in place of its own oldest unanswered one, even within its grace.
    """
    h = Harness(TFTPRoot(root), max_per_client=2)
    for number in range(3):
        h.request("undionly.kpxe", client=(REAL[0], 3000 + number))
    assert [running(p) for p in h.ports] == [False, True, True]
    assert h.ports[0].packets() == [Data(1, SMALL[:512])]  # no ERROR


def test_full_of_new_transfers_a_newcomer_waits(root: Path) -> None:
    """
    When every unacknowledged place is within its grace, a request from yet another
    address is dropped without a reply (it will ask again); past the grace, the oldest
    unacknowledged transfer gives way to it.
    """
    h = Harness(TFTPRoot(root), max_transfers=4)
    for number in range(2):
        h.request("undionly.kpxe", client=spoofed(number))
    h.request("undionly.kpxe")
    assert h.port_of(REAL) is None
    assert h.server.outcomes["dropped"] == 1
    assert h.refusals == []
    h.clock.advance(GRACE_SECONDS)
    h.request("undionly.kpxe")
    assert h.port_of(REAL) is not None
    assert [running(p) for p in h.ports] == [False, True, True]


def test_a_refused_request_displaces_nobody(root: Path) -> None:
    """
    A request that would take a stale transfer's place but asks for a missing file is
    refused, and the stale transfer goes on.
    """
    h = Harness(TFTPRoot(root), max_transfers=2)
    h.request("undionly.kpxe", client=spoofed(1))
    h.clock.advance(GRACE_SECONDS)
    h.request("missing.bin")
    assert running(h.ports[0])
    assert h.refusals[-1][0] == REAL
    h.request("undionly.kpxe")
    assert not running(h.ports[0])


def test_request_budgets() -> None:
    """
    An address may send a burst, then requests at the refill rate; addresses heard from
    long ago, or beyond the table's capacity, are forgotten, but one that keeps sending
    stays held to its budget among any number of others.
    """
    budgets = RequestBudgets(burst=4, refill_seconds=2, capacity=100)
    assert [budgets.allow("a", 0.0) for _ in range(5)] == [True] * 4 + [False]
    assert budgets.allow("a", 0.5)
    assert not budgets.allow("a", 0.5)
    assert budgets.allow("a", 1.0)
    for number in range(1000):
        assert budgets.allow(f"10.0.{number >> 8}.{number & 255}", 1.0)
        assert not budgets.allow("a", 1.0)
        assert len(budgets) <= 100
    assert budgets.allow("a", 1.5)
    assert len(budgets) == 100
    budgets.allow("b", 100.0)
    assert len(budgets) == 1


# Slow readers.


def start_slow_reader(h: Harness, client: Address, name: str = "big.bin") -> FakePort | None:
    """
    Ask for C{name} in blocks of 8 bytes and acknowledge the OACK.
    """
    h.request(name, ("blksize", "8"), client=client)
    port = h.port_of(client)
    if port is None:
        return None
    assert isinstance(port.packets()[0], OptionAck)
    port.receive(Ack(0), client)
    return port


def acknowledge_latest(port: FakePort) -> None:
    """
    ACK the highest DATA block the port has sent, if it is still running.
    """
    blocks = [p.block for p in port.packets() if isinstance(p, Data)]
    if running(port) and blocks:
        port.receive(Ack(max(blocks)), peer(port))


def test_slow_readers_do_not_lock_out_a_new_address(root: Path) -> None:
    """
    26 addresses with 8 slow readers each (blksize 8, one ACK every 5 s) do not fill the
    server: a new address is served at once, and within about a minute every slow
    reader is ended, its client told.
    """
    h = Harness(TFTPRoot(root))
    readers = []
    for address in range(26):
        for number in range(8):
            port = start_slow_reader(h, (f"198.51.100.{address}", 5000 + number))
            if port is not None:
                readers.append(port)
    for _ in range(4):
        h.clock.advance(5)
        for port in readers:
            acknowledge_latest(port)
    h.request("undionly.kpxe")
    port = h.port_of(REAL)
    assert port is not None
    port.receive(Ack(1))
    port.receive(Ack(2))
    assert h.server.outcomes["complete"] == 1
    for _ in range(11):
        h.clock.advance(5)
        for reader in readers:
            acknowledge_latest(reader)
    assert h.server.transfers == {}
    assert h.server.outcomes["too-slow"] == len(readers)


def test_a_slow_reader_is_ended(root: Path) -> None:
    """
    A transfer progressing at 1.6 bytes a second ends as too slow within about a
    minute, and its client is told.
    """
    h = Harness(TFTPRoot(root))
    port = start_slow_reader(h, REAL)
    assert port is not None
    seconds = 0
    while running(port):
        h.clock.advance(5)
        seconds += 5
        sent = port.packets()
        blocks = [p.block for p in sent if isinstance(p, Data)]
        if blocks and running(port):
            port.receive(Ack(max(blocks)))
        elif not running(port):
            assert sent[-1] == Error(0, "transfer too slow")
    assert 60 <= seconds <= 75
    assert h.server.outcomes["too-slow"] == 1


def test_a_slow_real_client_is_left_alone(root: Path) -> None:
    """
    A real client on a bad link (blocks of 512 bytes, each acknowledged only 3 s after
    it was first sent, so the server retransmits every block) completes, however long
    it takes.
    """
    (root / "loader.bin").write_bytes(b"L" * 40_000)
    h = Harness(TFTPRoot(root))
    h.request("loader.bin", ("blksize", "512"))
    port = h.port_of(REAL)
    assert port is not None
    port.receive(Ack(0))
    block = 0
    while running(port):
        h.clock.advance(3)
        block += 1
        port.receive(Ack(block))
    assert h.server.outcomes["complete"] == 1
    assert h.clock.seconds() > 200


def test_when_full_the_slowest_gives_way(root: Path) -> None:
    """
    A server full of acknowledged transfers: a new address displaces the slowest, if
    it is far slower than real clients; fast transfers are never displaced, and then
    the newcomer is told the server is busy.
    """
    h = Harness(TFTPRoot(root), max_transfers=4)
    clients = [(f"198.51.100.{n}", 4000) for n in range(4)]
    ports = []
    for client in clients:
        h.request("big.bin", ("blksize", "1024"), client=client)
        port = h.port_of(client)
        assert port is not None
        port.receive(Ack(0), client)
        ports.append(port)
    # Three download 10 KB a second, one 512 bytes a second.
    for tenth in range(int(EVICTABLE_AGE * 10) + 10):
        h.clock.advance(0.1)
        for port in ports[:3]:
            acknowledge_latest(port)
        if tenth % 20 == 0:
            acknowledge_latest(ports[3])
    h.request("undionly.kpxe")
    assert h.port_of(REAL) is not None
    assert [running(p) for p in ports] == [True, True, True, False]
    h.request("undionly.kpxe", client=("192.0.2.51", 2000))
    assert h.port_of(("192.0.2.51", 2000)) is None
    assert h.refusals[-1] == (("192.0.2.51", 2000), Error(0, "Server busy, try again later"))


# What iPXE gets, decided cheaply.


def test_ipxe_shaped_request_for_a_large_file_reads_little() -> None:
    """
    Deciding whether a large PE image asked for the way iPXE asks is iPXE itself reads
    its first bytes only; it is served as it is.
    """
    files = CountingFiles(LargeEFIFiles(64 << 20))
    boot = BootFiles(files, lambda context: "http://192.0.2.10:8080/")
    reader = boot.open("grubx64.efi", RequestContext(REAL[0], LOCAL, IPXE_SHAPE))
    assert reader.size == 64 << 20
    assert files.bytes_read <= 64


def test_ipxe_shaped_request_reads_a_bounded_amount() -> None:
    """
    However the file looks, the decision reads at most 2 MiB.
    """
    files = CountingFiles(LargeEFIFiles((2 << 20) - 1))
    boot = BootFiles(files, lambda context: "http://192.0.2.10:8080/")
    boot.open("shimx64.efi", RequestContext(REAL[0], LOCAL, IPXE_SHAPE))
    assert files.bytes_read <= 2 << 20


# What the log says.


def test_a_flood_writes_a_bounded_log(root: Path, events: list[LogEvent]) -> None:
    """
    20,000 requests from spoofed and flooding addresses over 4 s write a bounded number
    of lines; one summary line then says what was turned away and by whom, and nothing
    more is said while nothing happens.
    """
    h = Harness(TFTPRoot(root))
    for number in range(20000):
        h.clock.advance(1 / 5000)
        client = spoofed(number) if number % 2 else (f"198.51.100.{number % 8}", number)
        h.request("undionly.kpxe" if number % 3 else "missing.bin", client=client)
    lines = tftp_events(events)
    assert len(lines) <= DETAILED_LINES
    h.server.log_summary()
    [summary] = tftp_events(events)[len(lines) :]
    assert summary["log_level"] == LogLevel.warn
    text = summary["summary"]
    assert "transfers evicted" in text
    assert "over their address's budget" in text
    assert "198.51.100." in text
    h.server.log_summary()
    assert len(tftp_events(events)) == len(lines) + 1


def test_the_summary_runs_with_the_service(root: Path, events: list[LogEvent]) -> None:
    """
    The service logs the summary on the server's clock while it runs, only when there
    is something to say, and once more when it stops.
    """
    from twisted.internet import reactor

    h = Harness(TFTPRoot(root))
    service = TFTPService(reactor, h.server, 0, "127.0.0.1")
    service.startService()
    try:
        for number in range(200):
            h.request("undionly.kpxe", client=("198.51.100.1", number))
        h.clock.advance(SUMMARY_SECONDS)
        assert len([e for e in tftp_events(events) if "summary" in e]) == 1
        h.clock.advance(SUMMARY_SECONDS)
        assert len([e for e in tftp_events(events) if "summary" in e]) == 1
        for number in range(200):
            h.request("undionly.kpxe", client=("198.51.100.2", number))
    finally:
        service.stopService()
    assert len([e for e in tftp_events(events) if "summary" in e]) == 2
    h.clock.advance(SUMMARY_SECONDS * 3)
    assert len([e for e in tftp_events(events) if "summary" in e]) == 2


# Over real sockets.


def family_of(address: tuple[str, int]) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


def fetch(server: tuple[str, int], name: str, blksize: int) -> bytes:
    """
    Download C{name} in lock-step, sending the request again every half second until
    the server answers, as firmware does: a flood may fill the request port's buffer
    and the kernel then drops requests, this one among them. The data must come from
    the address the request was sent to.
    """
    options = (RequestOption("blksize", str(blksize).encode()), RequestOption("tsize", b"0"))
    with socket.socket(family_of(server), socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for _ in range(20):
            sock.sendto(encode(ReadRequest(name.encode(), "octet", options)), server)
            try:
                datagram, peer = sock.recvfrom(70000)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("no answer to the request")
        sock.settimeout(5)
        assert peer[0] == server[0]
        reply = decode(datagram)
        assert isinstance(reply, OptionAck), reply
        size = int(dict(reply.options)["tsize"])
        sock.sendto(encode(Ack(0)), peer)
        data = bytearray()
        while True:
            datagram, source = sock.recvfrom(70000)
            assert source == peer
            reply = decode(datagram)
            assert isinstance(reply, Data), reply
            if reply.block == (len(data) // blksize + 1) & 0xFFFF:
                data += reply.payload
            sock.sendto(encode(Ack(reply.block)), peer)
            if len(reply.payload) < blksize:
                break
    assert len(data) == size
    return bytes(data)


def flood(server: tuple[str, int], stop: threading.Event, seconds: float) -> int:
    """
    Send read requests to C{server} from 127.0.0.2, from 64 source ports, as fast as
    possible until C{stop} is set; how many were sent. A server bound to C{::} gets
    them as IPv4 datagrams of its dual-stack socket.
    """
    sockets = []
    for _ in range(64):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.2", 0))
        sock.setblocking(False)
        sockets.append(sock)
    # Spellings of the name ("/big.bin", "//big.bin", ...) make each request new to the
    # server, as a fresh source port would.
    datagrams = [
        encode(ReadRequest(b"/" * n + b"big.bin", "octet", (RequestOption("blksize", b"1468"),)))
        for n in range(1, 200)
    ]
    target = ("127.0.0.1", server[1])
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            for datagram in datagrams:
                for sock in sockets:
                    try:
                        sock.sendto(datagram, target)
                        sent += 1
                    except BlockingIOError:
                        time.sleep(0.001)
    finally:
        for sock in sockets:
            sock.close()
    return sent


@pytest.mark.parametrize(
    ("interface", "client", "blksize"),
    [
        ("127.0.0.1", "127.0.0.1", 1468),
        # Bound to ::, the flood comes over IPv4 and the client over IPv6, with the
        # block size OVMF asks for over IPv6.
        ("::", "::1", 1228),
        # Bound to ::, an IPv4 client of the dual-stack socket, answered over IPv4.
        ("::", "127.0.0.1", 1468),
    ],
)
@pytest_twisted.ensureDeferred
async def test_flood_over_sockets(
    root: Path, events: list[LogEvent], interface: str, client: str, blksize: int
) -> None:
    """
    On loopback, a burst of requests from another address while a real client
    downloads a MiB: the client completes, and the bytes are right; over IPv4, over
    IPv6, and both on one dual-stack port.
    """
    from twisted.internet import reactor

    server = TFTPServer(
        files=TFTPRoot(root),
        clock=reactor,
        open_port=reactor_port_opener(reactor),
        interface=interface,
    )
    service = TFTPService(reactor, server, 0, interface)
    service.startService()
    stop = threading.Event()
    try:
        address = (client, service.address().port)
        flooding: Deferred[int] = deferToThread(flood, address, stop, 5.0)
        await deferToThread(time.sleep, 0.05)
        data = await deferToThread(fetch, address, "big.bin", blksize)
        stop.set()
        sent = await flooding
    finally:
        stop.set()
        await service.stopService()
    assert data == (root / "big.bin").read_bytes()
    assert sent > 1000
    assert server.outcomes["rate-limited"] > 0
    # The flood's address is told as IPv4, however it arrived.
    [summary] = [e["summary"] for e in tftp_events(events) if "summary" in e]
    assert "127.0.0.2" in summary
    assert "::ffff:" not in summary
