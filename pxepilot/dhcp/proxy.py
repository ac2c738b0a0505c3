"""
proxyDHCP (PXE 2.1, as pixiecore and dnsmasq's proxy mode do it): a second responder
next to the network's own DHCP server, that answers only PXE clients, only with boot
information, and never offers an address.

- Firmware (vendor class C{PXEClient}) gets the iPXE binary for its architecture from
  pxe-pilot's TFTP server: C{undionly.kpxe} for BIOS (option 93 = 0), C{ipxe.efi} for
  x86-64 UEFI (7, and 9, which many firmwares send). BIOS offers carry PXE option 43
  with discovery control 8 (boot from the file in this offer); UEFI offers carry none,
  so that EDK2 asks again on port 4011, the path its firmwares follow reliably.
- UEFI HTTP Boot firmware (vendor class C{HTTPClient}, x86-64: option 93 = 16) gets
  the HTTP URL of C{ipxe.efi} on pxe-pilot's HTTP side, and option 60 C{HTTPClient},
  without which it ignores the offer.
- UEFI x86-64 machines chosen for Secure Boot (L{ShimOffer}) get C{shimx64.efi}, or
  over HTTP Boot its URL, instead of iPXE: shim then loads GRUB from beside it.
- iPXE (user class C{iPXE}) gets the HTTP URL of C{boot.ipxe}.
- Everything else (no C{PXEClient} or C{HTTPClient}, another architecture, another
  message, a hardware type other than Ethernet) gets nothing. Malformed packets are
  dropped and counted. Requests that came through a relay agent are answered through it.
  A reply larger than the client accepts (option 57) is not sent.
"""

from __future__ import annotations

import enum
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.protocol import DatagramProtocol

from pxepilot.dhcp.packet import (
    BOOTREPLY,
    BOOTREQUEST,
    BROADCAST_FLAG,
    MalformedPacket,
    MessageType,
    Option,
    Packet,
    architectures,
    decode,
    encode,
    max_reply_size,
    user_classes,
    vendor_class,
)
from pxepilot.events import EventBus, IEvents, ProxyDHCPReplied
from pxepilot.logs import logger
from pxepilot.macs import MacAddress

log = logger(__name__)

DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
PXE_PORT = 4011

BIOS_FILE = "undionly.kpxe"
EFI_FILE = "ipxe.efi"
SHIM_FILE = "shimx64.efi"
# RFC 4578 client architectures: BIOS, and the two codes x86-64 UEFI firmwares send.
BIOS = 0
EFI_X86_64 = frozenset({7, 9})
# RFC 4578 (IANA's registry): x86-64 UEFI HTTP Boot.
EFI_X86_64_HTTP = 16
PXE_CLIENT = b"PXEClient"
HTTP_CLIENT = b"HTTPClient"
# PXE option 43, sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: no boot server discovery,
# boot the file named in this offer.
PXE_BOOT_FROM_OFFER = bytes([6, 1, 8, 255])
# Machines already named in the log as not served; forgotten all at once at this many,
# so that requests with made-up hardware addresses cannot grow the set without end.
TOLD_LIMIT = 4096


class Outcome(enum.Enum):
    OFFERED = "offered"
    ACKED = "acked"
    NOT_PXE = "not-pxe"
    UNSUPPORTED_ARCH = "unsupported-arch"
    TOO_LARGE = "too-large"
    IGNORED = "ignored"
    MALFORMED = "malformed"


@frozen
class Reply:
    """
    What to send: the packet, and where (a broadcast, a relay, or the client).
    """

    packet: Packet
    address: tuple[str, int]


@frozen
class ShimOffer:
    """
    Who is sent the signed shim rather than iPXE, and its URL for HTTP Boot.

    @ivar wanted: Whether the machine of that MAC address gets shim.
    @ivar http_url: The HTTP URL of C{shimx64.efi} as seen from pxe-pilot's address.
    """

    wanted: Callable[[MacAddress], bool]
    http_url: Callable[[str], str]


@frozen
class Decision:
    outcome: Outcome
    reply: Reply | None = None
    detail: str = ""


