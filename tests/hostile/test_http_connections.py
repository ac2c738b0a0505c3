"""
What one HTTP client may hold of the server: the request head and body deadlines, the
write timeout of a response nobody reads, the per-address connection limit, the
descriptor limit, and query secrets kept out of the access log.

In memory on a L{Clock} first, then a few checks over real loopback sockets.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.application.service import IServiceCollection, MultiService
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import LogEvent
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from pxepilot import Config, PxePilot, make_service
from pxepilot.hosts.ledger import run_here
from pxepilot.http.limits import (
    BODY_TIMED_OUT,
    DESCRIPTOR_LIMIT,
    EVICTED,
    HEAD_TIMED_OUT,
    PER_ADDRESS_LIMIT,
    WRITE_TIMED_OUT,
    ConnectionGate,
    HTTPLimits,
    descriptors_in_use,
    soft_descriptor_limit,
)
from pxepilot.http.site import PxePilotSite, is_secret_name, redact_query
from pxepilot.http.tcp_access import drop_now, unsent_bytes
from tests.conftest import AnswersDir, clock_at_now, fixture_bytes

LIMITS = HTTPLimits()
BIG = 8 << 20
GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: pxe\r\n\r\n"


class Wire(StringTransport):
    """
    The server's side of one connection, in memory. Closing reaches the protocol on
    the next turn of the clock, as over TCP. With a C{window}, the client takes only
    what L{take} lets it: once more than the window waits, the server is paused (its
    transport's buffer is full), and resumed once all was taken, as Twisted's TCP
    transport does.
    """

    def __init__(self, clock: Clock, peer: str, window: int | None = None) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, 40000))
        self.clock = clock
        self.window = window
        self.written = 0
        self.taken = 0
        self.aborted = False
        self.lost = False
        self.protocol: Any = None
        self._paused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.written += len(data)
        full = self.window is not None and self.written - self.taken > self.window
        if full and not self._paused and self.producer is not None:
            self._paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def take(self, count: int) -> None:
        self.taken = min(self.written, self.taken + count)
        if self._paused and self.taken == self.written and self.producer is not None:
            self._paused = False
            self.producer.resumeProducing()

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            self.clock.callLater(0, self._gone)

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()

    def _gone(self) -> None:
        self.lost = True
        self.protocol.connectionLost(Failure(ConnectionDone()))


def closing(wire: Wire) -> bool:
    """
    Whether the server closed, or began to close, the connection.
    """
    return bool(wire.disconnecting)


def connect(site: PxePilotSite, peer: str = "192.0.2.50", window: int | None = None) -> Wire:
    """
    A new connection from C{peer} to C{site}.
    """
    channel = site.buildProtocol(IPv4Address("TCP", peer, 40000))
    assert channel is not None
    clock = cast(Clock, site.reactor)
    wire = Wire(clock, peer, window)
    wire.protocol = channel
    channel.makeConnection(wire)
    return wire


def send(wire: Wire, data: bytes) -> None:
    wire.protocol.dataReceived(data)


@pytest.fixture
def clock() -> Clock:
    return clock_at_now()


@pytest.fixture
def pilot(answers_dir: AnswersDir, tmp_path: Path, clock: Clock) -> PxePilot:
    answers_dir.write("default.toml")
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "big.bin").write_bytes(os.urandom(BIG))
    config = Config(
        answers_dir=answers_dir.root,
        assets_dir=assets,
        state_dir=tmp_path / "state",
        answer_check="warn",
    )
    return PxePilot(config, clock, run_blocking=run_here)


@pytest.fixture
def site(pilot: PxePilot) -> PxePilotSite:
    return pilot.site()


# The request head and body.


def test_a_trickled_head_is_closed_while_others_are_served(
    site: PxePilotSite, clock: Clock
) -> None:
    """
    A client that sends its request a byte every 5 s (each resetting the idle timeout)
    gets a 408 and its connection closed once the head deadline passes; a client that
    connects meanwhile and sends its request at once is answered.
    """
    slow = connect(site, "192.0.2.1")
    send(slow, b"GET /health HTTP/1.1\r\n")
    elapsed = 0.0
    while elapsed < 10 * LIMITS.head_timeout:
        clock.advance(5)
        elapsed += 5
        if closing(slow):
            break
        send(slow, b"X")
        if elapsed == 15:
            normal = connect(site, "192.0.2.2")
            send(normal, GET_HEALTH)
            assert normal.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert closing(slow)
    assert elapsed == LIMITS.head_timeout
    assert slow.value() == (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    clock.advance(0)
    assert slow.lost
    assert site.gate.counts[HEAD_TIMED_OUT] == 1
    assert site.gate.open == 1


def test_a_silent_connection_is_closed_by_the_head_deadline(
    site: PxePilotSite, clock: Clock
) -> None:
    """
    A connection that sends nothing at all is closed too, and freed.
    """
    wire = connect(site)
    clock.advance(LIMITS.head_timeout - 1)
    assert not closing(wire)
    clock.advance(1)
    assert closing(wire)
    clock.advance(0)
    assert site.gate.open == 0


def test_a_trickled_body_is_closed(site: PxePilotSite, clock: Clock) -> None:
    """
    A body that arrives ten bytes every 5 s gets a 408 once its deadline passes, though
    the head came at once; a body sent in time is answered.
    """
    body = fixture_bytes("installer-post-9.2.json")
    head = (
        b"POST /answer HTTP/1.1\r\nHost: pxe\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    slow = connect(site, "192.0.2.1")
    send(slow, head)
    sent = 0
    while sent < len(body) - 10:
        clock.advance(5)
        if closing(slow):
            break
        send(slow, body[sent : sent + 10])
        sent += 10
    assert slow.value().startswith(b"HTTP/1.1 408 ")
    assert sent < len(body)
    assert site.gate.counts[BODY_TIMED_OUT] == 1

    fast = connect(site, "192.0.2.2")
    send(fast, head)
    clock.advance(LIMITS.body_timeout - 1)
    send(fast, body)
    assert fast.value().startswith(b"HTTP/1.1 200 OK\r\n")


def test_the_body_deadline_grows_with_the_body() -> None:
    """
    A body gets at least the floor, more when it is large; a chunked one is allowed
    what the largest would be.
    """
    limits = HTTPLimits(body_timeout=60, body_rate=1000)
    assert limits.body_deadline(100, 10**6) == 60
    assert limits.body_deadline(120_000, 10**6) == 120
    assert limits.body_deadline(None, 10**6) == 1000


def test_kept_alive_connection_may_idle_between_requests(site: PxePilotSite, clock: Clock) -> None:
    """
    Between two requests the idle timeout rules, not the head deadline: a client that
    waits longer than the head deadline before its next request is answered, and the
    deadline starts with that request's first byte.
    """
    wire = connect(site)
    send(wire, GET_HEALTH)
    clock.advance(LIMITS.head_timeout + 10)
    assert not closing(wire)
    wire.clear()
    send(wire, GET_HEALTH)
    assert wire.value().startswith(b"HTTP/1.1 200 OK\r\n")
    wire.clear()
    send(wire, b"GET /health HTTP/1.1\r\n")
    clock.advance(LIMITS.head_timeout)
    assert wire.value().startswith(b"HTTP/1.1 408 ")


# Responses a client does not read.


def download(site: PxePilotSite, window: int) -> Wire:
    wire = connect(site, window=window)
    send(wire, b"GET /assets/big.bin HTTP/1.1\r\nHost: pxe\r\n\r\n")
    return wire


def test_a_download_nobody_reads_is_closed(site: PxePilotSite, clock: Clock) -> None:
    """
    A client that stops reading a download has its connection dropped (not closed
    gracefully: nothing would leave) after one to two write timeouts.
    """
    wire = download(site, window=64 << 10)
    wire.take(100 << 10)
    waited = 0
    while not closing(wire) and waited <= 3 * LIMITS.write_timeout:
        clock.advance(1)
        waited += 1
    assert LIMITS.write_timeout <= waited <= 2 * LIMITS.write_timeout
    assert wire.aborted
    clock.advance(0)
    assert site.gate.counts[WRITE_TIMED_OUT] == 1
    assert site.gate.open == 0


def test_a_slow_reader_keeps_its_download(site: PxePilotSite, clock: Clock) -> None:
    """
    A client that reads slowly (256 KiB every 10 s, far slower than the write timeout
    would allow a stalled one) gets the whole file.
    """
    wire = download(site, window=64 << 10)
    for _ in range(1000):
        if wire.written > BIG and wire.taken == wire.written:
            break
        assert not closing(wire)
        wire.take(256 << 10)
        clock.advance(10)
    assert not closing(wire)
    assert wire.written > BIG
    assert site.gate.counts[WRITE_TIMED_OUT] == 0


class Slow(Resource):
    """
    Answers each request when the test says so.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Request] = []

    def render_GET(self, request: Request) -> Any:
        self.pending.append(request)
        return NOT_DONE_YET

    def answer_all(self) -> None:
        for request in self.pending:
            request.write(b"done")
            request.finish()
        self.pending = []


