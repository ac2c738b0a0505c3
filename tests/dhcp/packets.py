"""
DHCP requests as real clients send them, written out field by field from RFC 2131 and
the option layouts of RFC 2132, 4578, 3004 and PXE 2.1, without the codec under test.
"""

from __future__ import annotations

from typing import Any

MAGIC_COOKIE = bytes([99, 130, 83, 99])
MAC = bytes.fromhex("525400a1b2c3")
XID = 0x1D2C3B4A
UUID = bytes.fromhex("8c1f6a2e4b7d4e0a9c3355aa77e0f102")
ZERO = bytes(4)

BIOS_VENDOR = b"PXEClient:Arch:00000:UNDI:002001"
EFI_VENDOR = b"PXEClient:Arch:00007:UNDI:003016"
# What a PXE ROM asks for: the usual network options, 43 (PXE), 54, 60, 66, 67 and the
# PXE-reserved 128-135.
PXE_PARAMETERS = bytes([1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50])
PXE_PARAMETERS += bytes([51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])
# iPXE's option 175: bus id (PCI 8086:100e), HTTP, HTTPS, DNS, TFTP, PXE extensions and
# its version (1.21.1).
IPXE_ENCAPSULATED = (
    bytes([177, 5, 1, 0x80, 0x86, 0x10, 0x0E])
    + bytes([19, 1, 1])
    + bytes([20, 1, 1])
    + bytes([23, 1, 1])
    + bytes([21, 1, 1])
    + bytes([16, 1, 2])
    + bytes([235, 3, 1, 21, 1])
)


def option(code: int, value: bytes) -> bytes:
    """
    One option: its code, its length, its value.
    """
    assert len(value) < 256
    return bytes([code, len(value)]) + value


def message(
    *options: bytes,
    op: int = 1,
    htype: int = 1,
    hlen: int = 6,
    hops: int = 0,
    xid: int = XID,
    secs: int = 0,
    flags: int = 0,
    ciaddr: bytes = ZERO,
    yiaddr: bytes = ZERO,
    siaddr: bytes = ZERO,
    giaddr: bytes = ZERO,
    chaddr: bytes = MAC,
    sname: bytes = b"",
    file: bytes = b"",
    end: bytes = b"\xff",
    size: int = 0,
) -> bytes:
    """
    A DHCP message: the fixed BOOTP fields in order, the magic cookie, the options and
    END, then PAD up to C{size} bytes.
    """
    data = (
        bytes([op, htype, hlen, hops])
        + xid.to_bytes(4, "big")
        + secs.to_bytes(2, "big")
        + flags.to_bytes(2, "big")
        + ciaddr
        + yiaddr
        + siaddr
        + giaddr
        + chaddr.ljust(16, b"\0")
        + sname.ljust(64, b"\0")
        + file.ljust(128, b"\0")
        + MAGIC_COOKIE
        + b"".join(options)
        + end
    )
    return data.ljust(size, b"\0")


def address(dotted: str) -> bytes:
    return bytes(int(part) for part in dotted.split("."))


def bios_discover(**fields: Any) -> bytes:
    """
    A BIOS PXE 2.1 ROM's DHCPDISCOVER (iPXE's UNDI and Intel Boot Agent send this
    shape): padded to 548 bytes, the largest packet every client must accept.
    """
    return message(
        option(53, bytes([1])),
        option(57, (1260).to_bytes(2, "big")),
        option(55, PXE_PARAMETERS),
        option(97, bytes([0]) + UUID),
        option(93, bytes([0, 0])),
        option(94, bytes([1, 2, 1])),
        option(60, BIOS_VENDOR),
        size=548,
        **fields,
    )


def uefi_discover(**fields: Any) -> bytes:
    """
    EDK2's (OVMF's) UEFI x86-64 DHCPDISCOVER: broadcast flag set, architecture 7,
    UNDI 3.16.
    """
    fields.setdefault("flags", 0x8000)
    fields.setdefault("secs", 4)
    return message(
        option(53, bytes([1])),
        option(57, (1472).to_bytes(2, "big")),
        option(55, bytes([1, 2, 3, 4, 6, 12, 13, 15, 17, 28, 40, 43, 60, 66, 67, 97, 128])),
        option(97, bytes([0]) + UUID),
        option(94, bytes([1, 3, 16])),
        option(93, bytes([0, 7])),
        option(60, EFI_VENDOR),
        **fields,
    )


HTTP_VENDOR = b"HTTPClient:Arch:00016:UNDI:003000"


def http_discover(**fields: Any) -> bytes:
    """
    EDK2's (OVMF's) UEFI HTTP Boot DHCPDISCOVER: vendor class C{HTTPClient},
    architecture 16 (x86-64 UEFI HTTP), UNDI 3.0, asking for options 60 and 67 among
    the usual ones.
    """
    fields.setdefault("flags", 0x8000)
    return message(
        option(53, bytes([1])),
        option(57, (1472).to_bytes(2, "big")),
        option(55, bytes([1, 3, 6, 15, 28, 43, 60, 66, 67, 97])),
        option(97, bytes([0]) + UUID),
        option(94, bytes([1, 3, 0])),
        option(93, bytes([0, 16])),
        option(60, HTTP_VENDOR),
        **fields,
    )


def ipxe_discover(**fields: Any) -> bytes:
    """
    iPXE's (undionly.kpxe's) DHCPDISCOVER: user class C{iPXE} as a bare string (not an
    RFC 3004 list), and its features in option 175.
    """
    return message(
        option(53, bytes([1])),
        option(57, (1472).to_bytes(2, "big")),
        option(93, bytes([0, 0])),
        option(94, bytes([1, 2, 1])),
        option(60, BIOS_VENDOR),
        option(77, b"iPXE"),
        option(55, bytes([1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 175])),
        option(175, IPXE_ENCAPSULATED),
        option(61, bytes([1]) + MAC),
        option(97, bytes([0]) + UUID),
        **fields,
    )


def pxe_request(
    message_type: int = 1,
    *,
    arch: int | None = 0,
    vendor: bytes | None = BIOS_VENDOR,
    user_class: bytes | None = None,
    server_id: str | None = None,
    ipxe_options: bool = False,
    uuid: bool = True,
    max_size: bytes | None = None,
    **fields: Any,
) -> bytes:
    """
    A PXE client's message of any type, each identifying option present or not.
    """
    options = [option(53, bytes([message_type]))]
    if server_id is not None:
        options.append(option(54, address(server_id)))
    if uuid:
        options.append(option(97, bytes([0]) + UUID))
    if arch is not None:
        options.append(option(93, arch.to_bytes(2, "big")))
    if vendor is not None:
        options.append(option(60, vendor))
    if user_class is not None:
        options.append(option(77, user_class))
    if ipxe_options:
        options.append(option(175, IPXE_ENCAPSULATED))
    if max_size is not None:
        options.append(option(57, max_size))
    return message(*options, **fields)
