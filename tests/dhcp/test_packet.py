"""
The DHCP codec: real PXE, UEFI and iPXE requests decode field by field, options in the
C{file} and C{sname} fields and split options are read as RFC 2132 and 3396 say, every
packet round-trips, and anything malformed raises L{MalformedPacket} and nothing else.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxepilot.dhcp.packet import (
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
from tests.dhcp.packets import (
    BIOS_VENDOR,
    EFI_VENDOR,
    IPXE_ENCAPSULATED,
    MAC,
    MAGIC_COOKIE,
    PXE_PARAMETERS,
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

CHADDR = MAC + bytes(10)


def test_bios_pxe_discover() -> None:
    """
    A BIOS PXE ROM's DHCPDISCOVER, padded to 548 bytes with PAD after END, decodes
    field by field; the options come in the order sent.
    """
    raw = bios_discover()
    assert len(raw) == 548
    packet = decode(raw)
    assert packet == Packet(
        op=1,
        xid=XID,
        chaddr=CHADDR,
        htype=1,
        hlen=6,
        hops=0,
        secs=0,
        flags=0,
        ciaddr="0.0.0.0",
        yiaddr="0.0.0.0",
        siaddr="0.0.0.0",
        giaddr="0.0.0.0",
        sname=b"",
        file=b"",
        options=(
            (53, b"\x01"),
            (57, b"\x04\xec"),
            (55, PXE_PARAMETERS),
            (97, b"\x00" + UUID),
            (93, b"\x00\x00"),
            (94, b"\x01\x02\x01"),
            (60, b"PXEClient:Arch:00000:UNDI:002001"),
        ),
    )
    assert packet.message_type is MessageType.DISCOVER
    assert packet.hardware_address == MAC
    assert packet.option(Option.MAX_MESSAGE_SIZE) == (1260).to_bytes(2, "big")
    assert architectures(packet) == [0]
    assert vendor_class(packet) == BIOS_VENDOR
    assert user_classes(packet) == []
    assert packet.option(Option.SERVER_ID) is None


def test_uefi_discover() -> None:
    """
    EDK2's DHCPDISCOVER: broadcast flag, seconds elapsed, architecture 7, UNDI 3.16.
    """
    packet = decode(uefi_discover())
    assert (packet.op, packet.htype, packet.hlen, packet.xid) == (1, 1, 6, XID)
    assert (packet.flags, packet.secs) == (0x8000, 4)
    assert packet.message_type is MessageType.DISCOVER
    assert packet.option(Option.MAX_MESSAGE_SIZE) == b"\x05\xc0"
    assert packet.option(Option.CLIENT_ARCH) == b"\x00\x07"
    assert architectures(packet) == [7]
    assert packet.option(Option.CLIENT_NDI) == b"\x01\x03\x10"
    assert packet.option(Option.CLIENT_UUID) == b"\x00" + UUID
    assert vendor_class(packet) == b"PXEClient:Arch:00007:UNDI:003016"
    assert user_classes(packet) == []
    assert [code for code, _ in packet.options] == [53, 57, 55, 97, 94, 93, 60]


def test_ipxe_discover() -> None:
    """
    iPXE's DHCPDISCOVER: user class C{iPXE} as a bare string and its encapsulated
    option 175, next to the PXE options it keeps sending.
    """
    packet = decode(ipxe_discover())
    assert packet.message_type is MessageType.DISCOVER
    assert packet.hardware_address == MAC
    assert user_classes(packet) == [b"iPXE"]
    assert packet.option(Option.USER_CLASS) == b"iPXE"
    assert packet.option(Option.IPXE_ENCAPSULATED) == IPXE_ENCAPSULATED
    assert packet.option(Option.CLIENT_ID) == b"\x01" + MAC
    assert vendor_class(packet) == BIOS_VENDOR
    assert architectures(packet) == [0]
    assert [code for code, _ in packet.options] == [53, 57, 93, 94, 60, 77, 55, 175, 61, 97]


def test_rfc3004_user_class_list() -> None:
    """
    An RFC 3004 user class option is a list of length-prefixed classes; each one is
    read, in order.
    """
    packet = decode(pxe_request(user_class=b"\x04iPXE\x09pixiecore\x01x"))
    assert user_classes(packet)[:3] == [b"iPXE", b"pixiecore", b"x"]
    assert b"iPXE" in user_classes(packet)


@pytest.mark.parametrize(
    "value",
    [
        b"iPXE",  # 'i' (105) is not the length of what follows
        b"\x05iPXE",  # one short
        b"\x04iPXE\x00",  # an empty class is not allowed
        b"\x04iPX",
    ],
)
def test_user_class_that_is_not_a_list(value: bytes) -> None:
    """
    A user class that does not parse as an RFC 3004 list is one class, the whole value.
    """
    assert user_classes(decode(pxe_request(user_class=value))) == [value]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x00\x07\x00\x00", [7, 0]),
        (b"\x00\x0b", [11]),
        (b"\x00\x10\x00", [16]),  # an odd trailing byte is not an architecture
        (b"", []),
    ],
)
def test_architectures(value: bytes, expected: list[int]) -> None:
    """
    Option 93 is a list of 16-bit architectures, in the client's order.
    """
    assert architectures(decode(message(option(93, value)))) == expected


def test_no_vendor_class_and_no_architecture() -> None:
    packet = decode(message(option(53, b"\x01")))
    assert vendor_class(packet) == b""
    assert architectures(packet) == []
    assert user_classes(packet) == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((), None),
        ((option(53, b""),), None),
        ((option(53, b"\x01\x01"),), None),
        ((option(53, b"\x09"),), None),
        ((option(53, b"\x00"),), None),
        ((option(53, b"\x08"),), MessageType.INFORM),
    ],
)
def test_message_type(options: tuple[bytes, ...], expected: MessageType | None) -> None:
    """
    A missing, empty, long or unknown message type is no message type.
    """
    assert decode(message(*options)).message_type is expected


def test_header_fields() -> None:
    """
    Each fixed field is read from where RFC 2131 puts it; C{sname} and C{file} end at
    their first NUL.
    """
    packet = decode(
        message(
            option(53, b"\x03"),
            op=2,
            htype=1,
            hlen=6,
            hops=3,
            xid=0xFEDCBA98,
            secs=0x1234,
            flags=0x8001,
            ciaddr=address("192.0.2.1"),
            yiaddr=address("192.0.2.2"),
            siaddr=address("192.0.2.3"),
            giaddr=address("198.51.100.4"),
            chaddr=bytes(range(1, 17)),
            sname=b"boot-server\0left over",
            file=b"pxelinux.0\0junk",
        )
    )
    assert (packet.op, packet.hops, packet.xid) == (2, 3, 0xFEDCBA98)
    assert (packet.secs, packet.flags) == (0x1234, 0x8001)
    assert (packet.ciaddr, packet.yiaddr, packet.siaddr, packet.giaddr) == (
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "198.51.100.4",
    )
    assert packet.chaddr == bytes(range(1, 17))
    assert packet.hardware_address == bytes(range(1, 7))
    assert (packet.sname, packet.file) == (b"boot-server", b"pxelinux.0")
    assert packet.message_type is MessageType.REQUEST


def test_options_overloaded_into_file_and_sname() -> None:
    """
    Option 52 = 3: the C{file} field, then the C{sname} field, carry more options; both
    fields are then empty.
    """
    packet = decode(
        message(
            option(53, b"\x01"),
            option(52, b"\x03"),
            file=option(60, b"PXEClient") + option(93, b"\x00\x07") + b"\xff",
            sname=option(12, b"node1") + b"\xff",
        )
    )
    assert packet.options == (
        (53, b"\x01"),
        (52, b"\x03"),
        (60, b"PXEClient"),
        (93, b"\x00\x07"),
        (12, b"node1"),
    )
    assert (packet.file, packet.sname) == (b"", b"")
    assert architectures(packet) == [7]


@pytest.mark.parametrize(
    ("overload", "file", "sname"),
    [
        (1, b"", b"server"),
        (2, b"boot.img", b""),
    ],
)
def test_overload_of_one_field(overload: int, file: bytes, sname: bytes) -> None:
    """
    Option 52 = 1 reads options from C{file} only, 2 from C{sname} only; the other
    field keeps its text.
    """
    options = option(60, b"PXEClient") + b"\xff"
    packet = decode(
        message(
            option(52, bytes([overload])),
            file=options if overload == 1 else b"boot.img",
            sname=options if overload == 2 else b"server",
        )
    )
    assert vendor_class(packet) == b"PXEClient"
    assert (packet.file, packet.sname) == (file, sname)


def test_overloaded_options_need_no_end() -> None:
    """
    Options in an overloaded field may fill it to the end, or stop at PAD, without END.
    """
    full = option(60, b"P" * 126)
    assert len(full) == 128
    packet = decode(message(option(52, b"\x01"), file=full))
    assert vendor_class(packet) == b"P" * 126


def test_repeated_options_are_joined() -> None:
    """
    RFC 3396: an option sent several times is one option, its values joined in order,
    where it first appeared.
    """
    packet = decode(
        message(
            option(60, b"PXEClient:"),
            option(53, b"\x01"),
            option(60, b"Arch:00000:"),
            option(60, b"UNDI:002001"),
        )
    )
    assert packet.options == ((60, BIOS_VENDOR), (53, b"\x01"))


def test_split_option_joined_across_fields() -> None:
    """
    RFC 3396 with option overload: the parts of an option are joined in the order
    options field, C{file}, C{sname}.
    """
    packet = decode(
        message(
            option(52, b"\x03"),
            option(67, b"http://192.0.2.10/"),
            sname=option(67, b".ipxe") + b"\xff",
            file=option(67, b"boot") + b"\xff",
        )
    )
    assert packet.option(Option.BOOTFILE) == b"http://192.0.2.10/boot.ipxe"


@pytest.mark.parametrize("raw", [bios_discover(), uefi_discover(), ipxe_discover()])
def test_encode_writes_each_field_where_the_spec_puts_it(raw: bytes) -> None:
    """
    Encoding a decoded request gives the same bytes, without the trailing PAD beyond
    300 bytes.
    """
    assert encode(decode(raw)) == raw.rstrip(b"\0").ljust(300, b"\0")


def test_encode_splits_long_options() -> None:
    """
    An option longer than 255 bytes is sent as several of the same code (RFC 3396).
    """
    value = bytes(range(256)) * 2 + bytes(88)
    data = encode(Packet(op=2, xid=1, chaddr=MAC, options=((67, value), (53, b"\x02"))))
    assert data[236:240] == MAGIC_COOKIE
    body = data[240:]
    assert body[:257] == bytes([67, 255]) + value[:255]
    assert body[257:514] == bytes([67, 255]) + value[255:510]
    assert body[514:606] == bytes([67, 90]) + value[510:]
    assert body[606:610] == bytes([53, 1, 2, 255])
    assert len(data) == 240 + 610
    assert decode(data).option(67) == value


def test_encode_empty_option() -> None:
    data = encode(Packet(op=2, xid=1, chaddr=MAC, options=((80, b""),)))
    assert data[240:243] == bytes([80, 0, 255])
    assert decode(data).options == ((80, b""),)


def test_encode_pads_to_a_bootp_packet() -> None:
    """
    Short packets are padded to 300 bytes, the size of a BOOTP packet; longer ones are
    not padded.
    """
    short = encode(Packet(op=2, xid=1, chaddr=MAC, options=((53, b"\x02"),)))
    assert len(short) == 300
    assert short[240:244] == bytes([53, 1, 2, 255])
    assert short[244:] == bytes(56)
    long = encode(Packet(op=2, xid=1, chaddr=MAC, options=((60, b"x" * 200),)))
    assert len(long) == 240 + 202 + 1
    assert long[-1] == 255


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sname": b"s" * 64}, "sname is longer than 63 bytes"),
        ({"file": b"f" * 128}, "file is longer than 127 bytes"),
        ({"options": ((0, b"x"),)}, "option code 0"),
        ({"options": ((255, b""),)}, "option code 255"),
        ({"options": ((53, b"\x02"), (256, b""))}, "option code 256"),
    ],
)
def test_encode_refuses(fields: dict[str, Any], message: str) -> None:
    """
    C{sname} and C{file} need room for their NUL, and PAD and END are not options.
    """
    with pytest.raises(ValueError, match=message):
        encode(Packet(op=2, xid=1, chaddr=MAC, **fields))


def test_encode_takes_the_longest_fields() -> None:
    packet = Packet(op=2, xid=1, chaddr=CHADDR, sname=b"s" * 63, file=b"f" * 127)
    assert decode(encode(packet)) == packet


def _without_cookie() -> bytes:
    raw = bios_discover()
    return raw[:236] + b"\x63\x82\x53\x64" + raw[240:]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "0 bytes: shorter than any DHCP packet"),
        (bios_discover()[:239], "239 bytes: shorter than any DHCP packet"),
        (message(option(53, b"\x01"), op=0), "op 0 is neither request nor reply"),
        (message(option(53, b"\x01"), op=3), "op 3 is neither request nor reply"),
        (message(option(53, b"\x01"), hlen=17), "hardware address length 17 is over 16"),
        (_without_cookie(), "no DHCP magic cookie"),
        (bios_discover()[:236], "236 bytes"),
        (
            message(option(53, b"\x01"), bytes([60, 40]) + b"PXEClient", end=b""),
            "option 60 runs past the end of the packet",
        ),
        (message(option(53, b"\x01"), end=b""), "options have no end"),
        (message(option(53, b"\x01"), end=b"\0\0\0"), "options have no end"),
        (message(option(53, b"\x01"), end=b"\x3c"), "option 60 has no length"),
        (message(option(52, b"\x00")), "invalid option overload"),
        (message(option(52, b"\x04")), "invalid option overload"),
        (message(option(52, b"\x01\x01")), "invalid option overload"),
        (message(option(52, b"")), "invalid option overload"),
        (
            message(option(52, b"\x01"), file=b"\x3c\xffPXEClient"),
            "option 60 runs past the end",
        ),
        (
            message(option(52, b"\x02"), sname=bytes(63) + b"\x0c"),
            "option 12 has no length",
        ),
    ],
)
def test_malformed(raw: bytes, reason: str) -> None:
    """
    Each kind of malformed packet is refused, saying why.
    """
    with pytest.raises(MalformedPacket) as caught:
        decode(raw)
    assert reason in str(caught.value)


addresses = st.ip_addresses(v=4).map(str)
text_field = st.binary(max_size=127).filter(lambda b: b"\0" not in b)
option_codes = st.integers(1, 254).filter(lambda code: code != Option.OVERLOAD)

packets = st.builds(
    Packet,
    op=st.sampled_from([1, 2]),
    xid=st.integers(0, 2**32 - 1),
    chaddr=st.binary(min_size=16, max_size=16),
    htype=st.integers(0, 255),
    hlen=st.integers(0, 16),
    hops=st.integers(0, 255),
    secs=st.integers(0, 65535),
    flags=st.integers(0, 65535),
    ciaddr=addresses,
    yiaddr=addresses,
    siaddr=addresses,
    giaddr=addresses,
    sname=text_field.map(lambda b: b[:63]),
    file=text_field,
    options=st.lists(
        st.tuples(option_codes, st.binary(max_size=600)), unique_by=lambda o: o[0], max_size=8
    ).map(tuple),
)


@settings(derandomize=True, database=None)
@given(packets)
def test_round_trip(packet: Packet) -> None:
    """
    C{decode(encode(p)) == p} for every packet C{decode} can produce.
    """
    data = encode(packet)
    assert len(data) >= 300
    assert decode(data) == packet


def _decodes_or_refuses(raw: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        assert isinstance(decode(raw), Packet)


@settings(derandomize=True, database=None)
@given(st.binary(max_size=700))
def test_arbitrary_bytes(raw: bytes) -> None:
    """
    Any datagram decodes or raises L{MalformedPacket}; nothing else escapes.
    """
    _decodes_or_refuses(raw)


@settings(derandomize=True, database=None)
@given(st.binary(min_size=236, max_size=236), st.binary(max_size=400))
def test_arbitrary_options(header: bytes, options: bytes) -> None:
    """
    Arbitrary bytes after the magic cookie, with an arbitrary header (overload and all),
    decode or raise L{MalformedPacket}.
    """
    _decodes_or_refuses(bytes([1]) + header[1:] + MAGIC_COOKIE + options)


_OVERLOADED = message(
    option(53, b"\x01"),
    option(52, b"\x03"),
    option(60, b"PXEClient:"),
    file=option(60, b"Arch:00007:") + option(93, b"\x00\x07") + b"\xff",
    sname=option(60, b"UNDI:003016") + b"\xff",
)
VALID = [bios_discover(), uefi_discover(), ipxe_discover(), _OVERLOADED]


def test_overloaded_request() -> None:
    assert decode(_OVERLOADED).option(60) == EFI_VENDOR
    assert architectures(decode(_OVERLOADED)) == [7]


@pytest.mark.parametrize("raw", VALID)
def test_every_truncation(raw: bytes) -> None:
    """
    Every prefix of a real request decodes or raises L{MalformedPacket}.
    """
    for end in range(len(raw)):
        _decodes_or_refuses(raw[:end])


@pytest.mark.parametrize("raw", VALID)
def test_every_bit_flip(raw: bytes) -> None:
    """
    A real request with any one bit flipped decodes or raises L{MalformedPacket}.
    """
    for index in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[index] ^= 1 << bit
            _decodes_or_refuses(bytes(flipped))


def test_http_discover() -> None:
    """
    OVMF's HTTP Boot DHCPDISCOVER: vendor class C{HTTPClient}, architecture 16.
    """
    packet = decode(http_discover())
    assert vendor_class(packet) == b"HTTPClient:Arch:00016:UNDI:003000"
    assert architectures(packet) == [16]
    assert max_reply_size(packet) == 1472 - 28


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (None, 548),
        (b"", 548),
        (b"\x05", 548),
        (b"\x05\xdc\x00", 548),
        ((0).to_bytes(2, "big"), 548),
        ((575).to_bytes(2, "big"), 548),
        ((576).to_bytes(2, "big"), 548),
        ((577).to_bytes(2, "big"), 549),
        ((1260).to_bytes(2, "big"), 1232),
        ((1500).to_bytes(2, "big"), 1472),
        ((65535).to_bytes(2, "big"), 65507),
    ],
)
def test_max_reply_size(value: bytes | None, size: int) -> None:
    """
    Option 57 is the largest IP datagram the client takes; a reply is that less the IP
    and UDP headers. Absent, malformed, or below the 576 every client must take (RFC
    2132 9.10): 576.
    """
    options = () if value is None else ((Option.MAX_MESSAGE_SIZE, value),)
    assert max_reply_size(Packet(op=1, xid=XID, chaddr=MAC, options=options)) == size
