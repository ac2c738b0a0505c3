"""
The boot chain's TFTP side: the boot script as C{boot.ipxe}, and the DHCP boot loop
broken without touching DHCP or the iPXE binaries.

With only options 66 and 67 set, DHCP hands every client the same file name, so iPXE,
once loaded, asks for itself again. Its requests are recognisable: iPXE asks for
C{blksize} and then C{tsize}, in that order; PXE firmware (EDK2 asks for C{tsize}
first, PXELINUX too) does not. Such a request for an iPXE binary (by its usual name, or
by its content when an operator renamed it) gets a short script instead of the binary,
and an iPXE runs any file that starts with C{#!ipxe}. Firmware
that is itself iPXE (QEMU's ROMs, many NIC option ROMs) gets the script on its first
request, which is right: it can run it, and skips a needless reload.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen
from zope.interface import implementer

from pxepilot.address import HTTPAddress
from pxepilot.boot.ipxe import boot_script, chain_script
from pxepilot.logs import logger
from pxepilot.tftp.files import BytesReader, IReader, ITFTPFiles, RequestContext
from pxepilot.tftp.packets import RequestOption

log = logger(__name__)

BOOT_SCRIPT = "boot.ipxe"
IPXE_BINARIES = frozenset(
    {
        "undionly.kpxe",
        "undionly.kkpxe",
        "undionly.kkkpxe",
        "ipxe.pxe",
        "ipxe.kpxe",
        "ipxe.efi",
        "snponly.efi",
        "snp.efi",
        "ipxe.usb",
    }
)


# iPXE's PXE prefix (undionly.kpxe, ipxe.pxe, ...) starts with a far jump to 07c0:0005
# and soon pushes the magic "LRET" it later checks on the PXE stack.
_PXE_PREFIX_JUMP = b"\xea\x05\x00\xc0\x07"
_PXE_PREFIX_MAGIC = b"LRET"
# iPXE's EFI images name themselves in their data, somewhere in the file. They are
# small (Debian's ipxe.efi, with every driver, is 830 KiB; snponly.efi 170 KiB): a PE
# image larger than this is another EFI program (GRUB, shim, a kernel) and is decided
# on its first bytes, and no image costs more than this much reading.
_EFI_MAX_BYTES = 2 << 20
_SCAN_CHUNK = 256 << 10


def looks_like_ipxe(reader: IReader) -> bool:
    """
    Whether a file is an iPXE binary: a PXE image with iPXE's prefix, or a PE (EFI)
    image that names iPXE. Reads at most 64 bytes of a file that is neither, or larger
    than any iPXE image, and never more than C{_EFI_MAX_BYTES}.
    """
    head = reader.read(0, 64)
    if head.startswith(_PXE_PREFIX_JUMP):
        return _PXE_PREFIX_MAGIC in head[:32]
    if not head.startswith(b"MZ"):
        return False
    if reader.size is not None and reader.size > _EFI_MAX_BYTES:
        return False
    if b"iPXE" in head:
        return True
    offset = len(head)
    tail = head[-3:]
    while offset < _EFI_MAX_BYTES:
        chunk = reader.read(offset, min(_SCAN_CHUNK, _EFI_MAX_BYTES - offset))
        if not chunk:
            return False
        if b"iPXE" in tail + chunk:
            return True
        tail = chunk[-3:]
        offset += len(chunk)
    return False


def is_ipxe(options: tuple[RequestOption, ...]) -> bool:
    """
    Whether a read request has the shape of iPXE's: C{blksize}, then C{tsize}.
    """
    keys = [option.key for option in options]
    return keys[:2] == ["blksize", "tsize"]


@implementer(ITFTPFiles)
@frozen
class BootFiles:
    """
    The TFTP root, with the boot script added and iPXE's own binaries answered with the
    chain script when iPXE asks for them.

    @ivar files: The TFTP root.
    @ivar base_url: pxe-pilot's HTTP base URL (ending in C{/}) as seen from a request.
    """

    files: ITFTPFiles
    base_url: Callable[[RequestContext], str]

    def open(self, name: str, context: RequestContext) -> IReader:
        if name == BOOT_SCRIPT:
            return BytesReader(boot_script(f"{self.base_url(context)}menu.ipxe").encode())
        if not is_ipxe(context.options):
            return self.files.open(name, context)
        if name.rsplit("/", 1)[-1] not in IPXE_BINARIES:
            reader = self.files.open(name, context)
            try:
                if not looks_like_ipxe(reader):
                    return reader
            except OSError:
                return reader
            reader.close()
        log.info(
            "TFTP {client}: iPXE asked for {file}; it gets the chain script to the menu",
            client=context.client,
            file=name,
        )
        return BytesReader(chain_script(f"{self.base_url(context)}boot.ipxe").encode())


def tftp_base_url(address: HTTPAddress) -> Callable[[RequestContext], str]:
    """
    pxe-pilot's base URL for a TFTP client: the public URL when configured, otherwise
    the address the TFTP request was sent to (the client reached it, so it reaches
    HTTP there too), or iPXE's own C{${next-server}} when that address is not known.
    """

    def base(context: RequestContext) -> str:
        return address.base_url(context.local or "${next-server}")

    return base
