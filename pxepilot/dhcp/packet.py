"""
DHCP packets (RFC 2131, options of RFC 2132) as values: L{decode} and L{encode} are
pure functions, and L{decode} refuses anything malformed with L{MalformedPacket}.
"""

from __future__ import annotations

import enum
import socket
import struct
from collections.abc import Iterable

from attrs import field, frozen

MAGIC_COOKIE = b"\x63\x82\x53\x63"
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
HEADER_SIZE = _FIXED.size  # 236
MIN_PACKET = HEADER_SIZE + len(MAGIC_COOKIE)
# The IP and UDP headers (without IP options) around a DHCP message.
IP_UDP_HEADERS = 20 + 8
# The smallest IP datagram every DHCP client must accept (RFC 2131, 2; RFC 2132, 9.10),
# and so what a reply may take without the client announcing a larger size.
MIN_DATAGRAM = 576
MAX_REPLY = MIN_DATAGRAM - IP_UDP_HEADERS

BOOTREQUEST = 1
BOOTREPLY = 2
BROADCAST_FLAG = 0x8000

PAD = 0
END = 255


class Option(enum.IntEnum):
    """
    The options pxe-pilot reads or writes.
    """

    HOSTNAME = 12
    VENDOR_SPECIFIC = 43
    REQUESTED_ADDRESS = 50
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_LIST = 55
    MAX_MESSAGE_SIZE = 57
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER = 66
    BOOTFILE = 67
    USER_CLASS = 77
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_UUID = 97
    IPXE_ENCAPSULATED = 175


