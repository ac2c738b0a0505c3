"""
proxyDHCP on a host that already runs a DHCP server (dnsmasq, Pi-hole): sharing UDP
port 67 with it without taking any of its traffic, and naming the process that holds a
port when it cannot be shared.

How Linux delivers a UDP datagram decides the design. A datagram sent to one of the
host's addresses (a renewal, a request forwarded by a relay) goes to one socket only:
a second socket bound to the wildcard address could receive what the DHCP server must
see, and break the network's DHCP. A broadcast goes to every socket whose port and
bound address match. A socket may be bound to the limited broadcast address
C{255.255.255.255}: it then receives only datagrams sent to C{255.255.255.255}, which
is how a client without an address asks (DISCOVER, and REQUEST while it has none), and
replies still leave from the interface's own address, chosen per datagram
(C{IP_PKTINFO}). Bound with C{SO_REUSEADDR}, it may sit beside a server's wildcard
socket when that server set C{SO_REUSEADDR} too, as dnsmasq does with
C{bind-interfaces} (or C{bind-dynamic}). C{SO_REUSEPORT} is not set: sharing needs
only C{SO_REUSEADDR}.

Both servers then name the same address as their server identifier (option 54), so a
DHCPREQUEST on port 67 that names it is the DHCP server's to answer: proxyDHCP leaves
every REQUEST on the shared port alone. An answer from both, one without an address,
is what UEFI firmware (EDK2) took for the DHCP server's and stopped on
("PXE-E07: Network device error"). Clients ask proxyDHCP itself on port 4011.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Collection
from pathlib import Path
from typing import Any

from attrs import frozen
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.protocol import DatagramProtocol

from pxepilot.dhcp.packet import MalformedPacket, MessageType, decode
from pxepilot.dhcp.proxy import Outcome, ProxyDHCPServer, mac_of
from pxepilot.events import ProxyDHCPReplied
from pxepilot.listening import ListenFailed
from pxepilot.udp import AddressedPort

LIMITED_BROADCAST = "255.255.255.255"
# What to change on the other server so that it shares port 67.
SHARING_FIX = (
    "run it with bind-interfaces (Pi-hole: Settings > DNS > Interface settings > "
    "Bind only to interface)"
)
ELSEWHERE = "run pxe-pilot's proxyDHCP on another host"


@frozen
class PortHolder:
    """
    A process holding a port, as far as C{/proc} tells: its name and pid, or neither
    (another user's process seen without root, another namespace, a socket that closed
    meanwhile).
    """

    name: str | None = None
    pid: int | None = None

    def __str__(self) -> str:
        if self.pid is None:
            return "another process"
        return f"{self.name or '?'} (pid {self.pid})"


def port_holder(
    port: int, proc: Path = Path("/proc"), ignored: Collection[int] = ()
) -> PortHolder:
    """
    The process that holds UDP C{port} in this network namespace: the sockets bound to
    the port in C{proc/net/udp} and C{udp6}, the process with a descriptor on one of
    them (C{socket:[inode]}), its C{comm}.

    @param ignored: Socket inodes not to name (pxe-pilot's own).
    """
    inodes = [inode for inode in _socket_inodes(port, proc) if inode not in ignored]
    if not inodes:
        return PortHolder()
    links = {f"socket:[{inode}]" for inode in inodes}
    try:
        entries = sorted(proc.iterdir(), key=lambda entry: entry.name)
    except OSError:
        return PortHolder()
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to read
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            if target in links:
                return PortHolder(_command_name(entry), int(entry.name))
    return PortHolder()


def _socket_inodes(port: int, proc: Path) -> list[int]:
    """
    The inodes of the UDP sockets bound to C{port}, IPv4 then IPv6.
    """
    wanted = f"{port:04X}"
    inodes: list[int] = []
    for table in ("udp", "udp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            fields = line.split()
            if len(fields) < 10 or not fields[9].isdigit():
                continue
            _address, _, local_port = fields[1].rpartition(":")
            if local_port.upper() == wanted and fields[9] != "0":
                inodes.append(int(fields[9]))
    return inodes


def _command_name(process: Path) -> str | None:
    try:
        return (process / "comm").read_text().strip() or None
    except OSError:
        return None


class BroadcastSharingPort(AddressedPort):
    """
    A port bound to C{255.255.255.255} with C{SO_REUSEADDR}: it receives the DHCP
    broadcasts every socket on the port receives, and nothing sent to the host's own
    addresses, which stay the other server's. Like the wildcard address, it hears
    every interface, so each datagram says which interface and local address it came
    in on.
    """

    def __init__(self, port: int, protocol: Any, reactor: IReactorFDSet) -> None:
        super().__init__(port, protocol, LIMITED_BROADCAST, reactor=reactor)

    def createInternetSocket(self) -> socket.socket:
        # Before bind: the one moment the kernel looks at it.
        sock: socket.socket = super().createInternetSocket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock

    def socket_bound(self, sock: socket.socket, family: int, interface: str) -> None:
        # Every interface's broadcasts arrive here, as on the wildcard address: each
        # datagram must say which one it came in on.
        super().socket_bound(sock, family, "")

    @property
    def inode(self) -> int:
        """
        The socket's inode, as C{/proc} lists it.
        """
        return os.fstat(self.bound_socket.fileno()).st_ino


class BesideTheServer(DatagramProtocol):
    """
    proxyDHCP on the port it shares with the DHCP server: every datagram but a
    DHCPREQUEST goes to C{server}; a REQUEST is counted as ignored, and left to the
    DHCP server, whose server identifier is pxe-pilot's too.
    """

    noisy = False

    def __init__(self, server: ProxyDHCPServer) -> None:
        self.server = server

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.server.makeConnection(transport)

    def doStop(self) -> None:
        self.server.doStop()
        self.transport = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not self._for_the_dhcp_server(datagram):
            self.server.datagramReceived(datagram, addr)

    def addressedDatagramReceived(
        self, datagram: bytes, addr: Any, local: str, destination: str, interface: int
    ) -> None:
        if not self._for_the_dhcp_server(datagram):
            self.server.addressedDatagramReceived(datagram, addr, local, destination, interface)

    def _for_the_dhcp_server(self, datagram: bytes) -> bool:
        try:
            request = decode(datagram)
        except MalformedPacket:
            return False  # the server counts it
        if request.message_type is not MessageType.REQUEST:
            return False
        mac = mac_of(request)
        self.server.outcomes[Outcome.IGNORED.value] += 1
        self.server.events.publish(
            ProxyDHCPReplied(
                Outcome.IGNORED.value, mac, "a request for the DHCP server on this host"
            )
        )
        return True


@frozen
class Bound:
    """
    The DHCP server port as bound: alone on every address, or beside C{shared_with}.
    """

    port: AddressedPort
    shared_with: PortHolder | None = None


def listen_beside_dhcp_server(
    reactor: IReactorFDSet, server: ProxyDHCPServer, number: int, proc: Path = Path("/proc")
) -> Bound:
    """
    Bind UDP port C{number} for proxyDHCP: on every address, alone, when the port is
    free, so that relayed and unicast requests reach pxe-pilot too; otherwise beside
    the server that holds it, for broadcasts only. Raises L{CannotListenError} when the
    holder does not share the port.
    """
    alone = AddressedPort(number, server, "", reactor=reactor)
    try:
        alone.startListening()
        return Bound(alone)
    except CannotListenError as e:
        if getattr(e.socketError, "errno", None) != errno.EADDRINUSE:
            raise
    shared = BroadcastSharingPort(number, BesideTheServer(server), reactor)
    shared.startListening()
    return Bound(shared, port_holder(number, proc, ignored={shared.inode}))


class PortHeld(ListenFailed):
    """
    A proxyDHCP port another process holds: names it, and says what to do.

    @ivar holder: The process that holds the port.
    @ivar shareable: Whether pxe-pilot can share this port with a server that allows
        it (the DHCP server port can, port 4011 cannot).
    """

    def __init__(self, failure: ListenFailed, holder: PortHolder, shareable: bool) -> None:
        super().__init__(failure.kind, failure.interface, failure.port, failure.socketError)
        self.holder = holder
        self.shareable = shareable

    def why(self) -> str:
        held = f"UDP port {self.port} is held by {self.holder}"
        if self.shareable:
            return f"{held}, which does not share it: {SHARING_FIX}, or {ELSEWHERE}"
        return f"{held}: stop it, or {ELSEWHERE}"


def name_the_holder(
    failure: ListenFailed, shareable: bool, proc: Path = Path("/proc")
) -> ListenFailed:
    """
    C{failure} itself, or, when its port is in use, a L{PortHeld} naming who holds it.
    """
    if failure.errno != errno.EADDRINUSE:
        return failure
    return PortHeld(failure, port_holder(failure.port, proc), shareable)
