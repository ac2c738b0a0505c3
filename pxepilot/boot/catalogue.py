"""
The assets catalogue: every version the builder published, read from its
C{asset.json} on each look, so new versions appear without a restart. A version still
being built (a hidden directory), with a missing or invalid C{asset.json}, or whose
files do not match it, is left out.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from attrs import frozen

from pxepilot.boot import pxedir
from pxepilot.logs import logger

log = logger(__name__)

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
METADATA = "asset.json"
MAX_METADATA_BYTES = 64 * 1024

# The directory of each Proxmox product: the name its ISOs give themselves, which
# pxe-pilot-builder publishes under.
PRODUCT_DIRECTORIES = {
    "pve": "proxmox-ve",
    "pbs": "proxmox-backup-server",
    "pmg": "proxmox-mail-gateway",
    "pdm": "proxmox-datacenter-manager",
}


@frozen
class Initrd:
    """
    One initrd to load.

    @ivar file: Its file name in the version's directory.
    @ivar name: The name it gets inside the initramfs (iPXE's named initrd), if any.
    """

    file: str
    name: str | None = None


@frozen
class Asset:
    """
    One published version.

    @ivar directory: C{product/version}, relative to the assets directory.
    """

    directory: str
    product: str
    product_name: str
    release: str
    iso_release: str
    layout: str
    kernel: str
    initrds: tuple[Initrd, ...]
    kernel_cmdline: str
    mtime: float
    answer_url: str | None = None
    cert_fingerprint: str | None = None
    efi_initrds: tuple[Initrd, ...] = ()
    # The signed shim and GRUB it carries (asset.json's "secure_boot"), relative paths.
    secure_boot: tuple[str, str] | None = None

    def initrds_for(self, efi: bool) -> tuple[Initrd, ...]:
        """
        What to load on this firmware: on UEFI, the single initrd the asset offers
        there, if it offers one (see L{pxepilot.boot.pxedir}).
        """
        return self.efi_initrds if efi and self.efi_initrds else self.initrds

    @property
    def version(self) -> str:
        return f"{self.release}-{self.iso_release}"

    @property
    def key(self) -> str:
        """
        The menu's name for it: C{proxmox-ve/9.1-1} (the directory).
        """
        return self.directory

    def sort_key(self) -> tuple[VersionKey, VersionKey, float]:
        return (_version_key(self.release), _version_key(self.iso_release), self.mtime)


VersionKey = tuple[tuple[int, int, str], ...]


def _version_key(text: str) -> VersionKey:
    """
    C{9.10} after C{9.9}: numbers compare as numbers, and after words at the same
    position. Separators (C{.-_+}) only separate, and the end of the text comes after a
    word and before a number: C{9.1} after C{9.1-beta}, and before C{9.1.1}.
    """
    pieces = tuple(
        (2, int(piece), "") if piece.isdigit() else (0, 0, piece)
        for piece in re.findall(r"[0-9]+|[A-Za-z]+", text)
    )
    return (*pieces, (1, 0, ""))


class InvalidAsset(Exception):
    pass


_CMDLINE = re.compile(r"[A-Za-z0-9_.,:/=+-]+( [A-Za-z0-9_.,:/=+-]+)*")


def read_asset(directory: Path, relative: str) -> Asset:
    """
    Read and check one version's C{asset.json} against its files.

    @raise InvalidAsset: when it cannot be served.
    """
    path = directory / METADATA
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_METADATA_BYTES + 1)
            mtime = os.fstat(f.fileno()).st_mtime
    except OSError as e:
        raise InvalidAsset(f"no readable {METADATA}: {e.strerror}") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidAsset(f"{METADATA} is too large")
    try:
        data: Any = json.loads(raw)
    except (ValueError, RecursionError) as e:
        # Nesting deep enough to exhaust the parser's recursion is no JSON we wrote.
        raise InvalidAsset(f"{METADATA} is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != 1 or data.get("format") is True:
        raise InvalidAsset(f"{METADATA} is not format 1")

    def text(key: str, pattern: re.Pattern[str] = SAFE_NAME) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise InvalidAsset(f"{METADATA} has no valid {key!r}")
        return value

    product_name = data.get("product_name")
    if not isinstance(product_name, str) or not product_name.strip():
        raise InvalidAsset(f"{METADATA} has no valid 'product_name'")
    files = data.get("files")
    if not isinstance(files, dict):
        raise InvalidAsset(f"{METADATA} lists no files")
    kernel = text("kernel")
    entries = data.get("initrds") or []
    if not isinstance(entries, list):
        raise InvalidAsset(f"{METADATA} has an invalid initrd list")
    initrds = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise InvalidAsset(f"{METADATA} has an invalid initrd entry")
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not SAFE_NAME.fullmatch(name)):
            raise InvalidAsset(f"{METADATA} has an invalid initrd name")
        if not SAFE_NAME.fullmatch(entry["file"]):
            raise InvalidAsset(f"{METADATA} has an invalid initrd file name")
        initrds.append(Initrd(entry["file"], name))
    if not initrds:
        raise InvalidAsset(f"{METADATA} lists no initrd")
    for name in [kernel, *(i.file for i in initrds)]:
        described = files.get(name)
        if not isinstance(described, dict):
            raise InvalidAsset(f"{METADATA} does not describe {name}")
        try:
            size = (directory / name).stat().st_size
        except OSError:
            raise InvalidAsset(f"{name} is missing") from None
        if described.get("size") != size:
            raise InvalidAsset(f"{name} is {size} bytes, {METADATA} says {described.get('size')}")
    cmdline = data.get("kernel_cmdline", "")
    if not isinstance(cmdline, str) or (cmdline and not _CMDLINE.fullmatch(cmdline)):
        raise InvalidAsset(f"{METADATA} has an unsafe kernel command line")
    # What the installers booted from it were built to ask: informational, so a value
    # of another shape is left out rather than making the version unservable.
    answer = data.get("answer")
    answer = answer if isinstance(answer, dict) else {}
    answer_url = answer.get("url") if isinstance(answer.get("url"), str) else None
    pinned = answer.get("cert_fingerprint")
    cert_fingerprint = pinned if isinstance(pinned, str) and pinned else None
    return Asset(
        directory=relative,
        product=text("product"),
        product_name=" ".join(product_name.split())[:80],
        release=text("release"),
        iso_release=text("iso_release"),
        layout=text("layout"),
        kernel=kernel,
        initrds=tuple(initrds),
        kernel_cmdline=cmdline,
        mtime=mtime,
        answer_url=answer_url,
        cert_fingerprint=cert_fingerprint,
        secure_boot=_secure_boot_pieces(data.get("secure_boot"), files),
    )


_PIECE = re.compile(rf"secure-boot/{SAFE_NAME.pattern}")


def _secure_boot_pieces(described: Any, files: dict[str, Any]) -> tuple[str, str] | None:
    """
    The shim and GRUB files C{asset.json} names, when both are plain names under
    C{secure-boot/} that it lists among its files and the GRUB is not known to lack
    network support; L{None} otherwise.
    """
    if not isinstance(described, dict):
        return None
    pieces = [described.get(part) for part in ("shim", "grub")]
    if isinstance(pieces[1], dict) and pieces[1].get("network") is False:
        return None
    names = [piece.get("file") if isinstance(piece, dict) else None for piece in pieces]
    if not all(isinstance(n, str) and _PIECE.fullmatch(n) and n in files for n in names):
        return None
    return (str(names[0]), str(names[1]))


def read_pxe_directory(directory: Path, relative: str) -> Asset:
    """
    A directory C{proxmox-auto-install-assistant prepare-iso --pxe} made, as a version:
    C{vmlinuz}, then C{initrd.img} and the ISO named C{proxmox.iso}, or on UEFI the two
    composed into one initrd.

    @raise InvalidAsset: when it cannot be served.
    """
    try:
        found = pxedir.read_pxe_directory(directory)
    except pxedir.NotPxeDirectory as e:
        raise InvalidAsset(str(e)) from None
    if not SAFE_NAME.fullmatch(found.iso):
        raise InvalidAsset(f"{found.iso!r} is not a plain file name")
    info = found.info
    return Asset(
        directory=relative,
        product=info.product,
        product_name=" ".join(info.product_name.split())[:80],
        release=info.release,
        iso_release=info.iso_release,
        layout="prepare-iso",
        kernel=pxedir.KERNEL,
        initrds=(Initrd(pxedir.INITRD), Initrd(found.iso, pxedir.ISO_MEMBER)),
        kernel_cmdline=pxedir.KERNEL_CMDLINE,
        mtime=found.mtime,
        answer_url=found.answer_url,
        cert_fingerprint=found.cert_fingerprint,
        # A newc member cannot hold 4 GiB: then UEFI machines get the named initrd too,
        # which iPXE 1.21 and newer wrap there.
        efi_initrds=(Initrd(pxedir.COMBINED),) if pxedir.composable(found.iso_size) else (),
    )


def _read_version(directory: Path, relative: str) -> Asset:
    if not (directory / METADATA).exists() and pxedir.looks_made_by_prepare_iso(directory):
        return read_pxe_directory(directory, relative)
    return read_asset(directory, relative)


@frozen
class Catalogue:
    """
    The versions found, newest first within each product; products in name order.

    @ivar problems: Directories that look like versions but cannot be served, with why.
    """

    assets: tuple[Asset, ...]
    problems: tuple[tuple[str, str], ...]

    def find(self, key: str) -> Asset | None:
        return next((a for a in self.assets if a.key == key), None)


def scan(root: Path) -> Catalogue:
    """
    Read the assets directory: C{<product>/<version>/asset.json}, and the directories
    C{prepare-iso --pxe} made, there or directly in it (C{<name>/}).
    """
    assets: list[Asset] = []
    problems: list[tuple[str, str]] = []
    try:
        products = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return Catalogue((), ())
    for product in products:
        if not SAFE_NAME.fullmatch(product.name) or not product.is_dir():
            continue
        if pxedir.looks_made_by_prepare_iso(Path(product.path)):
            try:
                assets.append(read_pxe_directory(Path(product.path), product.name))
            except InvalidAsset as e:
                problems.append((product.name, str(e)))
            continue
        try:
            versions = sorted(os.scandir(product.path), key=lambda e: e.name)
        except OSError:
            continue
        found = []
        for version in versions:
            if not SAFE_NAME.fullmatch(version.name) or not version.is_dir():
                continue
            relative = f"{product.name}/{version.name}"
            try:
                found.append(_read_version(Path(version.path), relative))
            except InvalidAsset as e:
                problems.append((relative, str(e)))
        assets += sorted(found, key=Asset.sort_key, reverse=True)
    return Catalogue(tuple(assets), tuple(problems))


def unknown_product(target: str, root: Path) -> str | None:
    """
    Why no version of C{target}'s product (C{proxmox-ve} in C{proxmox-ve/9.1-1}) can ever
    be in the catalogue of C{root}, if none can: it is neither a Proxmox product's
    directory nor one in C{root}. The version itself may be published later.
    """
    product, _, version = target.partition("/")
    if product in PRODUCT_DIRECTORIES.values() or (root / product).is_dir():
        return None
    if product in PRODUCT_DIRECTORIES:
        spelled = PRODUCT_DIRECTORIES[product] + (f"/{version}" if version else "")
        return f"{target!r} names the product by its code; the menu's name is {spelled!r}"
    known = ", ".join(PRODUCT_DIRECTORIES.values())
    return (
        f"{target!r} is not auto, local, shell, a product ({known} or a directory in "
        f"{root}) or a version of one (proxmox-ve/9.1-1)"
    )