def test_a_response_the_server_takes_long_to_make_is_not_a_stalled_client(
    clock: Clock,
) -> None:
    """
    Nothing waits on the client while the server works out its answer: the write
    timeout does not close it, however long that takes.
    """
    slow = Slow()
    site = PxePilotSite(slow, reactor=clock)
    wire = connect(site)
    send(wire, GET_HEALTH)
    clock.advance(LIMITS.write_timeout * 5)
    assert not closing(wire)
    slow.answer_all()
    assert wire.value().startswith(b"HTTP/1.1 200 OK\r\n")


# One address.


def plain_site(clock: Clock, **gate: Any) -> PxePilotSite:
    limits = gate.pop("limits", LIMITS)
    return PxePilotSite(
        Slow(), reactor=clock, gate=ConnectionGate(limits, clock, in_use=lambda: None, **gate)
    )


def test_one_address_may_hold_64_connections(clock: Clock, events: list[LogEvent]) -> None:
    """
    The 65th connection from one address is closed at once, before anything is read;
    another address is served; once one of the 64 closes, the address may connect
    again. One log line says the address is refused, however often it comes back.
    """
    site = plain_site(clock)
    held = [connect(site, "192.0.2.7") for _ in range(LIMITS.per_address)]
    assert not any(closing(wire) for wire in held)
    refused = [connect(site, "192.0.2.7") for _ in range(3)]
    assert all(wire.aborted and wire.value() == b"" for wire in refused)
    other = connect(site, "192.0.2.8")
    send(other, GET_HEALTH)
    assert not closing(other)
    clock.advance(0)
    assert site.gate.counts[PER_ADDRESS_LIMIT] == 3
    assert site.gate.open == LIMITS.per_address + 1
    assert len([e for e in events if "the most one address may" in e.get("log_format", "")]) == 1

    held[0].loseConnection()
    clock.advance(0)
    again = connect(site, "192.0.2.7")
    assert not closing(again)
    assert connect(site, "192.0.2.7").aborted
    assert len([e for e in events if "the most one address may" in e.get("log_format", "")]) == 1


