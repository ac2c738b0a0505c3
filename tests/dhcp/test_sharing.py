"""
proxyDHCP beside a DHCP server on the same host: who holds a port, read from a made-up
C{/proc}; and, over real sockets on unprivileged ports, the choice between port 67 alone
on every address, shared on the broadcast address, or a start-up that stops with one
line naming the holder. That broadcasts reach both sockets is shown on a real network
in tests/e2e/test_shared_dhcp.py.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import LogEvent
from zope.interface import implementer

from pxepilot.dhcp.proxy import ProxyDHCPServer
from pxepilot.dhcp.service import ProxyDHCPHealth, ProxyDHCPService
from pxepilot.dhcp.sharing import (
    BesideTheServer,
    PortHeld,
    PortHolder,
    name_the_holder,
    port_holder,
)
from pxepilot.events import EventBus, IEventObserver, ProxyDHCPReplied
from pxepilot.listening import ListenFailed
from pxepilot.tap import StartUpFailed, _StartUp
from tests.dhcp.packets import EFI_VENDOR, bios_discover, pxe_request

HEADER = (
    "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
    "   uid  timeout inode ref pointer drops\n"
)


def udp_line(local: str, inode: int, remote: str = "00000000:0000") -> str:
    return (
        f" 2089: {local} {remote} 07 00000000:00000000 00:00000000 00000000"
        f"     0        0 {inode} 2 000000009bc41d54 0\n"
    )


def udp6_line(port: str, inode: int) -> str:
    return (
        f"  545: 00000000000000000000000000000000:{port} 00000000000000000000000000000000:0000"
        f" 07 00000000:00000000 00:00000000 00000000     0        0 {inode} 2"
        " 00000000c1a2b3d4 0\n"
    )


class FakeProc:
    """
    The parts of C{/proc} the lookup reads: the UDP tables, and processes with their
    descriptors (symbolic links, as the kernel shows them) and names.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "net").mkdir(parents=True)
        (root / "self").mkdir()  # not a process number: skipped

    def udp(self, *lines: str, table: str = "udp") -> None:
        (self.root / "net" / table).write_text(HEADER + "".join(lines))

    def process(self, pid: int, name: str | None, *targets: str) -> None:
        fd = self.root / str(pid) / "fd"
        fd.mkdir(parents=True)
        for number, target in enumerate(targets):
            os.symlink(target, fd / str(number))
        if name is not None:
            (self.root / str(pid) / "comm").write_text(name + "\n")


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


def test_the_process_with_the_socket_is_named(proc: FakeProc) -> None:
    """
    The socket bound to port 67 (C{0043}) in C{net/udp}, the process with a descriptor
    on it, the name in its C{comm}.
    """
    proc.udp(
        udp_line("0100007F:0035", 1111),
        udp_line("00000000:0043", 4242),
        udp_line("00000000:0044", 5353),
    )
    proc.process(77, "systemd-resolve", "/dev/null", "socket:[1111]")
    proc.process(812, "dnsmasq", "/dev/null", "pipe:[9]", "socket:[4242]")
    proc.process(900, "dhclient", "socket:[5353]")
    holder = port_holder(67, proc.root)
    assert holder == PortHolder("dnsmasq", 812)
    assert str(holder) == "dnsmasq (pid 812)"


def test_an_ipv6_socket_is_named_too(proc: FakeProc) -> None:
    proc.udp()
    proc.udp(udp6_line("0043", 777), table="udp6")
    proc.process(31, "pihole-FTL", "socket:[777]")
    assert port_holder(67, proc.root) == PortHolder("pihole-FTL", 31)


def test_a_remote_port_67_is_not_a_holder(proc: FakeProc) -> None:
    """
    A socket connected to someone's port 67 does not hold this host's port 67.
    """
    proc.udp(udp_line("0A00000B:A1B2", 4242, remote="0A000001:0043"))
    proc.process(812, "dhcp-relay", "socket:[4242]")
    assert str(port_holder(67, proc.root)) == "another process"


def test_ignored_sockets_are_not_named(proc: FakeProc) -> None:
    """
    pxe-pilot's own socket on the shared port is not the process it shares with.
    """
    proc.udp(udp_line("FFFFFFFF:0043", 99), udp_line("00000000:0043", 4242))
    proc.process(5, "twistd", "socket:[99]")
    proc.process(812, "dnsmasq", "socket:[4242]")
    assert port_holder(67, proc.root, ignored={99}) == PortHolder("dnsmasq", 812)
    assert str(port_holder(67, proc.root, ignored={99, 4242})) == "another process"


