"""
proxyDHCP: L{decide} answers PXE firmware and iPXE with a boot file and never an address,
and stays silent for everyone else; L{ProxyDHCPServer} sends each answer the way it must
travel and survives any datagram; L{ProxyDHCPService} listens on both ports over real
sockets.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, LogLevel

from pxepilot import Config, PxePilot
from pxepilot.dhcp.packet import (
    BOOTREPLY,
    MalformedPacket,
    MessageType,
    Option,
    Packet,
    decode,
    encode,
)
from pxepilot.dhcp.proxy import TOLD_LIMIT, Decision, Outcome, ProxyDHCPServer, decide
from pxepilot.dhcp.service import ProxyDHCPHealth, ProxyDHCPService
from pxepilot.hosts.ledger import run_here
from tests.conftest import events_with
from tests.dhcp.packets import (
    EFI_VENDOR,
    HTTP_VENDOR,
    MAC,
    MAGIC_COOKIE,
    UUID,
    XID,
    address,
    bios_discover,
    http_discover,
    ipxe_discover,
    message,
    option,
    pxe_request,
    uefi_discover,
)

LOCAL = "192.0.2.10"
FALLBACK = "198.51.100.7"
CLIENT = ("0.0.0.0", 68)
BROADCAST = ("255.255.255.255", 68)
INTERFACE = 3
DISCOVER, REQUEST, DECLINE, RELEASE, INFORM = 1, 3, 4, 7, 8


def boot_script_url(local: str) -> str:
    return f"http://{local}:8080/boot.ipxe"


def http_boot_url(local: str) -> str:
    return f"http://{local}:8080/ipxe/ipxe.efi"


def ask(
    raw: bytes,
    port: int = 67,
    url: Callable[[str], str] = boot_script_url,
    http_url: Callable[[str], str] | None = http_boot_url,
) -> Decision:
    return decide(decode(raw), port, LOCAL, url, ("0.0.0.0", 68), http_url)


def sent(decision: Decision, limit: int = 548) -> Packet:
    """
    The reply as the client reads it off the wire, no larger than C{limit}: 548 bytes
    (576 less the IP and UDP headers) unless the client said it takes more.
    """
    assert decision.reply is not None
    data = encode(decision.reply.packet)
    assert len(data) <= limit, "larger than the client accepts"
    return decode(data)


def size_of(decision: Decision) -> int:
    assert decision.reply is not None
    return len(encode(decision.reply.packet))


def test_bios_firmware_is_offered_undionly() -> None:
    """
    A BIOS PXE ROM's DISCOVER gets an OFFER, broadcast to the client port, naming
    pxe-pilot as server and C{undionly.kpxe} as boot file, with PXE discovery control 8
    (boot this file, no menu, no boot server discovery) and no address.
    """
    decision = ask(bios_discover())
    assert decision.outcome is Outcome.OFFERED
    assert decision.reply is not None
    assert decision.reply.address == BROADCAST
    offer = sent(decision)
    assert offer.op == BOOTREPLY
    assert offer.message_type is MessageType.OFFER
    assert (offer.xid, offer.chaddr, offer.htype, offer.hlen) == (XID, MAC + bytes(10), 1, 6)
    assert offer.yiaddr == "0.0.0.0"
    assert offer.siaddr == LOCAL
    assert offer.ciaddr == "0.0.0.0"
    assert offer.giaddr == "0.0.0.0"
    assert offer.file == b"undionly.kpxe"
    assert offer.option(Option.SERVER_ID) == socket.inet_aton(LOCAL)
    assert offer.option(Option.VENDOR_CLASS) == b"PXEClient"
    assert offer.option(Option.CLIENT_UUID) == b"\x00" + UUID
    assert offer.option(Option.VENDOR_SPECIFIC) == bytes([6, 1, 8, 255])
    assert offer.option(Option.BOOTFILE) is None
    # proxyDHCP never hands out network configuration.
    for code in (1, 3, 6, 51, 50):
        assert offer.option(code) is None
    assert "undionly.kpxe" in decision.detail


@pytest.mark.parametrize(
    "raw",
    [
        uefi_discover(),
        pxe_request(arch=7, vendor=EFI_VENDOR),
        pxe_request(arch=9, vendor=b"PXEClient:Arch:00009:UNDI:003016"),
    ],
)
def test_uefi_x86_64_is_offered_ipxe_efi(raw: bytes) -> None:
    """
    x86-64 UEFI (architecture 7, or 9 as many firmwares say) gets C{ipxe.efi} and no
    option 43, so that it goes on to ask on port 4011.
    """
    decision = ask(raw)
    assert decision.outcome is Outcome.OFFERED
    offer = sent(decision)
    assert offer.message_type is MessageType.OFFER
    assert offer.file == b"ipxe.efi"
    assert offer.option(Option.VENDOR_SPECIFIC) is None
    assert offer.option(Option.VENDOR_CLASS) == b"PXEClient"
    assert offer.yiaddr == "0.0.0.0"


def test_first_architecture_decides() -> None:
    raw = message(option(53, b"\x01"), option(93, b"\x00\x07\x00\x0b"), option(60, b"PXEClient"))
    assert sent(ask(raw)).file == b"ipxe.efi"


def test_no_architecture_is_bios() -> None:
    """
    A PXE client without option 93 (older ROMs) is taken for BIOS.
    """
    assert sent(ask(pxe_request(arch=None))).file == b"undionly.kpxe"


@pytest.mark.parametrize(
    "raw",
    [
        ipxe_discover(),
        pxe_request(user_class=b"iPXE", arch=0),
        pxe_request(user_class=b"iPXE", arch=7, vendor=EFI_VENDOR),
        pxe_request(user_class=b"\x04iPXE", arch=9),
        pxe_request(ipxe_options=True, arch=0),
        pxe_request(ipxe_options=True, arch=7, vendor=EFI_VENDOR),
    ],
)
def test_ipxe_is_sent_to_boot_script(raw: bytes) -> None:
    """
    iPXE, known by its user class or its option 175, BIOS or UEFI, gets the URL of
    C{boot.ipxe} on the address it asked, and no PXE menu option.
    """
    asked: list[str] = []

    def url(local: str) -> str:
        asked.append(local)
        return boot_script_url(local)

    decision = ask(raw, url=url)
    assert decision.outcome is Outcome.OFFERED
    assert asked == [LOCAL]
    offer = sent(decision)
    assert offer.file == b"http://192.0.2.10:8080/boot.ipxe"
    assert offer.option(Option.BOOTFILE) is None
    assert offer.option(Option.VENDOR_SPECIFIC) is None
    assert offer.siaddr == LOCAL
    assert offer.yiaddr == "0.0.0.0"


def test_ipxe_user_class_wins_over_architecture() -> None:
    """
    iPXE on an architecture that firmware could not boot still gets its script.
    """
    decision = ask(pxe_request(user_class=b"iPXE", arch=11))
    assert decision.outcome is Outcome.OFFERED
    assert sent(decision).file == b"http://192.0.2.10:8080/boot.ipxe"


@pytest.mark.parametrize(
    ("length", "in_file"),
    [(127, True), (128, False), (200, False), (300, False)],
)
def test_long_url_goes_in_option_67(length: int, in_file: bool) -> None:
    """
    A URL too long for the 128-byte C{file} field (with its NUL) goes in option 67,
    split if it must be, and the field stays empty.
    """
    url = "http://pxe.example/" + "a" * (length - len("http://pxe.example/boot.ipxe"))
    url += "boot.ipxe"
    assert len(url) == length
    # iPXE's option 57 says 1472 bytes.
    offer = sent(ask(ipxe_discover(), url=lambda local: url), limit=1472 - 28)
    if in_file:
        assert offer.file == url.encode()
        assert offer.option(Option.BOOTFILE) is None
    else:
        assert offer.file == b""
        assert offer.option(Option.BOOTFILE) == url.encode()


@pytest.mark.parametrize(
    "vendor",
    [None, b"MSFT 5.0", b"HTTPClien", b"httpclient", b"", b"pxeclient", b"udhcp 1.36"],
)
def test_not_a_pxe_client(vendor: bytes | None) -> None:
    """
    Without vendor class C{PXEClient} or C{HTTPClient}, a DISCOVER is the network DHCP
    server's business.
    """
    for raw in (pxe_request(vendor=vendor), pxe_request(vendor=vendor, user_class=b"iPXE")):
        decision = ask(raw)
        assert decision.outcome is Outcome.NOT_PXE
        assert decision.reply is None


def test_http_boot_firmware_is_offered_the_url() -> None:
    """
    OVMF's HTTP Boot DISCOVER gets an OFFER without an address, naming pxe-pilot as
    server, with option 60 C{HTTPClient} (without which the firmware ignores it) and the
    URL of ipxe.efi on pxe-pilot's HTTP side, in option 67 (which it asks for) and in
    the C{file} field.
    """
    decision = ask(http_discover())
    assert decision.outcome is Outcome.OFFERED
    assert decision.reply is not None
    assert decision.reply.address == BROADCAST
    offer = sent(decision)
    assert offer.message_type is MessageType.OFFER
    assert (offer.xid, offer.chaddr) == (XID, MAC + bytes(10))
    assert offer.yiaddr == "0.0.0.0"
    assert offer.option(Option.SERVER_ID) == socket.inet_aton(LOCAL)
    assert offer.option(Option.VENDOR_CLASS) == b"HTTPClient"
    url = b"http://192.0.2.10:8080/ipxe/ipxe.efi"
    assert offer.option(Option.BOOTFILE) == url
    assert offer.file == url
    assert offer.option(Option.VENDOR_SPECIFIC) is None
    for code in (1, 3, 6, 51, 50):
        assert offer.option(code) is None
    assert decision.detail == f"UEFI x86-64 HTTP: {url.decode()}"


def test_http_boot_url_as_seen_from_the_address_asked() -> None:
    """
    The URL is built for the address the request came to, as boot.ipxe's is.
    """
    raw = decode(http_discover())
    decision = decide(raw, 67, "198.51.100.7", boot_script_url, CLIENT, http_boot_url)
    assert sent(decision).option(Option.BOOTFILE) == b"http://198.51.100.7:8080/ipxe/ipxe.efi"


def test_long_http_boot_url_only_in_option_67() -> None:
    url = "http://pxe-pilot.example/" + "p" * 150 + "/ipxe/ipxe.efi"
    offer = sent(ask(http_discover(), http_url=lambda local: url), limit=1472 - 28)
    assert offer.option(Option.BOOTFILE) == url.encode()
    assert offer.file == b""


@pytest.mark.parametrize("server_id", [LOCAL, "192.0.2.1"])
def test_http_boot_request_on_67(server_id: str) -> None:
    """
    The firmware REQUESTs its address from the DHCP server it chose; a REQUEST that
    names pxe-pilot is acknowledged with the same URL and no address.
    """
    raw = pxe_request(REQUEST, arch=16, vendor=HTTP_VENDOR, server_id=server_id)
    decision = ask(raw)
    if server_id != LOCAL:
        assert (decision.outcome, decision.reply) == (Outcome.IGNORED, None)
        return
    assert decision.outcome is Outcome.ACKED
    ack = sent(decision)
    assert ack.message_type is MessageType.ACK
    assert ack.yiaddr == "0.0.0.0"
    assert ack.option(Option.VENDOR_CLASS) == b"HTTPClient"
    assert ack.option(Option.BOOTFILE) == b"http://192.0.2.10:8080/ipxe/ipxe.efi"


@pytest.mark.parametrize("arch", [None, 0, 7, 9, 15, 18, 19, 20])
def test_http_boot_for_other_architectures(arch: int | None) -> None:
    """
    x86 (15), ARM (18, 19), and HTTP clients that say no architecture or a PXE one, have
    no binary here.
    """
    decision = ask(pxe_request(arch=arch, vendor=b"HTTPClient:Arch:00019:UNDI:003000"))
    assert decision.outcome is Outcome.UNSUPPORTED_ARCH
    assert decision.reply is None
    assert decision.detail == f"HTTP boot client architecture {arch or 0}"


def test_http_boot_without_a_url_is_not_answered() -> None:
    """
    A server not told the HTTP boot URL leaves HTTP clients to the DHCP server.
    """
    decision = ask(http_discover(), http_url=None)
    assert (decision.outcome, decision.reply) == (Outcome.NOT_PXE, None)


@pytest.mark.parametrize(
    ("max_size", "limit"),
    [
        (None, 548),
        ((1500).to_bytes(2, "big"), 1472),
        ((576).to_bytes(2, "big"), 548),
        ((300).to_bytes(2, "big"), 548),
        ((0).to_bytes(2, "big"), 548),
        (b"\x05", 548),
        (b"\x05\xdc\x00", 548),
        ((65535).to_bytes(2, "big"), 65507),
    ],
)
def test_reply_size_follows_option_57(max_size: bytes | None, limit: int) -> None:
    """
    A reply may take what the client's maximum message size (option 57, the whole IP
    datagram) leaves after the IP and UDP headers; without it, or below 576 (invalid,
    RFC 2132 9.10), or malformed, 576 bytes. A larger one is not sent, and says why.
    """
    raw = pxe_request(vendor=HTTP_VENDOR, arch=16, max_size=max_size)

    def offer_for(length: int) -> Decision:
        url = "http://pxe.example/" + "u" * (length - 19)
        return ask(raw, http_url=lambda local: url)

    # The longest URL that still fits: the reply is then within a byte or two of the
    # limit (option 67 is split every 255 bytes).
    fits, too_long = 20, limit
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if offer_for(middle).outcome is Outcome.OFFERED:
            fits = middle
        else:
            too_long = middle
    assert limit - 3 <= size_of(offer_for(fits)) <= limit
    refused = offer_for(too_long)
    assert (refused.outcome, refused.reply) == (Outcome.TOO_LARGE, None)
    assert refused.detail.endswith(f"the client takes at most {limit} bytes")


@pytest.mark.parametrize("arch", [6, 11, 16, 10, 2])
def test_unsupported_architecture(arch: int) -> None:
    """
    IA32 UEFI (6), ARM64 (11), HTTP boot (16) and the like have no binary here.
    """
    decision = ask(pxe_request(arch=arch))
    assert decision.outcome is Outcome.UNSUPPORTED_ARCH
    assert decision.reply is None
    assert str(arch) in decision.detail


@pytest.mark.parametrize("server_id", [None, "192.0.2.1", "192.0.2.11"])
def test_request_on_67_for_another_server(server_id: str | None) -> None:
    """
    A REQUEST on port 67 goes to the server the client chose; if that is not
    pxe-pilot, pxe-pilot keeps quiet.
    """
    decision = ask(pxe_request(REQUEST, server_id=server_id))
    assert decision.outcome is Outcome.IGNORED
    assert decision.reply is None


def test_request_on_67_for_us() -> None:
    """
    A REQUEST naming pxe-pilot on port 67 gets an ACK with the same boot file.
    """
    decision = ask(pxe_request(REQUEST, server_id=LOCAL))
    assert decision.outcome is Outcome.ACKED
    assert decision.reply is not None
    assert decision.reply.address == BROADCAST
    ack = sent(decision)
    assert ack.message_type is MessageType.ACK
    assert ack.file == b"undionly.kpxe"
    assert ack.yiaddr == "0.0.0.0"
    assert ack.option(Option.SERVER_ID) == socket.inet_aton(LOCAL)


@pytest.mark.parametrize("kind", [REQUEST, INFORM])
@pytest.mark.parametrize("arch", [0, 7, 9])
def test_port_4011_acks(kind: int, arch: int) -> None:
    """
    On port 4011 (PXE boot server), REQUEST and INFORM get an ACK, whatever server
    they name.
    """
    raw = pxe_request(
        kind, arch=arch, server_id="192.0.2.1", ciaddr=address("192.0.2.77"), flags=0
    )
    decision = ask(raw, port=4011)
    assert decision.outcome is Outcome.ACKED
    ack = sent(decision)
    assert ack.message_type is MessageType.ACK
    assert ack.file == (b"undionly.kpxe" if arch == 0 else b"ipxe.efi")
    assert ack.ciaddr == "192.0.2.77"
    assert ack.yiaddr == "0.0.0.0"
    assert ack.option(Option.SERVER_ID) == socket.inet_aton(LOCAL)


@pytest.mark.parametrize(
    ("raw", "port"),
    [
        (pxe_request(DISCOVER), 4011),
        (uefi_discover(), 4011),
        (pxe_request(RELEASE, server_id=LOCAL), 67),
        (pxe_request(DECLINE, server_id=LOCAL), 67),
        (pxe_request(RELEASE, server_id=LOCAL), 4011),
        (pxe_request(INFORM), 67),
        (pxe_request(2), 67),  # an OFFER
        (pxe_request(5), 67),  # an ACK
        (pxe_request(9), 67),  # no such type
        (message(option(60, b"PXEClient")), 67),  # BOOTP
        (bios_discover(op=2), 67),
        (bios_discover(htype=6), 67),  # IEEE 802
        (bios_discover(htype=32, hlen=0, chaddr=b""), 67),  # InfiniBand
        (bios_discover(hlen=8), 67),
    ],
)
def test_ignored(raw: bytes, port: int) -> None:
    """
    Other messages, replies and non-Ethernet clients are not answered.
    """
    decision = ask(raw, port)
    assert decision.outcome is Outcome.IGNORED
    assert decision.reply is None


def test_relayed_request() -> None:
    """
    A request from a relay agent is answered to the agent, on the server port, with
    C{giaddr} kept so that the agent knows where to forward it.
    """
    decision = ask(bios_discover(giaddr=address("10.1.2.1"), hops=1))
    assert decision.reply is not None
    assert decision.reply.address == ("10.1.2.1", 67)
    assert sent(decision).giaddr == "10.1.2.1"


def test_relayed_request_with_broadcast_flag() -> None:
    decision = ask(uefi_discover(giaddr=address("10.1.2.1"), ciaddr=address("10.1.2.50")))
    assert decision.reply is not None
    assert decision.reply.address == ("10.1.2.1", 67)


def test_client_with_an_address() -> None:
    """
    A client that has an address and did not ask for a broadcast is answered directly.
    """
    decision = ask(pxe_request(REQUEST, server_id=LOCAL, ciaddr=address("192.0.2.77")))
    assert decision.reply is not None
    assert decision.reply.address == ("192.0.2.77", 68)
    assert sent(decision).ciaddr == "192.0.2.77"


def test_client_with_an_address_asking_for_broadcast() -> None:
    decision = ask(
        pxe_request(REQUEST, server_id=LOCAL, ciaddr=address("192.0.2.77"), flags=0x8000)
    )
    assert decision.reply is not None
    assert decision.reply.address == BROADCAST


@pytest.mark.parametrize("flags", [0, 0x8000])
def test_xid_chaddr_flags_echoed(flags: int) -> None:
    chaddr = bytes.fromhex("0025905a1b2c")
    offer = sent(ask(bios_discover(xid=0xDEADBEEF, flags=flags, chaddr=chaddr)))
    assert offer.xid == 0xDEADBEEF
    assert offer.hardware_address == chaddr
    assert offer.flags == flags


def test_no_uuid_no_uuid_echoed() -> None:
    offer = sent(ask(pxe_request(uuid=False)))
    assert offer.option(Option.CLIENT_UUID) is None


class FakeTransport:
    """
    A UDP port that records what is sent through it, and can fail.
    """

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.sent_from: list[tuple[bytes, tuple[str, int], str, int]] = []
        self.broadcast = False
        self.error: OSError | None = None

    def sent_nothing(self) -> bool:
        return not self.written and not self.sent_from

    def setBroadcastAllowed(self, enabled: bool) -> None:
        self.broadcast = enabled

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.error is not None:
            raise self.error
        self.written.append((data, addr))

    def send_from(self, data: bytes, addr: tuple[str, int], local: str, interface: int) -> None:
        if self.error is not None:
            raise self.error
        self.sent_from.append((data, addr, local, interface))


def serve(
    port: int = 67,
    fallback: str | None = FALLBACK,
) -> tuple[ProxyDHCPServer, FakeTransport]:
    server = ProxyDHCPServer(port, boot_script_url, lambda: fallback, http_boot_url=http_boot_url)
    transport = FakeTransport()
    server.makeConnection(transport)  # type: ignore[arg-type]
    return server, transport


def test_broadcasts_may_be_sent() -> None:
    _, transport = serve()
    assert transport.broadcast


def test_broadcast_goes_out_of_the_interface_it_came_in_on() -> None:
    """
    A client without an address is answered by a broadcast sent from the local address
    and interface its request arrived on.
    """
    server, transport = serve()
    server.addressedDatagramReceived(bios_discover(), CLIENT, LOCAL, "255.255.255.255", INTERFACE)
    assert transport.written == []
    [(data, to, local, interface)] = transport.sent_from
    assert (to, local, interface) == (BROADCAST, LOCAL, INTERFACE)
    offer = decode(data)
    assert offer.message_type is MessageType.OFFER
    assert offer.siaddr == LOCAL
    assert server.outcomes == Counter({"offered": 1})


def test_directed_replies_use_the_routing_table() -> None:
    """
    Replies to a relay agent or to a client with an address are plain writes.
    """
    server, transport = serve()
    server.addressedDatagramReceived(
        bios_discover(giaddr=address("10.1.2.1")), ("10.1.2.1", 67), LOCAL, LOCAL, INTERFACE
    )
    server.addressedDatagramReceived(
        pxe_request(REQUEST, server_id=LOCAL, ciaddr=address("192.0.2.77")),
        ("192.0.2.77", 68),
        LOCAL,
        LOCAL,
        INTERFACE,
    )
    assert transport.sent_from == []
    assert [to for _, to in transport.written] == [("10.1.2.1", 67), ("192.0.2.77", 68)]


def test_port_4011_answers_the_sender() -> None:
    """
    On port 4011 the ACK goes back to the address and port the request came from.
    """
    server, transport = serve(4011)
    server.addressedDatagramReceived(
        pxe_request(REQUEST, arch=7, vendor=EFI_VENDOR, ciaddr=address("192.0.2.77")),
        ("192.0.2.77", 4011),
        LOCAL,
        LOCAL,
        INTERFACE,
    )
    server.addressedDatagramReceived(
        pxe_request(REQUEST, arch=7, vendor=EFI_VENDOR), ("192.0.2.78", 1025), LOCAL, LOCAL, 2
    )
    assert transport.sent_from == []
    assert [to for _, to in transport.written] == [("192.0.2.77", 4011), ("192.0.2.78", 1025)]
    assert {decode(data).file for data, _ in transport.written} == {b"ipxe.efi"}
    assert server.outcomes == Counter({"acked": 2})


def test_each_outcome_is_counted() -> None:
    """
    Every packet is counted once, by what became of it.
    """
    server, transport = serve()
    for raw in [
        bios_discover(),
        uefi_discover(),
        pxe_request(REQUEST, server_id=LOCAL),
        pxe_request(vendor=b"MSFT 5.0"),
        pxe_request(arch=11),
        pxe_request(arch=11),
        pxe_request(RELEASE),
        pxe_request(REQUEST, server_id="192.0.2.1"),
        b"\x01" * 300,
        b"",
    ]:
        server.addressedDatagramReceived(raw, CLIENT, LOCAL, "255.255.255.255", INTERFACE)
    assert server.outcomes == Counter(
        {
            "offered": 2,
            "acked": 1,
            "not-pxe": 1,
            "unsupported-arch": 2,
            "ignored": 2,
            "malformed": 2,
        }
    )
    assert len(transport.sent_from) == 3


def test_outcomes_shared() -> None:
    """
    A counter passed in is the one counted in, so that both ports add up in one place.
    """
    outcomes: Counter[str] = Counter()
    first = ProxyDHCPServer(67, boot_script_url, lambda: LOCAL, outcomes)
    second = ProxyDHCPServer(4011, boot_script_url, lambda: LOCAL, outcomes)
    for server in (first, second):
        server.makeConnection(FakeTransport())  # type: ignore[arg-type]
        server.addressedDatagramReceived(b"junk", CLIENT, LOCAL, LOCAL, INTERFACE)
    assert outcomes == Counter({"malformed": 2})
    assert first.outcomes is second.outcomes is outcomes


def test_malformed_is_logged_at_debug(events: list[LogEvent], debug_logging: None) -> None:
    server, transport = serve()
    server.addressedDatagramReceived(b"\x01" * 239, ("192.0.2.99", 68), LOCAL, LOCAL, 1)
    [event] = events_with(events, log_namespace="pxepilot.dhcp.proxy")
    assert event["log_level"] == LogLevel.debug
    assert event["client"] == "192.0.2.99"
    assert "239 bytes" in event["reason"]
    assert transport.sent_nothing()


def test_unsupported_architecture_logged_once_per_machine(events: list[LogEvent]) -> None:
    """
    Firmware that cannot be served asks every few seconds; it is named in the log once.
    """
    server, transport = serve()
    other = bytes.fromhex("0025905a1b2c")
    for _ in range(5):
        server.addressedDatagramReceived(pxe_request(arch=11), CLIENT, LOCAL, LOCAL, INTERFACE)
    for _ in range(3):
        server.addressedDatagramReceived(
            pxe_request(arch=11, chaddr=other), CLIENT, LOCAL, LOCAL, INTERFACE
        )
    warnings = events_with(events, log_namespace="pxepilot.dhcp.proxy", log_level=LogLevel.warn)
    assert [(e["mac"], e["detail"]) for e in warnings] == [
        ("52:54:00:a1:b2:c3", "client architecture 11"),
        ("00:25:90:5a:1b:2c", "client architecture 11"),
    ]
    assert server.outcomes == Counter({"unsupported-arch": 8})
    assert transport.sent_nothing()


def test_http_boot_for_other_architectures_logged_once(events: list[LogEvent]) -> None:
    """
    HTTP Boot firmware of another architecture (arm64, 19) is counted each time it
    asks, named in the log once, and sent nothing.
    """
    server, transport = serve()
    arm = pxe_request(arch=19, vendor=b"HTTPClient:Arch:00019:UNDI:003000")
    for _ in range(4):
        server.addressedDatagramReceived(arm, CLIENT, LOCAL, LOCAL, INTERFACE)
    warnings = events_with(events, log_namespace="pxepilot.dhcp.proxy", log_level=LogLevel.warn)
    assert [(e["mac"], e["detail"]) for e in warnings] == [
        ("52:54:00:a1:b2:c3", "HTTP boot client architecture 19")
    ]
    assert server.outcomes == Counter({"unsupported-arch": 4})
    assert transport.sent_nothing()


def test_http_boot_offer_is_sent_and_logged(events: list[LogEvent]) -> None:
    server, transport = serve()
    server.addressedDatagramReceived(http_discover(), CLIENT, LOCAL, LOCAL, INTERFACE)
    [(data, destination, local, interface)] = transport.sent_from
    assert (destination, local, interface) == (BROADCAST, LOCAL, INTERFACE)
    offer = decode(data)
    assert offer.option(Option.VENDOR_CLASS) == b"HTTPClient"
    assert offer.option(Option.BOOTFILE) == b"http://192.0.2.10:8080/ipxe/ipxe.efi"
    [event] = events_with(events, log_namespace="pxepilot.dhcp.proxy")
    assert (event["kind"], event["detail"]) == (
        "offered",
        "UEFI x86-64 HTTP: http://192.0.2.10:8080/ipxe/ipxe.efi",
    )


def test_reply_too_large_is_counted_and_logged_once(events: list[LogEvent]) -> None:
    """
    A reply larger than the client takes (a very long --public-url, a client that says
    576 bytes) is not sent: counted each time, named in the log once per machine.
    """
    url = "http://pxe.example/" + "p" * 400 + "/ipxe/ipxe.efi"
    server = ProxyDHCPServer(67, boot_script_url, lambda: None, http_boot_url=lambda _: url)
    transport = FakeTransport()
    server.makeConnection(transport)  # type: ignore[arg-type]
    small = pxe_request(arch=16, vendor=HTTP_VENDOR, max_size=(576).to_bytes(2, "big"))
    for _ in range(3):
        server.addressedDatagramReceived(small, CLIENT, LOCAL, LOCAL, INTERFACE)
    assert server.outcomes == Counter({"too-large": 3})
    assert transport.sent_nothing()
    warnings = events_with(events, log_namespace="pxepilot.dhcp.proxy", log_level=LogLevel.warn)
    [warning] = warnings
    assert warning["detail"].endswith("the client takes at most 548 bytes")
    # The same client saying it takes 1500 bytes gets the reply.
    large = pxe_request(arch=16, vendor=HTTP_VENDOR, max_size=(1500).to_bytes(2, "big"))
    server.addressedDatagramReceived(large, CLIENT, LOCAL, LOCAL, INTERFACE)
    [(data, _, _, _)] = transport.sent_from
    assert 548 < len(data) <= 1472


def test_machines_told_about_are_bounded(events: list[LogEvent]) -> None:
    """
    Requests with ever new hardware addresses do not grow what the server remembers
    without end; a machine forgotten that way is named again, once.
    """
    server, _ = serve()
    for number in range(TOLD_LIMIT + 10):
        chaddr = number.to_bytes(6, "big")
        server.addressedDatagramReceived(
            pxe_request(arch=11, chaddr=chaddr), CLIENT, LOCAL, LOCAL, INTERFACE
        )
        assert len(server._told) <= TOLD_LIMIT
    server.addressedDatagramReceived(
        pxe_request(arch=11, chaddr=bytes(6)), CLIENT, LOCAL, LOCAL, INTERFACE
    )
    named = [e["mac"] for e in events_with(events, log_level=LogLevel.warn)]
    assert len(named) == TOLD_LIMIT + 11
    assert named.count("00:00:00:00:00:00") == 2


def test_answer_is_logged(events: list[LogEvent]) -> None:
    server, _ = serve()
    server.addressedDatagramReceived(uefi_discover(), CLIENT, LOCAL, LOCAL, INTERFACE)
    [event] = events_with(events, log_namespace="pxepilot.dhcp.proxy")
    assert event["log_level"] == LogLevel.info
    assert (event["kind"], event["mac"], event["port"]) == ("offered", "52:54:00:a1:b2:c3", 67)
    assert "ipxe.efi" in event["detail"]


def test_without_pktinfo_the_fallback_address_answers() -> None:
    """
    Where the system cannot say which address a request came to, the configured address
    is the server, and a broadcast goes out through the routing table.
    """
    server, transport = serve()
    server.datagramReceived(bios_discover(), CLIENT)
    assert transport.sent_from == []
    [(data, to)] = transport.written
    assert to == BROADCAST
    offer = decode(data)
    assert offer.siaddr == FALLBACK
    assert offer.option(Option.SERVER_ID) == socket.inet_aton(FALLBACK)


def test_without_pktinfo_or_fallback_nothing_is_answered() -> None:
    server, transport = serve(fallback=None)
    server.datagramReceived(bios_discover(), CLIENT)
    assert transport.sent_nothing()
    assert server.outcomes == Counter({"ignored": 1})


@pytest.mark.parametrize("interface", [INTERFACE, None])
def test_send_error_is_logged(events: list[LogEvent], interface: int | None) -> None:
    """
    A reply the system refuses to send (no route for a broadcast, say) is a warning,
    not an exception; the packet is still counted.
    """
    server, transport = serve()
    transport.error = OSError(errno.ENETUNREACH, "Network is unreachable")
    if interface is None:
        server.datagramReceived(bios_discover(), CLIENT)
    else:
        server.addressedDatagramReceived(bios_discover(), CLIENT, LOCAL, LOCAL, interface)
    [event] = events_with(events, log_namespace="pxepilot.dhcp.proxy")
    assert event["log_level"] == LogLevel.warn
    assert event["error"] == "Network is unreachable"
    assert event["mac"] == "52:54:00:a1:b2:c3"
    assert server.outcomes == Counter({"offered": 1})


def test_non_ethernet_client_is_ignored_quietly(events: list[LogEvent]) -> None:
    """
    An InfiniBand client (no hardware address in C{chaddr}) or another hardware type
    asking for PXE is counted and left alone.
    """
    server, transport = serve()
    for raw in (
        bios_discover(htype=32, hlen=0, chaddr=b""),
        pxe_request(arch=11, htype=32, hlen=0, chaddr=b""),
        bios_discover(htype=6, hlen=8, chaddr=bytes(range(8))),
        pxe_request(arch=11, hlen=16, chaddr=bytes(range(16))),
    ):
        server.addressedDatagramReceived(raw, CLIENT, LOCAL, LOCAL, INTERFACE)
    assert server.outcomes == Counter({"ignored": 4})
    assert transport.sent_nothing()


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    """
    Random bytes, and random headers (each hardware type and length) before the magic
    cookie and random options, which get further into the server.
    """
    if draw(st.booleans()):
        return draw(st.binary(max_size=700))
    header = bytes([draw(st.sampled_from([1, 2])), draw(st.integers(0, 255))])
    header += bytes([draw(st.integers(0, 20))])
    header += draw(st.binary(min_size=233, max_size=233))
    options = draw(
        st.lists(
            st.sampled_from(
                [
                    option(53, b"\x01"),
                    option(53, b"\x03"),
                    option(53, b"\x08"),
                    option(60, b"PXEClient"),
                    option(77, b"iPXE"),
                    option(54, address(LOCAL)),
                    option(93, b"\x00\x07"),
                    option(93, b"\x00\x0b"),
                    option(60, b"HTTPClient"),
                    option(93, b"\x00\x10"),
                    option(93, b"\x00\x13"),
                    option(57, b"\x02\x40"),
                    option(57, b"\x00\x10"),
                    option(57, b"\xff"),
                ]
            )
            | st.binary(max_size=12),
            max_size=8,
        )
    )
    return header + MAGIC_COOKIE + b"".join(options) + draw(st.sampled_from([b"\xff", b""]))


@settings(derandomize=True, database=None, max_examples=300)
@given(st.lists(datagrams(), min_size=1, max_size=5), st.sampled_from([67, 4011]))
def test_any_datagram_is_counted_never_raised(raw: list[bytes], port: int) -> None:
    """
    Whatever arrives, the server counts it once and raises nothing; what does not
    decode is counted as malformed.
    """
    server, transport = serve(port)
    malformed = 0
    for datagram in raw:
        try:
            decode(datagram)
        except MalformedPacket:
            malformed += 1
        server.addressedDatagramReceived(datagram, CLIENT, LOCAL, "255.255.255.255", 2)
        server.datagramReceived(datagram, CLIENT)
    assert sum(server.outcomes.values()) == 2 * len(raw)
    assert server.outcomes["malformed"] == 2 * malformed
    # No option 57 here allows more than 576 bytes.
    for data in [data for data, *_ in transport.written + transport.sent_from]:
        assert decode(data).op == BOOTREPLY
        assert len(data) <= 548


class Client(DatagramProtocol):
    """
    A client socket that hands over the datagrams it receives.
    """

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    from twisted.internet import reactor

    waited = 0.0
    while not condition():
        assert waited < timeout, "timed out"
        d: Deferred[None] = deferLater(reactor, 0.01, lambda: None)
        await d
        waited += 0.01


def _bindable(port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("0.0.0.0", port))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@pytest_twisted.ensureDeferred
async def test_service_over_sockets() -> None:
    """
    On real sockets: both ports listen on every address, a DISCOVER to the first is
    offered (the broadcast reply may not leave a sandbox; the count says it was
    decided), a REQUEST to the second is acknowledged back to the client, and stopping
    closes both ports.
    """
    from twisted.internet import reactor

    service = ProxyDHCPService(reactor, boot_script_url, lambda: "127.0.0.1", ports=(0, 0))
    health = ProxyDHCPHealth(service)
    assert health.check().details["listening"] is False
    service.startService()
    client = Client()
    udp: Any = reactor
    client_port = udp.listenUDP(0, client, interface="127.0.0.1")
    try:
        hosts = [listener.address() for listener in service.ports]
        assert [host.host for host in hosts] == ["0.0.0.0", "0.0.0.0"]
        numbers = [host.port for host in hosts]
        assert all(numbers) and numbers[0] != numbers[1]
        assert not any(_bindable(number) for number in numbers)

        client_port.write(bios_discover(), ("127.0.0.1", numbers[0]))
        await until(lambda: service.outcomes["offered"] == 1)
        client_port.write(
            pxe_request(REQUEST, arch=7, vendor=EFI_VENDOR), ("127.0.0.1", numbers[1])
        )
        await until(lambda: bool(client.received))
        [(data, sender)] = client.received
        assert sender == ("127.0.0.1", numbers[1])
        ack = decode(data)
        assert ack.message_type is MessageType.ACK
        assert (ack.xid, ack.file, ack.siaddr) == (XID, b"ipxe.efi", "127.0.0.1")
        assert service.outcomes == Counter({"offered": 1, "acked": 1})
        status = health.check()
        assert status.status == "ok"
        assert status.details == {"listening": True, "packets": {"acked": 1, "offered": 1}}
    finally:
        await client_port.stopListening()
        await service.stopService()
    assert not any(listener.listening for listener in service.ports)
    assert all(_bindable(number) for number in numbers)


def test_interface_without_an_address_uses_the_fallback() -> None:
    """
    A request that came in on an interface with no IPv4 address (the system reports
    0.0.0.0) is answered with the configured address, or not at all: pxe-pilot never
    names 0.0.0.0 as its server.
    """
    server, transport = serve(fallback="192.0.2.10")
    server.addressedDatagramReceived(
        bios_discover(), ("0.0.0.0", 68), "0.0.0.0", "255.255.255.255", 3
    )
    [(data, _address)] = transport.written
    assert decode(data).siaddr == "192.0.2.10"
    server, transport = serve(fallback=None)
    server.addressedDatagramReceived(
        bios_discover(), ("0.0.0.0", 68), "0.0.0.0", "255.255.255.255", 3
    )
    assert transport.sent_nothing()


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        (None, b"http://192.0.2.10:8080/ipxe/ipxe.efi"),
        ("http://pxe.example:9000/pilot/", b"http://pxe.example:9000/pilot/ipxe/ipxe.efi"),
    ],
)
def test_pxe_pilot_offers_its_own_http_boot_url(
    tmp_path: Path, public_url: str | None, expected: bytes
) -> None:
    """
    pxe-pilot's proxyDHCP names the URL its HTTP side serves ipxe.efi at, as it names
    boot.ipxe's: the public URL when set, else the address the request came to.
    """
    config = Config(
        answers_dir=tmp_path / "answers",
        assets_dir=tmp_path / "assets",
        state_dir=tmp_path / "state",
        boot_enabled=True,
        proxy_dhcp=True,
        public_url=public_url,
    )
    from twisted.internet import reactor

    # Built, not started: nothing listens.
    pilot = PxePilot(config, reactor, run_blocking=run_here)
    service = pilot.service.getServiceNamed("proxy-dhcp")
    assert isinstance(service, ProxyDHCPService)
    server = service.ports[0].server
    transport = FakeTransport()
    server.makeConnection(transport)  # type: ignore[arg-type]
    server.addressedDatagramReceived(http_discover(), CLIENT, LOCAL, LOCAL, INTERFACE)
    [(data, *_)] = transport.sent_from
    assert decode(data).option(Option.BOOTFILE) == expected