def decide(
    request: Packet,
    port: int,
    local: str,
    boot_script_url: Callable[[str], str],
    sender: tuple[str, int],
    http_boot_url: Callable[[str], str] | None = None,
    shim: ShimOffer | None = None,
) -> Decision:
    """
    The answer to C{request}, received on C{port} at pxe-pilot's address C{local} from
    C{sender}.

    @param boot_script_url: The URL of C{boot.ipxe} as seen from C{local}.
    @param http_boot_url: The HTTP URL of C{ipxe.efi} as seen from C{local}, for UEFI
        HTTP Boot firmware; without it, such firmware is not answered.
    @param shim: Who gets shim instead of iPXE; without it, nobody.
    """
    if request.op != BOOTREQUEST or request.htype != 1 or request.hlen != 6:
        return Decision(Outcome.IGNORED, detail="not an Ethernet boot request")
    kind = request.message_type
    wanted = {
        DHCP_SERVER_PORT: (MessageType.DISCOVER, MessageType.REQUEST),
        PXE_PORT: (MessageType.REQUEST, MessageType.INFORM),
    }[port]
    if kind not in wanted:
        return Decision(Outcome.IGNORED, detail=f"{kind.name if kind else 'no'} message")
    vendor = vendor_class(request)
    http = vendor.startswith(HTTP_CLIENT)
    if not vendor.startswith(PXE_CLIENT) and not (http and http_boot_url is not None):
        return Decision(Outcome.NOT_PXE)
    if port == DHCP_SERVER_PORT and kind is MessageType.REQUEST:
        # A REQUEST on port 67 is for whichever server the client chose: answer only
        # one that names pxe-pilot.
        chosen = request.option(Option.SERVER_ID)
        if chosen is None or chosen != socket.inet_aton(local):
            return Decision(Outcome.IGNORED, detail="a request for another server")
    ipxe = b"iPXE" in user_classes(request) or request.option(Option.IPXE_ENCAPSULATED) is not None
    arches = architectures(request) or [BIOS]
    arch = arches[0]
    if ipxe:
        boot_file = boot_script_url(local)
        firmware = "iPXE"
    elif http:
        if arch != EFI_X86_64_HTTP or http_boot_url is None:
            return Decision(
                Outcome.UNSUPPORTED_ARCH, detail=f"HTTP boot client architecture {arch}"
            )
        if shim is not None and shim.wanted(MacAddress(request.chaddr[:6])):
            boot_file, firmware = shim.http_url(local), "UEFI x86-64 HTTP, Secure Boot"
        else:
            boot_file, firmware = http_boot_url(local), "UEFI x86-64 HTTP"
    elif arch == BIOS:
        boot_file, firmware = BIOS_FILE, "BIOS"
    elif arch in EFI_X86_64:
        if shim is not None and shim.wanted(MacAddress(request.chaddr[:6])):
            boot_file, firmware = SHIM_FILE, "UEFI x86-64, Secure Boot"
        else:
            boot_file, firmware = EFI_FILE, "UEFI x86-64"
    else:
        return Decision(Outcome.UNSUPPORTED_ARCH, detail=f"client architecture {arch}")

    options: list[tuple[int, bytes]] = [
        (
            Option.MESSAGE_TYPE,
            bytes([MessageType.OFFER if kind is MessageType.DISCOVER else MessageType.ACK]),
        ),
        (Option.SERVER_ID, socket.inet_aton(local)),
        # HTTP Boot firmware takes only offers that say HTTPClient.
        (Option.VENDOR_CLASS, HTTP_CLIENT if http else PXE_CLIENT),
    ]
    uuid = request.option(Option.CLIENT_UUID)
    if uuid is not None:
        options.append((Option.CLIENT_UUID, uuid))
    if not ipxe and arch == BIOS:
        options.append((Option.VENDOR_SPECIFIC, PXE_BOOT_FROM_OFFER))
    encoded = boot_file.encode("ascii")
    file_field = encoded if len(encoded) < 128 else b""
    if not file_field or http:
        # HTTP Boot firmware asks for option 67 by name (its parameter list).
        options.append((Option.BOOTFILE, encoded))
    reply = Packet(
        op=BOOTREPLY,
        xid=request.xid,
        chaddr=request.chaddr,
        htype=request.htype,
        hlen=request.hlen,
        flags=request.flags,
        ciaddr=request.ciaddr,
        siaddr=local,
        giaddr=request.giaddr,
        sname=local.encode("ascii"),
        file=file_field,
        options=tuple(options),
    )
    if port == PXE_PORT:
        destination = sender  # a client with an address, asking pxe-pilot directly
    elif request.giaddr != "0.0.0.0":
        destination = (request.giaddr, DHCP_SERVER_PORT)
    elif request.ciaddr != "0.0.0.0" and not request.flags & BROADCAST_FLAG:
        destination = (request.ciaddr, DHCP_CLIENT_PORT)
    else:
        destination = ("255.255.255.255", DHCP_CLIENT_PORT)
    size, limit = len(encode(reply)), max_reply_size(request)
    if size > limit:
        return Decision(
            Outcome.TOO_LARGE,
            detail=f"a {size}-byte reply to {firmware}; the client takes at most {limit} bytes",
        )
    outcome = Outcome.OFFERED if kind is MessageType.DISCOVER else Outcome.ACKED
    return Decision(outcome, Reply(reply, destination), f"{firmware}: {boot_file}")