def test_the_limit_counts_an_ipv4_mapped_address_as_itself(clock: Clock) -> None:
    """
    Over a dual-stack socket the same client is C{::ffff:192.0.2.7}: one count.
    """
    site = plain_site(clock, limits=HTTPLimits(per_address=2))
    connect(site, "192.0.2.7")
    connect(site, "::ffff:192.0.2.7")
    assert connect(site, "192.0.2.7").aborted


def test_trusted_proxies_are_exempt(clock: Clock) -> None:
    """
    A reverse proxy in C{--trusted-proxies} carries many clients on one address: it
    may hold more.
    """
    site = plain_site(clock, trusted=(ipaddress.ip_network("192.0.2.0/28"),))
    held = [connect(site, "192.0.2.7") for _ in range(LIMITS.per_address + 10)]
    assert not any(closing(wire) for wire in held)


# The descriptor limit.


class Port:
    """
    A listening port that records whether it is read.
    """

    def __init__(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


def reading(port: Port) -> bool:
    return port.reading


class Descriptors:
    """
    The process's descriptors, as the gate sees them: some held by other parts, one
    for each connection open.
    """

    def __init__(self, limit: int, others: int) -> None:
        self.limit = limit
        self.others = others
        self.gate: ConnectionGate | None = None

    def in_use(self) -> int:
        assert self.gate is not None
        return self.others + self.gate.open


def gated_site(clock: Clock, descriptors: Descriptors) -> tuple[PxePilotSite, Slow, Port]:
    slow = Slow()
    gate = ConnectionGate(
        LIMITS, clock, limit=lambda: descriptors.limit, in_use=descriptors.in_use
    )
    descriptors.gate = gate
    port = Port()
    gate.watch(port)
    return PxePilotSite(slow, reactor=clock, gate=gate), slow, port


def busy(site: PxePilotSite, count: int) -> list[Wire]:
    """
    C{count} connections, each from its own address, whose request is being answered.
    """
    wires = []
    for n in range(count):
        wire = connect(site, f"10.0.{n // 250}.{n % 250 + 1}")
        send(wire, GET_HEALTH)
        wires.append(wire)
    return wires


def test_near_the_descriptor_limit_accepting_stops_and_resumes(
    clock: Clock, events: list[LogEvent]
) -> None:
    """
    When connections being answered bring the descriptors in use to the limit less
    the reserve, the ports stop accepting; one accepted meanwhile is closed at once.
    Once enough have closed, they accept again by themselves. One log line each way.
    """
    descriptors = Descriptors(limit=1024, others=40)
    site, slow, port = gated_site(clock, descriptors)
    high = 1024 - LIMITS.descriptor_reserve
    wires = busy(site, high - 40 - 1)
    assert reading(port)
    wires += busy(site, 1)
    assert not reading(port)
    assert site.gate.open == high - 40
    late = connect(site, "192.0.2.99")
    assert late.aborted
    assert site.gate.counts[DESCRIPTOR_LIMIT] == 1
    assert site.gate.counts[EVICTED] == 0

    slow.answer_all()
    for wire in wires[: LIMITS.resume_margin - 1]:
        wire.loseConnection()
    clock.advance(0)
    assert not reading(port)
    wires[LIMITS.resume_margin].loseConnection()
    clock.advance(0)
    assert reading(port)
    assert not connect(site, "192.0.2.99").disconnecting
    said = [e["log_format"] for e in events if "HTTP: " in e.get("log_format", "")]
    assert len(said) == 2
    assert "not accepting" in said[0] and "accepting connections again" in said[1]


def test_descriptors_freed_elsewhere_resume_accepting(clock: Clock) -> None:
    """
    When other parts held the descriptors (a TFTP burst) and let them go, the ports
    accept again within a second, though no HTTP connection closed.
    """
    descriptors = Descriptors(limit=1024, others=1024 - LIMITS.descriptor_reserve - 1)
    site, _, port = gated_site(clock, descriptors)
    busy(site, 1)
    assert not reading(port)
    descriptors.others = 100
    clock.advance(1)
    assert reading(port)


def test_near_the_limit_the_oldest_idle_connection_makes_room(clock: Clock) -> None:
    """
    Connections that never sent a request (a slowloris) are closed, oldest first, to
    make room for new ones: the ports keep accepting and the new client is answered.
    """
    descriptors = Descriptors(limit=512, others=40)
    site, slow, port = gated_site(clock, descriptors)
    count = 512 - LIMITS.descriptor_reserve - 40 - 1
    idle = [connect(site, f"10.1.{n // 50}.{n % 50 + 1}") for n in range(count)]
    assert reading(port)
    assert not any(closing(wire) for wire in idle)
    client = connect(site, "192.0.2.10")
    send(client, GET_HEALTH)
    assert reading(port)
    assert idle[0].aborted
    assert not any(closing(wire) for wire in idle[1:])
    assert site.gate.counts[EVICTED] == 1
    assert len(slow.pending) == 1


def test_room_is_made_from_a_crowded_address_first(clock: Clock) -> None:
    """
    A connection of an address that holds many waiting ones goes before an older one
    of a machine that holds one: a booting machine's request is not the one dropped
    while a slowloris host is.
    """
    descriptors = Descriptors(limit=512, others=40)
    site, _, port = gated_site(clock, descriptors)
    count = 512 - LIMITS.descriptor_reserve - 40 - 1
    machines = [connect(site, f"10.1.0.{n + 1}") for n in range(10)]
    crowd = [connect(site, f"10.2.{n // 60}.1") for n in range(count - 10)]
    connect(site, "192.0.2.10")
    assert reading(port)
    assert crowd[0].aborted
    assert not any(closing(wire) for wire in machines + crowd[1:])


def test_the_descriptor_count_of_this_process() -> None:
    """
    The default count and limit are this process's own.
    """
    before = descriptors_in_use()
    assert before is not None
    with open(os.devnull) as _:
        assert descriptors_in_use() == before + 1
    assert soft_descriptor_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# Secrets in the access log.


@pytest.mark.usefixtures("debug_logging")
def test_query_secrets_are_redacted_in_the_access_log(
    site: PxePilotSite, events: list[LogEvent]
) -> None:
    """
    A token in the query string is logged as C{<redacted>}; other parameters as sent.
    """
    wire = connect(site)
    send(
        wire,
        b"GET /health?token=s3cret-1&mac=aa:bb&access_token=s3cret-2&Answer-Token=s3cret-3"
        b"&apiKey=s3cret-4 HTTP/1.1\r\nHost: pxe\r\n\r\n",
    )
    [access] = [e for e in events if str(e.get("path", "")).startswith("/health")]
    assert access["path"] == (
        "/health?token=<redacted>&mac=aa:bb&access_token=<redacted>"
        "&Answer-Token=<redacted>&apiKey=<redacted>"
    )
    assert "s3cret" not in "\n".join(str(e) for e in events)


@pytest.mark.parametrize(
    ("uri", "logged"),
    [
        (b"/answer", b"/answer"),
        (b"/a?token=x", b"/a?token=<redacted>"),
        (b"/a?mac=x&key=y&sig=z", b"/a?mac=x&key=<redacted>&sig=<redacted>"),
        (b"/a?X-Amz-Signature=x&password=y", b"/a?X-Amz-Signature=<redacted>&password=<redacted>"),
        (b"/a?to%6Ben=x", b"/a?to%6Ben=<redacted>"),
        (b"/a?token&mac=", b"/a?token&mac="),
        (b"/a?client_secret=x&secret=y", b"/a?client_secret=<redacted>&secret=<redacted>"),
    ],
)
def test_redact_query(uri: bytes, logged: bytes) -> None:
    """
    Secret values go, whatever the name's case, spelling or escaping; names stay.
    """
    assert redact_query(uri) == logged


@pytest.mark.parametrize("name", ["mac", "version", "keyboard", "tokenizer", "path"])
def test_plain_names_are_not_secrets(name: str) -> None:
    """
    Names of ordinary parameters are logged with their values.
    """
    assert not is_secret_name(name)


# Over real sockets.


def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await deferLater(reactor(), 0.01, lambda: None)
    raise AssertionError("the condition never held")


class Keeper(Protocol):
    def connectionMade(self) -> None:
        self.factory.accepted.append(self)


@pytest_twisted.async_yield_fixture
async def tcp_pair() -> AsyncIterator[tuple[Any, socket.socket]]:
    """
    A real TCP connection on loopback: the server's transport and a blocking client
    socket that reads only when told.
    """
    factory = Factory.forProtocol(Keeper)
    factory.accepted = []  # type: ignore[attr-defined]
    port = reactor().listenTCP(0, factory, interface="127.0.0.1")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
    client.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        client.connect(("127.0.0.1", port.getHost().port))
    await until(lambda: bool(factory.accepted))  # type: ignore[attr-defined]
    transport = factory.accepted[0].transport  # type: ignore[attr-defined]
    yield transport, client
    client.close()
    transport.abortConnection()
    await maybeDeferred(port.stopListening)


@pytest_twisted.ensureDeferred
async def test_unsent_bytes_fall_only_as_the_client_reads(
    tcp_pair: tuple[Any, socket.socket],
) -> None:
    """
    C{unsent_bytes} counts what the transport holds and what waits in the socket: it
    stays put while the client reads nothing and falls once it reads. If Twisted's
    buffers move, this fails, and the write timeout could not tell a slow reader.
    """
    transport, client = tcp_pair
    assert isinstance(transport, tcp.Connection)
    assert unsent_bytes(transport) == 0
    transport.write(b"x" * (4 << 20))
    await deferLater(reactor(), 0.2, lambda: None)
    stalled = unsent_bytes(transport)
    assert stalled is not None and stalled > 0
    await deferLater(reactor(), 0.2, lambda: None)
    assert unsent_bytes(transport) == stalled
    taken = 0
    while taken < 1 << 20:
        with contextlib.suppress(BlockingIOError):
            taken += len(client.recv(1 << 16))
        await deferLater(reactor(), 0.001, lambda: None)
    after = unsent_bytes(transport)
    assert after is not None and after < stalled

    class Wrapper:
        def __init__(self, inner: object) -> None:
            self.transport = inner

    assert unsent_bytes(Wrapper(transport)) == after
    assert unsent_bytes(StringTransport()) is None
    assert unsent_bytes(Wrapper(Wrapper(Wrapper(Wrapper(transport))))) is None


@pytest_twisted.ensureDeferred
async def test_drop_now_frees_the_descriptor_at_once(
    tcp_pair: tuple[Any, socket.socket], events: list[LogEvent]
) -> None:
    """
    C{drop_now} closes the socket before it returns (Twisted alone would on its next
    turn), the client sees a reset, and Twisted's own clean-up on its next turn copes
    with the socket already closed, logging no error.
    """
    transport, client = tcp_pair
    handle = transport.getHandle()
    before = descriptors_in_use()
    drop_now(transport)
    assert handle.fileno() == -1
    assert descriptors_in_use() == cast(int, before) - 1
    await until(lambda: not transport.connected)
    client.setblocking(True)
    client.settimeout(5)
    with pytest.raises(ConnectionResetError):
        client.recv(1)
    assert not [e for e in events if e.get("log_failure") is not None]
    drop_now(StringTransport())


def raw_get(port: int, path: str = "/health", source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0)
    ) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: pxe\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received


