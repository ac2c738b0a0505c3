"""
A UDP port bound to every address that knows, for each datagram, which local address
and interface it arrived on (C{IP_PKTINFO}, C{IPV6_PKTINFO}), and can answer from that
interface: TFTP answers from the address a request was sent to, and DHCP answers a
broadcast from a client that has no address yet on the interface it came in on.

Bound to C{::}, the port is dual-stack (Linux's default): an IPv4 datagram arrives from
C{::ffff:10.0.0.5}. The protocols are told C{10.0.0.5}, as from an IPv4 port, and answer
it from an IPv4 socket; what they keep, log and show is the same for both ports.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.internet import udp

from pxepilot.address import plain_address
from pxepilot.logs import logger

log = logger(__name__)

# Linux's IP_PKTINFO; Python 3.11's socket module does not name it.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
PKTINFO6 = struct.Struct("=16si")  # struct in6_pktinfo: addr, ifindex
_ANCILLARY_SPACE = socket.CMSG_SPACE(PKTINFO.size) + socket.CMSG_SPACE(PKTINFO6.size)


class _PortInternals(udp.Port):
    """
    The one place that reaches into L{twisted.internet.udp.Port}'s internals, checked
    against B{Twisted 26.10.0}; C{tests/test_twisted_privates.py} fails if any of them
    disappears or changes shape.

      - C{_bindSocket()} (private): C{startListening} calls it to create and bind the
        socket, before it connects the protocol and starts reading. It is the one moment
        to set a socket option that must hold for the very first datagram. Should
        Twisted stop calling it, L{socket_bound} is never called: no datagram carries
        its local address, TFTP answers from whichever address the routing table picks
        (and a client behind a firewall drops the answer), and proxyDHCP never answers
        a client that has no address yet.
      - C{socket}, C{addressFamily}, C{interface}, C{maxPacketSize}, C{protocol}: what
        C{__init__}, C{_bindSocket} and C{_connectToProtocol} set. Should one be renamed,
        the TFTP and proxyDHCP ports fail to start, or fail at their first datagram.

    Subclasses read these through the names below, never Twisted's own.
    """

    def _bindSocket(self) -> None:
        super()._bindSocket()
        self.socket_bound(self.socket, self.addressFamily, self.interface)

    def socket_bound(self, sock: socket.socket, family: int, interface: str) -> None:
        """
        Called once the socket is bound to C{interface}, before the first datagram is
        read.
        """

    @property
    def bound_socket(self) -> socket.socket:
        """
        The port's socket, once bound.
        """
        return self.socket

    @property
    def max_packet_size(self) -> int:
        """
        The largest datagram the port reads whole.
        """
        size: int = self.maxPacketSize  # set by __init__, which is not annotated
        return size

    @property
    def datagram_protocol(self) -> Any:
        """
        The protocol the port delivers datagrams to.
        """
        return self.protocol


class AddressedPort(_PortInternals):
    """
    Delivers each datagram to C{protocol.addressedDatagramReceived(data, address,
    local, destination, interface)}: the sender, the local address that answers it, the
    address it was sent to (a broadcast address, say) and the interface's index; every
    address in its plain form (L{plain_address}). Where the system cannot say (bound to
    one address), C{datagramReceived} as usual.
    """

    _pktinfo = False

    def socket_bound(self, sock: socket.socket, family: int, interface: str) -> None:
        try:
            if family == socket.AF_INET and interface in ("", "0.0.0.0"):
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                self._pktinfo = True
            elif family == socket.AF_INET6 and interface == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
                self._pktinfo = True
                # IPv4 datagrams of the dual-stack socket: IP_PKTINFO tells a broadcast
                # from a datagram sent to this host, which IPv6's own cannot.
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        except OSError:
            pass

    def doRead(self) -> None:
        if not self._pktinfo:
            super().doRead()
            return
        for _ in range(64):
            try:
                data, ancillary, _flags, address = self.bound_socket.recvmsg(
                    self.max_packet_size, _ANCILLARY_SPACE
                )
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue
            info = _arrival(ancillary)
            client = (plain_address(address[0]), address[1])
            protocol = self.datagram_protocol
            try:
                if info is None:
                    protocol.datagramReceived(data, client)
                else:
                    protocol.addressedDatagramReceived(data, client, *info)
            except Exception:
                log.failure("a datagram from {client} could not be handled", client=client)

    def send_from(self, data: bytes, address: tuple[str, int], local: str, interface: int) -> None:
        """
        Send C{data} out of C{interface} with C{local} as its source address: how a
        reply reaches a host that has no address yet (a broadcast), whatever the
        routing table says. On a dual-stack port an IPv4 address is sent to as the
        socket knows it (C{::ffff:10.0.0.5}).
        """
        if ":" in local:
            info6 = PKTINFO6.pack(socket.inet_pton(socket.AF_INET6, local), interface)
            ancillary = (socket.IPPROTO_IPV6, IPV6_PKTINFO, info6)
        else:
            info = PKTINFO.pack(interface, socket.inet_aton(local), b"\0" * 4)
            ancillary = (socket.IPPROTO_IP, IP_PKTINFO, info)
            if self.bound_socket.family == socket.AF_INET6:
                address = (f"::ffff:{address[0]}", address[1])
        self.bound_socket.sendmsg([data], [ancillary], 0, address)


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> tuple[str, str, int] | None:
    """
    The local address that answers a datagram, the address it was sent to and the
    interface it came in on, from its ancillary data; IPv4's C{IP_PKTINFO} wins, as
    only it tells the two addresses apart.
    """
    found = None
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= PKTINFO.size:
            index, spec_dst, header_dst = PKTINFO.unpack(payload[: PKTINFO.size])
            return socket.inet_ntoa(spec_dst), socket.inet_ntoa(header_dst), index
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(payload) >= PKTINFO6.size:
            packed, index = PKTINFO6.unpack(payload[: PKTINFO6.size])
            destination = plain_address(socket.inet_ntop(socket.AF_INET6, packed))
            # Sent to a multicast group (DHCPv6's): answered from the link's own address,
            # which the routing table picks.
            local = "" if destination.lower().startswith("ff") else destination
            found = (local, destination, index)
    return found
