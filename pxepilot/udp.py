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


class AddressedPort(udp.Port):
    """
    Delivers each datagram to C{protocol.addressedDatagramReceived(data, address,
    local, destination, interface)}: the sender, the local address that answers it, the
    address it was sent to (a broadcast address, say) and the interface's index. Where
    the system cannot say (not IPv4, or bound to one address), C{datagramReceived} as
    usual.
    """

    _pktinfo = False

    def _bindSocket(self) -> None:
        super()._bindSocket()
        if self.addressFamily == socket.AF_INET and self.interface in ("", "0.0.0.0"):
            try:
                self.socket.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                self._pktinfo = True
            except OSError:
                self._pktinfo = False

    def doRead(self) -> None:
        if not self._pktinfo:
            super().doRead()
            return
        for _ in range(64):
            try:
                data, ancillary, _flags, address = self.socket.recvmsg(
                    self.maxPacketSize, socket.CMSG_SPACE(PKTINFO.size)
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
            protocol: Any = self.protocol
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
        self.socket.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, address)