class Server:
    def __init__(self, top: MultiService) -> None:
        self.top = top

    def port(self, name: str) -> int:
        service: Any = cast(IServiceCollection, self.top).getServiceNamed(name)
        return cast(int, service.address().port)


@pytest_twisted.async_yield_fixture
async def server(answers_dir: AnswersDir, tmp_path: Path) -> AsyncIterator[Server]:
    answers_dir.write("default.toml")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        https_port = probe.getsockname()[1]
    config = Config(
        answers_dir=answers_dir.root,
        assets_dir=tmp_path,
        state_dir=tmp_path / "state",
        port=0,
        interface="127.0.0.1",
        https_port=https_port,
        answer_check="warn",
    )
    top = cast(MultiService, make_service(config))
    top.startService()
    yield Server(top)
    await top.stopService()


def slowloris(port: int, count: int, sources: list[str]) -> list[socket.socket]:
    """
    C{count} connections spread over C{sources}, each with half a request head.
    """
    held = []
    for n in range(count):
        sock = socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=(sources[n % len(sources)], 0)
        )
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)
    return held


def flood(port: int, sources: list[str], each: int) -> list[socket.socket]:
    """
    C{each} connections from every one of C{sources}, opened without waiting for any.
    """
    opened = []
    for _ in range(each):
        for source in sources:
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind((source, 0))
            sock.connect_ex(("127.0.0.1", port))
            opened.append(sock)
    return opened