class ProxyDHCPServer(DatagramProtocol):
    """
    One proxyDHCP port (67 or 4011), deciding with L{decide} and sending the reply.

    @ivar outcomes: Packets by what became of them, since start.
    @ivar events: Told what became of every packet.
    """

    noisy = False

    def __init__(
        self,
        port: int,
        boot_script_url: Callable[[str], str],
        fallback_address: Callable[[], str | None],
        outcomes: Counter[str] | None = None,
        events: IEvents | None = None,
        http_boot_url: Callable[[str], str] | None = None,
        shim: ShimOffer | None = None,
    ) -> None:
        self.port_number = port
        self._boot_script_url = boot_script_url
        self._http_boot_url = http_boot_url
        self._shim = shim
        self._fallback_address = fallback_address
        self.outcomes: Counter[str] = outcomes if outcomes is not None else Counter()
        self.events: IEvents = events if events is not None else EventBus()
        self._told: set[tuple[bytes, str]] = set()

    def startProtocol(self) -> None:
        transport: Any = self.transport
        transport.setBroadcastAllowed(True)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        local = self._fallback_address()
        if local is None:
            self._count(Outcome.IGNORED, None, "no IPv4 address of its own to name")
            return
        self._handle(datagram, addr, local, None)

    def addressedDatagramReceived(
        self, datagram: bytes, addr: Any, local: str, destination: str, interface: int
    ) -> None:
        if local == "0.0.0.0":
            # An interface without an IPv4 address: name the configured one, if any.
            self.datagramReceived(datagram, addr)
            return
        self._handle(datagram, addr, local, interface)

    def _handle(self, datagram: bytes, sender: Any, local: str, interface: int | None) -> None:
        try:
            request = decode(datagram)
        except MalformedPacket as e:
            self._count(Outcome.MALFORMED, None, str(e))
            log.debug(
                "proxyDHCP: malformed packet from {client}: {reason}",
                client=sender[0],
                reason=str(e),
            )
            return
        decision = decide(
            request,
            self.port_number,
            local,
            self._boot_script_url,
            sender,
            self._http_boot_url,
            self._shim,
        )
        mac = mac_of(request)
        self._count(decision.outcome, mac, decision.detail)
        if decision.reply is None:
            if (
                decision.outcome in (Outcome.UNSUPPORTED_ARCH, Outcome.TOO_LARGE)
                and (request.chaddr, decision.detail) not in self._told
            ):
                # Once per machine: firmware repeats its request every few seconds.
                if len(self._told) >= TOLD_LIMIT:
                    self._told.clear()
                self._told.add((request.chaddr, decision.detail))
                log.warn("proxyDHCP: {mac} not served: {detail}", mac=mac, detail=decision.detail)
            return
        address = decision.reply.address
        data = encode(decision.reply.packet)
        transport: Any = self.transport
        try:
            if interface is not None and address[0] == "255.255.255.255":
                transport.send_from(data, address, local, interface)
            else:
                transport.write(data, address)
        except OSError as e:
            log.warn(
                "proxyDHCP: cannot answer {mac}: {error}", mac=mac, error=e.strerror or str(e)
            )
            return
        log.info(
            "proxyDHCP {kind} to {mac} on port {port}: {detail}",
            kind=decision.outcome.value,
            mac=mac,
            port=self.port_number,
            detail=decision.detail,
        )

    def _count(self, outcome: Outcome, mac: str | None, detail: str) -> None:
        self.outcomes[outcome.value] += 1
        self.events.publish(ProxyDHCPReplied(outcome.value, mac, detail))


def mac_of(packet: Packet) -> str:
    # Any request that decodes gets this far, whatever its hardware address length
    # (InfiniBand sends none): naming it must not fail.
    address = packet.hardware_address
    return str(MacAddress(address)) if len(address) == 6 else address.hex(":")
