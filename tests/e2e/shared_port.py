"""
The two ends of the shared port 67 check in tests/e2e/test_shared_dhcp.py, each run in
a network namespace of its own (C{python -m tests.e2e.shared_port host|client ...}):

- C{host}: a socket on C{0.0.0.0:67} with C{SO_REUSEADDR} and C{SO_REUSEPORT}, as
  dnsmasq binds its DHCP socket with C{bind-interfaces}, then pxe-pilot's
  L{ProxyDHCPService} on ports 67 and 4011. Prints one JSON line once listening; on
  a line on its standard input, prints what each of them received and stops.
- C{client}: a PXE client without an address broadcasts a BIOS DHCPDISCOVER and waits
  for pxe-pilot's offer; broadcasts a DHCPREQUEST naming the host (the DHCP server it
  chose); then, as a relay agent would, sends a DHCPDISCOVER to the host's own
  address. Prints one JSON line.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from typing import Any

from pxepilot.dhcp.packet import decode
from pxepilot.dhcp.service import ProxyDHCPHealth, ProxyDHCPService
from pxepilot.udp import IP_PKTINFO, PKTINFO
from tests.dhcp.packets import EFI_VENDOR, address, bios_discover, pxe_request

REQUEST_XID = 0x5E1EC7ED
RELAYED_XID = 0x0E1A7ED0


def host() -> None:
    from twisted.internet import reactor

    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("0.0.0.0", 67))
    other.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    received: list[dict[str, Any]] = []

    def receive() -> None:
        while True:
            data, ancillary, _flags, sender = other.recvmsg(2048, socket.CMSG_SPACE(PKTINFO.size))
            destination = "?"
            for level, kind, payload in ancillary:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    destination = socket.inet_ntoa(PKTINFO.unpack(payload[: PKTINFO.size])[2])
            received.append({"xid": decode(data).xid, "to": destination, "from": sender[0]})

    threading.Thread(target=receive, daemon=True).start()

    service = ProxyDHCPService(
        reactor,
        lambda local: f"http://{local}:8080/boot.ipxe",
        lambda: None,
    )
    service.startService()
    print(json.dumps({"dhcp_port": service.ports[0].address().host}), flush=True)

    def finish() -> None:
        details = ProxyDHCPHealth(service).check().details
        print(
            json.dumps(
                {"other": received, "pxe_pilot": dict(service.outcomes), "health": details}
            ),
            flush=True,
        )
        service.stopService()
        reactor.stop()

    def wait_for_the_end() -> None:
        sys.stdin.readline()
        time.sleep(0.5)  # a datagram still on its way is counted
        reactor.callFromThread(finish)  # type: ignore[attr-defined]

    threading.Thread(target=wait_for_the_end, daemon=True).start()
    reactor.run()


def client(interface: str, own_address: str, host_address: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", 68))
    sock.sendto(bios_discover(flags=0x8000), ("255.255.255.255", 67))
    offer: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    while not offer and time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            data, sender = sock.recvfrom(2048)
            reply = decode(data)
            offer = {"from": list(sender), "file": reply.file.decode(), "siaddr": reply.siaddr}
    # The client takes the DHCP server's offer: its REQUEST names the host's address,
    # which is the server identifier of both servers. It is the DHCP server's alone.
    request = pxe_request(
        3, arch=7, vendor=EFI_VENDOR, server_id=host_address, xid=REQUEST_XID, flags=0x8000
    )
    sock.sendto(request, ("255.255.255.255", 67))
    # What a relay agent forwards: unicast to the server's address, giaddr set.
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.sendto(bios_discover(xid=RELAYED_XID, giaddr=address(own_address)), (host_address, 67))
    print(json.dumps({"offer": offer}), flush=True)


if __name__ == "__main__":
    role, *arguments = sys.argv[1:]
    if role == "host":
        host()
    else:
        client(*arguments)
