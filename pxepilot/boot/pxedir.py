"""
A directory made by Proxmox's own tool, C{proxmox-auto-install-assistant prepare-iso
--pxe} (9.1.7 and newer): C{vmlinuz}, C{initrd.img} (gzip), the prepared ISO
(C{<name>-auto-from-http[-url][-fp].iso}, without its C{/boot}) and perhaps a
C{boot.ipxe}; no C{asset.json}. Its product and version come from the ISO's
C{/.cd-info}, found in the ISO's root directory (a few sectors read), never from the
file name.

On UEFI, Debian's iPXE does not wrap a named initrd in cpio, so the ISO cannot follow
C{initrd.img} as C{proxmox.iso} there. Such a machine gets one initrd instead,
L{COMBINED}, composed when it is asked for from the two files (L{combined_layout}):
C{initrd.img}, zeros to a 4-byte boundary, a newc cpio member C{proxmox.iso} holding the
ISO, and the archive's trailer, as the builder's combined layout is written.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from attrs import frozen

from builder import cpio
from builder.cdinfo import NotProxmox, ProductInfo, product_info
from builder.iso9660 import IsoError
from builder.isofile import root_file

KERNEL = "vmlinuz"
INITRD = "initrd.img"
ISO_MEMBER = "proxmox.iso"
# Not a file of the directory: served composed (see the module's docstring).
COMBINED = "combined.img"
# The assistant's own command line for its automatic entry, but for C{initrd=}, which
# the menu adds only where the firmware needs it.
KERNEL_CMDLINE = "ramdisk_size=16777216 rw quiet splash=silent proxmox-start-auto-installer"


class NotPxeDirectory(Exception):
    """
    The directory is not one C{prepare-iso --pxe} made, or its ISO cannot be read; the
    message says why.
    """


@frozen
class PxeDirectory:
    """
    What the catalogue needs of one such directory.

    @ivar iso: The prepared ISO's file name.
    @ivar answer_url: The answer URL the ISO was prepared with, if it says.
    @ivar mtime: The newest of its files' modification times.
    """

    iso: str
    iso_size: int
    info: ProductInfo
    answer_url: str | None
    cert_fingerprint: str | None
    mtime: float


def _isos(directory: Path) -> list[str] | None:
    """
    The C{.iso} files of C{directory} (hidden ones aside), when it holds C{vmlinuz},
    C{initrd.img} and at least one.
    """
    try:
        names = [e.name for e in os.scandir(directory) if e.is_file()]
    except OSError:
        return None
    isos = sorted(n for n in names if n.endswith(".iso") and not n.startswith("."))
    if KERNEL not in names or INITRD not in names or not isos:
        return None
    return isos


def looks_made_by_prepare_iso(directory: Path) -> bool:
    """
    Whether C{directory} has the shape C{prepare-iso --pxe} gives: C{vmlinuz},
    C{initrd.img} and an ISO.
    """
    return _isos(directory) is not None


def iso_name(directory: Path) -> str | None:
    """
    The prepared ISO of a C{prepare-iso --pxe} directory: its one C{.iso} file.
    """
    isos = _isos(directory)
    return isos[0] if isos is not None and len(isos) == 1 else None


def read_pxe_directory(directory: Path) -> PxeDirectory:
    """
    Read and check a C{prepare-iso --pxe} directory.

    @raise NotPxeDirectory: when it has not that shape, or its ISO names no Proxmox
        product.
    """
    isos = _isos(directory)
    if isos is None:
        raise NotPxeDirectory("no vmlinuz, initrd.img and .iso file")
    if len(isos) > 1:
        raise NotPxeDirectory(f"{len(isos)} .iso files ({', '.join(isos)}): which to boot?")
    iso = isos[0]
    try:
        cd_info = root_file(directory / iso, ".cd-info")
        if cd_info is None:
            raise NotPxeDirectory(f"{iso} has no /.cd-info")
        info = product_info(cd_info)
        mode = root_file(directory / iso, "auto-installer-mode.toml")
        mtime = max((directory / n).stat().st_mtime for n in (KERNEL, INITRD, iso))
        iso_size = (directory / iso).stat().st_size
    except (IsoError, NotProxmox) as e:
        raise NotPxeDirectory(f"{iso}: {e}") from None
    except OSError as e:
        raise NotPxeDirectory(f"cannot read {iso}: {e.strerror}") from None
    answer_url, fingerprint = _answer(mode)
    return PxeDirectory(iso, iso_size, info, answer_url, fingerprint, mtime)


def _answer(mode: bytes | None) -> tuple[str | None, str | None]:
    # Informational (the health check compares it with this server): a file of another
    # shape says nothing rather than making the directory unservable.
    try:
        http = tomllib.loads((mode or b"").decode("utf-8")).get("http")
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(http, dict):
        return None, None
    url, pinned = http.get("url"), http.get("cert_fingerprint")
    return (
        url if isinstance(url, str) else None,
        pinned if isinstance(pinned, str) and pinned else None,
    )


# Where a piece of the composed initrd comes from: one of the two files, or these bytes.
Source = str | bytes


@frozen
class Piece:
    """
    One stretch of the composed initrd.

    @ivar source: L{INITRD}, L{ISO_MEMBER} (the ISO file) or literal bytes.
    @ivar start: Its first byte's offset in the composed initrd.
    @ivar length: Its length.
    """

    source: Source
    start: int
    length: int


def combined_layout(initrd_size: int, iso_size: int, mtime: int = 0) -> tuple[Piece, ...]:
    """
    The composed initrd: C{initrd.img}, zeros to a 4-byte boundary, the cpio header of
    C{proxmox.iso}, the ISO, its padding and the archive's trailer.

    @param mtime: The member's modification time, in its header.
    @raise ValueError: for an ISO of 4 GiB or more, which newc cannot hold.
    """
    header = cpio.header(ISO_MEMBER, iso_size, mode=0o100444, mtime=mtime)
    parts: list[tuple[Source, int]] = [
        (INITRD, initrd_size),
        (b"\0" * (cpio.align4(initrd_size) - initrd_size), 0),
        (header, 0),
        (ISO_MEMBER, iso_size),
        (cpio.data_padding(iso_size) + cpio.trailer(), 0),
    ]
    pieces = []
    offset = 0
    for source, size in parts:
        length = len(source) if isinstance(source, bytes) else size
        if length:
            pieces.append(Piece(source, offset, length))
            offset += length
    return tuple(pieces)


def composable(iso_size: int) -> bool:
    """
    Whether an ISO of this size fits in the composed initrd's cpio member.
    """
    return iso_size <= cpio.MAX_FILE_SIZE


def size_of(layout: tuple[Piece, ...]) -> int:
    return layout[-1].start + layout[-1].length if layout else 0


def pieces_in(layout: tuple[Piece, ...], first: int, length: int) -> list[Piece]:
    """
    The stretches of C{length} bytes from C{first}: each piece cut to the range, its
    C{start} now the offset within its own source.
    """
    end = first + length
    found = []
    for piece in layout:
        low, high = max(first, piece.start), min(end, piece.start + piece.length)
        if low >= high:
            continue
        within = low - piece.start
        if isinstance(piece.source, bytes):
            found.append(Piece(piece.source[within : high - piece.start], 0, high - low))
        else:
            found.append(Piece(piece.source, within, high - low))
    return found