def closed_by_server(sock: socket.socket, wait: float = 2) -> bool:
    """
    Whether the server closed C{sock} within C{wait} seconds.
    """
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def closed_among(socks: list[socket.socket], wait: float) -> int:
    """
    How many of C{socks} the server closed within C{wait} seconds.
    """
    time.sleep(wait)
    return sum(closed_by_server(sock, 0.001) for sock in socks)


@pytest_twisted.ensureDeferred
async def test_slowloris_sockets_do_not_stop_health(server: Server) -> None:
    """
    With 100 connections holding half a request head (from two addresses), a normal
    GET /health is answered at once.
    """
    port = server.port("http")
    held = await deferToThread(slowloris, port, 100, ["127.0.0.2", "127.0.0.3"])
    try:
        started = time.monotonic()
        reply = await deferToThread(raw_get, port)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert time.monotonic() - started < 5
    finally:
        for sock in held:
            sock.close()


@pytest_twisted.ensureDeferred
async def test_the_per_address_limit_holds_on_https_too(server: Server) -> None:
    """
    On the HTTPS port, the 65th connection from one address is closed before any
    handshake, while another address completes its request.
    """
    port = server.port("https")

    def crowd() -> tuple[list[socket.socket], bool, bytes]:
        held = [
            socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.4", 0))
            for _ in range(LIMITS.per_address)
        ]
        extra = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.4", 0))
        refused = closed_by_server(extra)
        extra.close()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw) as tls:
            tls.sendall(GET_HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            reply = tls.recv(100)
        return held, refused, reply

    held, refused, reply = await deferToThread(crowd)
    try:
        assert refused
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert not any(closed_by_server(sock, 0.1) for sock in held[-2:])
    finally:
        for sock in held:
            sock.close()


@pytest_twisted.ensureDeferred
async def test_the_write_timeout_over_a_socket(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    Over a real socket (the body sent by the kernel), with a short write timeout: a
    client that reads nothing of a download is dropped; one that reads slowly gets
    every byte.
    """
    answers_dir.write("default.toml")
    assets = tmp_path / "assets"
    assets.mkdir()
    data = os.urandom(6 << 20)
    (assets / "big.bin").write_bytes(data)
    config = Config(answers_dir=answers_dir.root, assets_dir=assets, state_dir=tmp_path / "s")
    pilot = PxePilot(config, run_blocking=run_here)
    site = PxePilotSite(pilot.resource, limits=HTTPLimits(write_timeout=0.3))
    listening = reactor().listenTCP(0, site, interface="127.0.0.1")
    port = listening.getHost().port

    def fetch(pause: float | None) -> tuple[int, bool]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /assets/big.bin HTTP/1.1\r\nHost: pxe\r\n\r\n")
        received = 0
        try:
            if pause is None:
                time.sleep(2)
                sock.settimeout(5)
                # What the kernels buffered arrives; then the server's drop.
                with contextlib.suppress(ConnectionResetError):
                    while chunk := sock.recv(1 << 20):
                        received += len(chunk)
                return received, True
            sock.settimeout(5)
            while received < len(data):
                chunk = sock.recv(256 << 10)
                if not chunk:
                    return received, True
                received += len(chunk)
                time.sleep(pause)
            return received, False
        finally:
            sock.close()

    try:
        received, dropped = await deferToThread(fetch, None)
        assert dropped and received < len(data)
        await until(lambda: site.gate.counts[WRITE_TIMED_OUT] == 1)
        received, dropped = await deferToThread(fetch, 0.02)
        assert received >= len(data) and not dropped
        assert site.gate.counts[WRITE_TIMED_OUT] == 1
    finally:
        await maybeDeferred(listening.stopListening)


@contextlib.contextmanager
def twistd_with_descriptors(limit: int, args: list[str], log: Path) -> Iterator[int]:
    """
    C{twistd pxe-pilot} whose soft descriptor limit is C{limit}, logging to C{log}: its
    HTTP port.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PXE_PILOT_")}
    environ["PXE_PILOT_HTTPS_PORT"] = "0"

    def lower() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "pxe-pilot", *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environ,
            preexec_fn=lower,
        )
    try:
        deadline = time.monotonic() + 30
        while "HTTP listening on" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield int(log.read_text().split("HTTP listening on ")[1].split(":")[1].split()[0])
    finally:
        process.terminate()
        process.wait(20)


def test_a_server_near_its_descriptor_limit_goes_on_answering(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    A real server with 256 descriptors, sent slowloris connections from five addresses
    past what it may hold: it closes the oldest to make room, answers /health
    throughout, and after a burst of 500 more at once, never meets EMFILE, and answers
    once they are gone.
    """
    answers_dir.write("default.toml")
    args = ["--answers", str(answers_dir.root), "--assets", str(tmp_path)]
    args += ["--state", str(tmp_path / "state"), "--interface", "127.0.0.1", "--port", "0"]
    log = tmp_path / "twistd.log"
    with twistd_with_descriptors(256, args, log) as port:
        sources = [f"127.0.0.{n}" for n in range(10, 15)]
        held = slowloris(port, 5 * LIMITS.per_address, sources)
        try:
            for _ in range(5):
                assert raw_get(port, source="127.0.0.20").startswith(b"HTTP/1.1 200 OK\r\n")
            closed = closed_among(held, 0.5)
            assert closed >= len(held) - (256 - LIMITS.descriptor_reserve)
            # A burst the server accepts many of in one turn of its reactor.
            burst = flood(port, [f"127.0.1.{n}" for n in range(1, 11)], 50)
            time.sleep(0.5)
            assert raw_get(port, source="127.0.0.21").startswith(b"HTTP/1.1 200 OK\r\n")
            held += burst
        finally:
            for sock in held:
                sock.close()
        assert raw_get(port).startswith(b"HTTP/1.1 200 OK\r\n")
        metrics = raw_get(port, "/metrics").decode()
        text = log.read_text()
        assert "EMFILE" not in text and "Traceback" not in text, text
    # What the limits did is in the metrics, by reason.
    evicted = re.search(
        r'^pxepilot_http_connections_closed_total\{reason="evicted"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    assert evicted is not None and float(evicted.group(1)) > 0, metrics
    assert re.search(r"^pxepilot_http_connections_open \S+$", metrics, re.MULTILINE), metrics