@pytest.mark.parametrize(
    "layout",
    ["no tables", "nobody on the port", "socket of no visible process", "no comm"],
)
def test_what_proc_cannot_tell_is_another_process(proc: FakeProc, layout: str) -> None:
    """
    A socket of a process in another namespace, a table that cannot be read, a
    process gone meanwhile: the holder is "another process", or has no name.
    """
    if layout == "nobody on the port":
        proc.udp(udp_line("00000000:0044", 4242))
    elif layout == "socket of no visible process":
        proc.udp(udp_line("00000000:0043", 4242))
        proc.process(812, "dnsmasq", "socket:[4243]")
    elif layout == "no comm":
        proc.udp(udp_line("00000000:0043", 4242))
        proc.process(812, None, "socket:[4242]")
        assert str(port_holder(67, proc.root)) == "? (pid 812)"
        return
    assert str(port_holder(67, proc.root)) == "another process"


def test_malformed_table_lines_are_skipped(proc: FakeProc) -> None:
    proc.udp("garbage\n", " 1: 00000000:0043 x\n", udp_line("00000000:0043", 4242))
    proc.process(812, "dnsmasq", "socket:[4242]")
    assert port_holder(67, proc.root) == PortHolder("dnsmasq", 812)


def test_this_process_is_found_in_the_real_proc() -> None:
    """
    On this machine's C{/proc}: a socket this test binds is this process's.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", 0))
        assert port_holder(holder.getsockname()[1]).pid == os.getpid()


# Real sockets: the port number is injected, the "other DHCP server" is a socket of
# this test.

THIS_PROCESS = f"{Path('/proc/self/comm').read_text().strip()} (pid {os.getpid()})"


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def a_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))
        number: int = probe.getsockname()[1]
        return number


@pytest.fixture
def other_server(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """
    A socket on every address of a free port, sharing it (C{SO_REUSEADDR}, as dnsmasq
    with C{bind-interfaces}) or not, as the test's parameter says.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if request.param == "sharing":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def service_on(reactor: Any, dhcp_port: int, pxe_port: int = 0) -> ProxyDHCPService:
    return ProxyDHCPService(
        reactor,
        lambda local: f"http://{local}/boot.ipxe",
        lambda: None,
        ports=(dhcp_port, pxe_port),
    )


def test_a_free_port_is_bound_alone_on_every_address(reactor: Any, events: list[LogEvent]) -> None:
    """
    The usual case: port 67 on every address, alone (relayed and unicast requests
    reach pxe-pilot too); nothing said about sharing.
    """
    service = service_on(reactor, a_free_port())
    service.startService()
    try:
        assert service.ports[0].address().host == "0.0.0.0"
        assert service.ports[0].shared_with is None
        assert "port_67" not in ProxyDHCPHealth(service).check().details
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
            late.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError, match="in use") as raised:
                late.bind(("0.0.0.0", service.ports[0].address().port))
            assert raised.value.errno == errno.EADDRINUSE
    finally:
        service.stopService()
    assert not [e for e in events if "shares" in str(e.get("log_format", ""))]


async def turns(count: int = 20) -> None:
    from twisted.internet import reactor

    for _ in range(count):
        await deferLater(reactor, 0.01, lambda: None)


