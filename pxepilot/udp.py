"""
A UDP port bound to every address that knows, for each datagram, which local address
and interface it arrived on (C{IP_PKTINFO}), and can answer from that interface: TFTP
answers from the address a request was sent to, and DHCP answers a broadcast from a
client that has no address yet on the interface it came in on.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.internet import udp

from pxepilot.logs import logger

log = logger(__name__)

# Linux's IP_PKTINFO; Python 3.11's socket module does not name it.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


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
    address it was sent to (a broadcast address, say) and the interface's index. Where
    the system cannot say (not IPv4, or bound to one address), C{datagramReceived} as
    usual.
    """

    _pktinfo = False

    def socket_bound(self, sock: socket.socket, family: int, interface: str) -> None:
        if family == socket.AF_INET and interface in ("", "0.0.0.0"):
            try:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                self._pktinfo = True
            except OSError:
                self._pktinfo = False

    def doRead(self) -> None:
        if not self._pktinfo:
            super().doRead()
            return
        for _ in range(64):
            try:
                data, ancillary, _flags, address = self.bound_socket.recvmsg(
                    self.max_packet_size, socket.CMSG_SPACE(PKTINFO.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue
            info = None
            for level, kind, payload in ancillary:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    index, spec_dst, header_dst = PKTINFO.unpack(payload[: PKTINFO.size])
                    info = (socket.inet_ntoa(spec_dst), socket.inet_ntoa(header_dst), index)
            protocol = self.datagram_protocol
            try:
                if info is None:
                    protocol.datagramReceived(data, address)
                else:
                    protocol.addressedDatagramReceived(data, address, *info)
            except Exception:
                log.failure("a datagram from {client} could not be handled", client=address)

    def send_from(self, data: bytes, address: tuple[str, int], local: str, interface: int) -> None:
        """
        Send C{data} out of C{interface} with C{local} as its source address: how a
        reply reaches a host that has no address yet (a broadcast), whatever the
        routing table says.
        """
        info = PKTINFO.pack(interface, socket.inet_aton(local), b"\0" * 4)
        self.bound_socket.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, address)