class MessageType(enum.IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class MalformedPacket(ValueError):
    """
    Bytes that are not a DHCP packet; the message says why.
    """


def _address(value: bytes) -> str:
    return socket.inet_ntoa(value)


@frozen
class Packet:
    """
    One DHCP packet.

    @ivar options: In the order they came, each code once (repeated codes are joined,
        as RFC 3396 says).
    """

    op: int
    xid: int
    chaddr: bytes
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: str = "0.0.0.0"
    yiaddr: str = "0.0.0.0"
    siaddr: str = "0.0.0.0"
    giaddr: str = "0.0.0.0"
    sname: bytes = b""
    file: bytes = b""
    options: tuple[tuple[int, bytes], ...] = field(default=())

    def option(self, code: int) -> bytes | None:
        for found, value in self.options:
            if found == code:
                return value
        return None

    @property
    def message_type(self) -> MessageType | None:
        value = self.option(Option.MESSAGE_TYPE)
        if value is None or len(value) != 1:
            return None
        try:
            return MessageType(value[0])
        except ValueError:
            return None

    @property
    def hardware_address(self) -> bytes:
        return self.chaddr[: self.hlen]


def decode(data: bytes) -> Packet:
    """
    Read a DHCP packet.

    @raise MalformedPacket: for anything that is not one, with why.
    """
    if len(data) < MIN_PACKET:
        raise MalformedPacket(f"{len(data)} bytes: shorter than any DHCP packet")
    (
        op,
        htype,
        hlen,
        hops,
        xid,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        chaddr,
        sname,
        file,
    ) = _FIXED.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise MalformedPacket(f"op {op} is neither request nor reply")
    if hlen > 16:
        raise MalformedPacket(f"hardware address length {hlen} is over 16")
    if data[HEADER_SIZE:MIN_PACKET] != MAGIC_COOKIE:
        raise MalformedPacket("no DHCP magic cookie")
    options = _options(data[MIN_PACKET:])
    overload = dict(options).get(Option.OVERLOAD)
    if overload is not None:
        # RFC 2132 9.3: the file and sname fields carry more options.
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise MalformedPacket("invalid option overload")
        if overload[0] & 1:
            options += _options(file, ended=False)
            file = b""
        if overload[0] & 2:
            options += _options(sname, ended=False)
            sname = b""
    return Packet(
        op=op,
        htype=htype,
        hlen=hlen,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=_address(ciaddr),
        yiaddr=_address(yiaddr),
        siaddr=_address(siaddr),
        giaddr=_address(giaddr),
        chaddr=chaddr,
        sname=sname.split(b"\0", 1)[0],
        file=file.split(b"\0", 1)[0],
        options=_joined(options),
    )


def _options(data: bytes, ended: bool = True) -> list[tuple[int, bytes]]:
    found: list[tuple[int, bytes]] = []
    index = 0
    while index < len(data):
        code = data[index]
        if code == PAD:
            index += 1
            continue
        if code == END:
            return found
        if index + 1 >= len(data):
            raise MalformedPacket(f"option {code} has no length")
        length = data[index + 1]
        value = data[index + 2 : index + 2 + length]
        if len(value) != length:
            raise MalformedPacket(f"option {code} runs past the end of the packet")
        found.append((code, value))
        index += 2 + length
    if ended:
        raise MalformedPacket("options have no end")
    return found


def _joined(options: Iterable[tuple[int, bytes]]) -> tuple[tuple[int, bytes], ...]:
    joined: dict[int, bytes] = {}
    for code, value in options:
        joined[code] = joined.get(code, b"") + value
    return tuple(joined.items())


def encode(packet: Packet) -> bytes:
    """
    The bytes of a packet; options longer than 255 bytes are split (RFC 3396).
    """
    for name in ("sname", "file"):
        limit = 64 if name == "sname" else 128
        if len(getattr(packet, name)) >= limit:
            raise ValueError(f"{name} is longer than {limit - 1} bytes")
    header = _FIXED.pack(
        packet.op,
        packet.htype,
        packet.hlen,
        packet.hops,
        packet.xid,
        packet.secs,
        packet.flags,
        socket.inet_aton(packet.ciaddr),
        socket.inet_aton(packet.yiaddr),
        socket.inet_aton(packet.siaddr),
        socket.inet_aton(packet.giaddr),
        packet.chaddr.ljust(16, b"\0")[:16],
        packet.sname,
        packet.file,
    )
    body = bytearray(MAGIC_COOKIE)
    for code, value in packet.options:
        if not 0 < code < 255:
            raise ValueError(f"option code {code} cannot be sent")
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]
        for chunk in chunks:
            body += bytes([code, len(chunk)]) + chunk
    body.append(END)
    data = header + bytes(body)
    # Some PXE ROMs drop replies shorter than a BOOTP packet (300 bytes).
    return data.ljust(300, b"\0")


def max_reply_size(packet: Packet) -> int:
    """
    The largest DHCP message the client of C{packet} accepts: its maximum DHCP message
    size (option 57, the whole IP datagram) less the IP and UDP headers. Without the
    option, or with a value that is not two bytes or is below 576 (invalid, RFC 2132
    9.10), the 576 bytes every client must accept.
    """
    value = packet.option(Option.MAX_MESSAGE_SIZE)
    if value is None or len(value) != 2:
        return MAX_REPLY
    return max(MIN_DATAGRAM, int.from_bytes(value, "big")) - IP_UDP_HEADERS


def vendor_class(packet: Packet) -> bytes:
    return packet.option(Option.VENDOR_CLASS) or b""


def user_classes(packet: Packet) -> list[bytes]:
    """
    The user classes a client sent (option 77): iPXE sends the bare string C{iPXE};
    RFC 3004 clients a list of length-prefixed ones.
    """
    value = packet.option(Option.USER_CLASS)
    if not value:
        return []
    classes: list[bytes] = []
    index = 0
    while index < len(value):
        length = value[index]
        item = value[index + 1 : index + 1 + length]
        if length == 0 or len(item) != length:
            return [value]
        classes.append(item)
        index += 1 + length
    return [*classes, value]


def architectures(packet: Packet) -> list[int]:
    """
    The client system architectures of option 93 (RFC 4578), in the client's order.
    """
    value = packet.option(Option.CLIENT_ARCH) or b""
    return [int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value) - 1, 2)]