@pytest.mark.parametrize("other_server", ["sharing"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_a_sharing_holder_shares_the_broadcast_address(
    reactor: Any, other_server: socket.socket, events: list[LogEvent]
) -> None:
    """
    Port 67 held by a server that allows sharing: pxe-pilot binds the broadcast
    address beside it and names the holder in one log line and in C{/health}. A
    datagram sent to the host's own address (here, loopback) reaches the holder, not
    pxe-pilot.
    """
    number = other_server.getsockname()[1]
    service = service_on(reactor, number)
    service.startService()
    try:
        assert service.ports[0].address().host == "255.255.255.255"
        assert service.ports[0].address().port == number
        assert str(service.ports[0].shared_with) == THIS_PROCESS
        details = ProxyDHCPHealth(service).check().details
        assert details["port_67"] == f"shared with {THIS_PROCESS}, broadcasts only"
        assert details["listening"] is True
        [line] = [e for e in events if "shares UDP port" in str(e.get("log_format", ""))]
        assert line["holder"] == THIS_PROCESS
        assert line["port"] == number

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(bios_discover(), ("127.0.0.1", number))
        await turns()
        data, _sender = other_server.recvfrom(2048)
        assert data == bios_discover()
        assert sum(service.outcomes.values()) == 0
    finally:
        await service.stopService()
    assert service.ports[0].shared_with is None


@pytest.mark.parametrize("other_server", ["exclusive"], indirect=True)
def test_a_holder_that_does_not_share_stops_start_up(
    reactor: Any, other_server: socket.socket
) -> None:
    """
    Port 67 held without C{SO_REUSEADDR} (dnsmasq without C{bind-interfaces}): one
    line naming the holder and the two ways out; under twistd, behind the option.
    """
    number = other_server.getsockname()[1]
    service = service_on(reactor, number)
    with pytest.raises(PortHeld) as raised:
        service.startService()
    try:
        assert raised.value.why() == (
            f"UDP port {number} is held by {THIS_PROCESS}, which does not share it: "
            "run it with bind-interfaces (Pi-hole: Settings > DNS > Interface settings > "
            "Bind only to interface), or run pxe-pilot's proxyDHCP on another host"
        )
        assert not service.ports[0].listening
    finally:
        service.stopService()

    top = _StartUp({}, {})
    service_on(reactor, number).setServiceParent(top)
    with pytest.raises(StartUpFailed) as failed:
        top.privilegedStartService()
    line = str(failed.value)
    assert line.startswith(f"pxe-pilot: error: --proxy-dhcp: UDP port {number} is held by ")
    assert "\n" not in line


@pytest.mark.parametrize("other_server", ["sharing", "exclusive"], indirect=True)
def test_port_4011_is_never_shared(reactor: Any, other_server: socket.socket) -> None:
    """
    The PXE port is pxe-pilot's alone, whether its holder shares or not: start-up
    stops, naming the holder.
    """
    number = other_server.getsockname()[1]
    service = service_on(reactor, 0, number)
    with pytest.raises(PortHeld) as raised:
        service.startService()
    try:
        assert raised.value.why() == (
            f"UDP port {number} is held by {THIS_PROCESS}: stop it, "
            "or run pxe-pilot's proxyDHCP on another host"
        )
    finally:
        result = service.stopService()
        assert isinstance(result, Deferred)


def test_other_failures_are_left_as_they_are() -> None:
    """
    Only a port in use has a holder to name: a port that needs root stays what it was.
    """
    failure = ListenFailed("proxyDHCP", "", 67, OSError(errno.EACCES, "Permission denied"))
    assert name_the_holder(failure, shareable=True) is failure
    in_use = ListenFailed("proxyDHCP", "", 67, OSError(errno.EADDRINUSE, "in use"))
    assert isinstance(name_the_holder(in_use, shareable=True), PortHeld)


class RecordingTransport:
    """
    What a port does for proxyDHCP: allow broadcasts, send.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def setBroadcastAllowed(self, allowed: bool) -> None:
        pass

    def send_from(self, data: bytes, address: tuple[str, int], local: str, interface: int) -> None:
        self.sent.append((data, address))

    def write(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append((data, address))


@implementer(IEventObserver)
class Published:
    def __init__(self) -> None:
        self.events: list[object] = []

    def observe(self, event: object) -> None:
        self.events.append(event)


def test_requests_on_the_shared_port_are_left_to_the_dhcp_server() -> None:
    """
    Beside the DHCP server, both name the host's address as server identifier: a
    REQUEST naming it is the DHCP server's. proxyDHCP counts it as ignored and sends
    nothing (UEFI firmware took an answer of both for the DHCP server's and stopped);
    a DISCOVER is offered as ever, and a malformed datagram is still the server's to
    count.
    """
    events = EventBus()
    published = Published()
    events.subscribe(published)
    server = ProxyDHCPServer(
        67, lambda local: f"http://{local}/boot.ipxe", lambda: None, events=events
    )
    beside = BesideTheServer(server)
    transport = RecordingTransport()
    beside.makeConnection(transport)
    arrival = ("192.0.2.10", "255.255.255.255", 3)
    request = pxe_request(3, arch=7, vendor=EFI_VENDOR, server_id="192.0.2.10", flags=0x8000)

    beside.addressedDatagramReceived(request, ("0.0.0.0", 68), *arrival)
    assert transport.sent == []
    assert server.outcomes == {"ignored": 1}
    assert published.events == [
        ProxyDHCPReplied(
            "ignored", "52:54:00:a1:b2:c3", "a request for the DHCP server on this host"
        )
    ]

    beside.datagramReceived(request, ("0.0.0.0", 68))
    beside.addressedDatagramReceived(bios_discover(), ("0.0.0.0", 68), *arrival)
    beside.addressedDatagramReceived(b"\x01", ("0.0.0.0", 68), *arrival)
    assert server.outcomes == {"ignored": 2, "offered": 1, "malformed": 1}
    [(_offer, destination)] = transport.sent
    assert destination == ("255.255.255.255", 68)

    beside.doStop()
    assert server.transport is None
