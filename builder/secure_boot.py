"""
The signed pieces of a Secure Boot network boot: shim (signed by Microsoft, trusting
its vendor's certificate) and a network-capable GRUB (signed by that vendor), stored in
a built asset as C{secure-boot/shimx64.efi} and C{secure-boot/grubx64.efi} and described
in C{asset.json} under C{secure_boot}.

They come from where real Proxmox machines get them: the ISO's own EFI boot image (the
FAT image of El Torito's UEFI entry, copied out while the ISO streams by, see
L{iso_extracts}) or its C{/EFI/BOOT/} directory; or Proxmox's C{grub-efi-amd64-signed}
and C{shim-signed} packages given with C{--secure-boot-from} (L{pieces_from_sources}),
which take precedence piece by piece.

L{assemble} records who signed each piece and refuses a set whose shim does not trust
the signer of its GRUB or of the kernel: such a set cannot boot under Secure Boot.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen
from cryptography import x509

from builder import authenticode, deb
from builder.authenticode import PeError, Signature
from builder.fat import FatError, FatImage
from builder.iso9660 import SECTOR, Reader, Tree, read_descriptors, read_tree
from builder.pipeline import BuildError

DIRECTORY = "secure-boot"
SHIM_FILE = f"{DIRECTORY}/shimx64.efi"
GRUB_FILE = f"{DIRECTORY}/grubx64.efi"
# What the pipeline copies out of the ISO for this module: hidden names, removed again
# before the asset is published.
EFI_IMAGE = ".secure-boot-efi.img"
TREE_SHIM = ".secure-boot-shim.efi"
TREE_GRUB = ".secure-boot-grub.efi"
HIDDEN = (EFI_IMAGE, TREE_SHIM, TREE_GRUB)
SHIM_PATH = "EFI/BOOT/BOOTX64.EFI"
GRUB_PATH = "EFI/BOOT/grubx64.efi"
# The files of Debian's (and Proxmox's) signed packages, best first.
SHIM_NAMES = ("shimx64.efi.signed", "shimx64.efi")
GRUB_NAMES = ("grubnetx64.efi.signed", "grubnetx64.efi", "grubx64.efi.signed", "grubx64.efi")
MAX_EFI_IMAGE = 256 << 20
MAX_PIECE = 64 << 20
MAX_DEPTH = 8
PLATFORM_EFI = 0xEF
NETWORK_MODULES = ("tftp", "http")
GRUB_PACKAGE = "grub-efi-amd64-signed"
PACKAGE_HINT = (
    f"pass Proxmox's network GRUB: --secure-boot-from {GRUB_PACKAGE}_<version>_amd64.deb "
    "(from download.proxmox.com/debian/pve/dists/<suite>/pve-no-subscription/binary-amd64/)"
)

Warn = Callable[[str], None]


@frozen
class Piece:
    """
    A boot loader and where it was found (for messages).
    """

    data: bytes
    origin: str


# --- the ISO


def el_torito_efi(read: Reader) -> list[tuple[int, int]]:
    """
    The UEFI boot images El Torito's catalog lists: (sector, 512-byte sectors), the
    count being 0 or 1 when the image is larger than the field holds.
    """
    catalog = None
    for sector in range(16, 16 + 64):
        raw = read(sector * SECTOR, SECTOR)
        if raw[1:6] != b"CD001" or raw[0] == 255:
            break
        if raw[0] == 0 and raw[7:30] == b"EL TORITO SPECIFICATION":
            catalog = struct.unpack_from("<I", raw, 71)[0]
    if catalog is None:
        return []
    raw = read(catalog * SECTOR, SECTOR)
    if raw[0] != 1 or raw[30:32] != b"\x55\xaa":
        return []
    images = []
    platform = raw[1]
    offset = 32
    entries = 1
    final = False
    while offset + 32 <= len(raw):
        entry = raw[offset : offset + 32]
        if entries > 0:
            if entry[0] in (0x88, 0x00) and platform == PLATFORM_EFI:
                count, rba = struct.unpack_from("<HI", entry, 6)
                if rba:
                    images.append((rba, count))
            if entry[0] != 0x44:  # extension entries continue the one before
                entries -= 1
        elif entry[0] in (0x90, 0x91) and not final:
            platform = entry[1]
            entries = struct.unpack_from("<H", entry, 2)[0]
            final = entry[0] == 0x91
        else:
            break
        offset += 32
    return images


def _tree_file(tree: Tree, path: str) -> tuple[str, int, int] | None:
    wanted = "/" + path.casefold()
    for name, entry in tree.files.items():
        if name.casefold() == wanted:
            return name, entry.extent, entry.size
    return None


def iso_extracts(trees: list[Tree], read: Reader) -> dict[str, tuple[int, int]]:
    """
    What to copy out of the ISO while it streams by, for L{pieces_from_iso}: the
    El Torito UEFI boot image, and C{/EFI/BOOT/}'s shim and GRUB if the ISO has them;
    name -> (byte offset, size).

    @raise NeedMoreData: when the catalog has not arrived yet.
    @raise BuildError: when the catalog points outside the ISO.
    """
    primary = trees[0]
    end = primary.descriptor.volume_space_size * SECTOR
    found: dict[str, tuple[int, int]] = {}
    images = el_torito_efi(read)
    if images:
        rba, count = images[0]
        sizes = [e.size for e in primary.files.values() if e.extent == rba]
        if sizes:
            size = sizes[0]
        elif count > 1:
            size = count * 512
        else:
            boot = read(rba * SECTOR, 512)
            sector_size, total16 = (struct.unpack_from("<H", boot, at)[0] for at in (11, 19))
            size = (total16 or struct.unpack_from("<I", boot, 32)[0]) * sector_size
        if not 0 < size <= MAX_EFI_IMAGE or rba * SECTOR + size > end:
            raise BuildError(
                f"the ISO's EFI boot image (sector {rba}, {size} bytes) does not fit in the ISO"
            )
        found[EFI_IMAGE] = (rba * SECTOR, size)
    for name, path in ((TREE_SHIM, SHIM_PATH), (TREE_GRUB, GRUB_PATH)):
        file = _tree_file(primary, path)
        if file is not None and 0 < file[2] <= MAX_PIECE and file[1] * SECTOR + file[2] <= end:
            found[name] = (file[1] * SECTOR, file[2])
    return found


def pieces_from_extracts(extracted: dict[str, bytes]) -> dict[str, Piece]:
    """
    Shim and GRUB from what L{iso_extracts} named: out of the EFI boot image, or else
    from the ISO's C{/EFI/BOOT/}.

    @raise BuildError: when the EFI boot image is damaged.
    """
    pieces: dict[str, Piece] = {}
    image = extracted.get(EFI_IMAGE)
    if image is not None:
        try:
            fat = FatImage(image)
            for key, path in (("shim", SHIM_PATH), ("grub", GRUB_PATH)):
                data = fat.read(path)
                if data:
                    pieces[key] = Piece(data, f"the ISO's EFI boot image ({path})")
        except FatError as e:
            raise BuildError(f"the ISO's EFI boot image cannot be read: {e}") from None
    for key, name, path in (("shim", TREE_SHIM, SHIM_PATH), ("grub", TREE_GRUB, GRUB_PATH)):
        if key not in pieces and extracted.get(name):
            pieces[key] = Piece(extracted[name], f"the ISO's /{path}")
    return pieces


def pieces_from_iso_file(path: Path) -> dict[str, Piece]:
    """
    L{pieces_from_extracts} for an ISO on disk (the prepared ISO of a C{prepare-iso
    --pxe} directory), read where the pieces lie.

    @raise BuildError: when the EFI boot image is damaged or lies outside the ISO.
    """
    with open(path, "rb") as f:
        fd = f.fileno()

        def read(offset: int, length: int) -> bytes:
            return os.pread(fd, length, offset)

        trees = [read_tree(d, read) for d in read_descriptors(read)]
        found = iso_extracts(trees, read)
        return pieces_from_extracts({n: read(at, size) for n, (at, size) in found.items()})


def pieces_from_staging(staging: Path) -> dict[str, Piece]:
    """
    L{pieces_from_extracts} on the hidden files the pipeline wrote into C{staging},
    which are removed (they are not part of the asset).
    """
    extracted = {}
    for name in HIDDEN:
        path = staging / name
        if path.exists():
            extracted[name] = path.read_bytes()
            path.unlink()
    return pieces_from_extracts(extracted)


# --- --secure-boot-from


def pieces_from_sources(sources: Sequence[Path]) -> dict[str, Piece]:
    """
    Shim and GRUB from C{--secure-boot-from}: Debian packages (C{shim-signed},
    C{grub-efi-amd64-signed}) or directories holding the files (searched a few levels
    deep, so an unpacked package will do). A later source replaces an earlier one's
    piece.

    @raise BuildError: when a source cannot be read or holds neither piece.
    """
    pieces: dict[str, Piece] = {}
    for source in sources:
        if source.is_dir():
            found = _from_directory(source)
        elif source.is_file():
            try:
                files = deb.extract(source, SHIM_NAMES[:1] + GRUB_NAMES)
            except deb.DebError as e:
                raise BuildError(str(e)) from None
            found = {}
            for key, names in (("shim", SHIM_NAMES[:1]), ("grub", GRUB_NAMES)):
                name = next((n for n in names if n in files), None)
                if name is not None:
                    found[key] = Piece(files[name], f"{name} from {source.name}")
        else:
            raise BuildError(f"--secure-boot-from {source}: no such file or directory")
        if not found:
            raise BuildError(
                f"--secure-boot-from {source} holds neither {SHIM_NAMES[0]} nor "
                f"{GRUB_NAMES[0]}: give Proxmox's shim-signed or {GRUB_PACKAGE} package"
            )
        pieces.update(found)
    return pieces


def _from_directory(directory: Path) -> dict[str, Piece]:
    files: dict[str, list[Path]] = {}
    for root, dirs, entries in os.walk(directory):
        if len(Path(root).relative_to(directory).parts) >= MAX_DEPTH:
            dirs.clear()
        dirs.sort()
        for entry in entries:
            if entry in SHIM_NAMES or entry in GRUB_NAMES:
                files.setdefault(entry, []).append(Path(root) / entry)
    found = {}
    for key, names in (("shim", SHIM_NAMES), ("grub", GRUB_NAMES)):
        name = next((n for n in names if n in files), None)
        if name is None:
            continue
        if len(files[name]) > 1:
            places = ", ".join(str(p) for p in files[name])
            raise BuildError(f"--secure-boot-from {directory}: several {name} ({places})")
        path = files[name][0]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BuildError(f"cannot read {path}: {e.strerror}") from None
        found[key] = Piece(data, f"{name} from --secure-boot-from {directory.name}")
    return found


# --- GRUB's modules


def grub_modules(data: bytes, image: authenticode.PeImage) -> set[str] | None:
    """
    The names of the modules built into a GRUB EFI image (its C{mods} section holds
    them as ELF objects, each naming itself in a C{.modname} section); C{None} when the
    image has no such section.
    """
    section = image.section("mods")
    if section is None:
        return None
    raw = data[section.offset : section.offset + section.size]
    names: set[str] = set()
    try:
        magic, _padding, offset, size = struct.unpack_from("<IIQQ", raw, 0)
        if magic != 0x676D696D:  # "mimg"
            return None
        end = min(size, len(raw))
        while offset + 8 <= end:
            kind, length = struct.unpack_from("<II", raw, offset)
            if length < 8:
                break
            if kind == 0:
                name = _elf_modname(raw[offset + 8 : offset + length])
                if name:
                    names.add(name)
            offset += length
    except struct.error:
        return names
    return names


def _elf_modname(elf: bytes) -> str | None:
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return None
    try:
        table = struct.unpack_from("<Q", elf, 0x28)[0]
        count, strings_index = struct.unpack_from("<HH", elf, 0x3C)
        headers = [struct.unpack_from("<IIQQQQ", elf, table + 64 * i) for i in range(count)]
        strings = headers[strings_index][4]
        for name_at, _kind, _flags, _address, at, size in headers:
            start = strings + name_at
            if elf[start : elf.find(b"\0", start)] == b".modname":
                return elf[at : at + size].split(b"\0")[0].decode("ascii", "replace")
    except (struct.error, IndexError):
        return None
    return None


# --- the set


def _signatures(piece: Piece, what: str) -> tuple[authenticode.PeImage, list[Signature]]:
    try:
        image = authenticode.parse_pe(piece.data)
        return image, authenticode.signatures(piece.data, image)
    except PeError as e:
        raise BuildError(f"{what} ({piece.origin}): {e}") from None


def _check_trust(
    vendor: x509.Certificate | None,
    what: str,
    signatures: list[Signature],
    warn: Warn,
    origin: str,
) -> None:
    """
    Refuse a piece whose signer shim does not trust.
    """
    if not signatures:
        warn(f"the {what} ({origin}) is not signed: it cannot boot under Secure Boot")
        return
    if vendor is None:
        return
    if any(authenticode.chains_to(s, vendor) for s in signatures):
        return
    shim_vendor = authenticode.vendor_name(vendor)
    other = authenticode.signer_vendor(signatures[0])
    raise BuildError(
        f"a {shim_vendor} shim with a {other} {what} cannot boot under Secure Boot: shim "
        f"trusts {authenticode.subject(vendor)}, the {what} ({origin}) is signed by "
        f"{signatures[0].subject}; give shim, GRUB and kernel of one vendor"
    )


def assemble(
    staging: Path,
    iso: dict[str, Piece],
    given: dict[str, Piece],
    kernel: Path | None,
    warn: Warn,
) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """
    Check the signed pieces, write them into C{staging}'s C{secure-boot/} and describe
    them: C{asset.json}'s C{secure_boot} value and the C{files} entries to add; C{None}
    and nothing when there is no shim and GRUB to serve.

    @param iso: The pieces found in the ISO.
    @param given: The pieces from C{--secure-boot-from}, which take precedence.
    @param kernel: The asset's kernel, whose signer is recorded and checked.
    @param warn: Says what the operator should know (one line each).
    @raise BuildError: for a damaged piece, or one whose signer shim does not trust.
    """
    pieces = {**iso, **given}
    shim, grub = pieces.get("shim"), pieces.get("grub")
    if shim is None or grub is None:
        if shim is not None or grub is not None:
            missing = "GRUB" if grub is None else "shim"
            warn(
                f"no {missing} found for Secure Boot: the asset gets no signed pieces "
                f"(give --secure-boot-from with Proxmox's shim-signed and {GRUB_PACKAGE})"
            )
        return None, {}
    shim_image, shim_signatures = _signatures(shim, "shim")
    if not shim_signatures:
        warn(f"shim ({shim.origin}) is not signed: firmware with Secure Boot refuses it")
    try:
        vendor = authenticode.vendor_certificate(shim.data, shim_image)
    except PeError as e:
        raise BuildError(f"shim ({shim.origin}): {e}") from None
    if vendor is None:
        warn(
            f"shim ({shim.origin}) carries no vendor certificate: whether it trusts GRUB "
            "and the kernel cannot be checked"
        )
    grub_image, grub_signatures = _signatures(grub, "GRUB")
    _check_trust(vendor, "GRUB", grub_signatures, warn, grub.origin)
    kernel_signer = None
    if kernel is not None:
        kernel_piece = Piece(kernel.read_bytes(), "the asset's vmlinuz")
        try:
            kernel_signatures = authenticode.signatures(kernel_piece.data)
        except authenticode.NotPe:
            # A kernel without an EFI stub: nothing to check (and nothing shim boots).
            kernel_signatures = []
        except PeError as e:
            raise BuildError(f"the kernel ({kernel_piece.origin}): {e}") from None
        _check_trust(vendor, "kernel", kernel_signatures, warn, kernel_piece.origin)
        kernel_signer = kernel_signatures[0].subject if kernel_signatures else None
    modules = grub_modules(grub.data, grub_image)
    protocols = sorted(m for m in NETWORK_MODULES if modules and m in modules)
    network = bool(modules and "efinet" in modules and protocols)
    if not network:
        what = "has no network modules" if modules is not None else "shows no module list"
        warn(
            f"GRUB ({grub.origin}) {what} (tftp or http): it cannot boot over the network; "
            f"{PACKAGE_HINT}"
        )
    files = {}
    for name, piece in ((SHIM_FILE, shim), (GRUB_FILE, grub)):
        files[name] = _write(staging / name, piece.data)
    section = {
        "shim": {
            "file": SHIM_FILE,
            "signer": shim_signatures[0].subject if shim_signatures else None,
            "signers": [s.subject for s in shim_signatures],
            "vendor": authenticode.common_name(vendor.subject) if vendor else None,
            "from": shim.origin,
        },
        "grub": {
            "file": GRUB_FILE,
            "signer": grub_signatures[0].subject if grub_signatures else None,
            "network": network,
            "protocols": protocols,
            "from": grub.origin,
        },
        "kernel": {"signer": kernel_signer},
    }
    return section, files


def _write(path: Path, data: bytes) -> dict[str, Any]:
    path.parent.mkdir(exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def add_to_asset(
    staging: Path, iso: dict[str, Piece], given: dict[str, Piece], step: Warn
) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """
    L{assemble} for a build whose kernel is C{staging}'s C{vmlinuz}, saying what was
    found (C{step} prints one line).
    """
    section, files = assemble(
        staging, iso, given, staging / "vmlinuz", lambda line: step(f"warning: {line}")
    )
    if section is not None:
        shim, grub = section["shim"], section["grub"]

        def who(signer: str | None) -> str:
            return f"signed by {signer}" if signer else "unsigned"

        step(
            f"Secure Boot: shim from {shim['from']} ({who(shim['signer'])}, trusts "
            f"{shim['vendor'] or 'no vendor certificate'}), GRUB from {grub['from']} "
            f"({who(grub['signer'])}), kernel {who(section['kernel']['signer'])}"
        )
    return section, files
