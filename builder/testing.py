"""
Synthetic Proxmox-like ISOs, for tests and benchmarks: the layout of a real one
(C{/.cd-info}, C{/.disk/info}, C{/auto-installer-capable}, C{/boot/linux26},
C{/boot/initrd.img}, the product's squashfs images), Rock Ridge and Joliet names, made
with pycdlib.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import pycdlib

CD_INFO = (
    "RELEASE='{release}'\nISORELEASE='{iso_release}'\nISONAME='{iso_name}'\n"
    "PRODUCT='{product}'\nPRODUCTLONG='{product_name}'\n"
)


def cd_info(
    product: str = "pve",
    product_name: str = "Proxmox VE",
    iso_name: str = "proxmox-ve",
    release: str = "9.1",
    iso_release: str = "1",
) -> bytes:
    return CD_INFO.format(
        product=product,
        product_name=product_name,
        iso_name=iso_name,
        release=release,
        iso_release=iso_release,
    ).encode()


def _iso_name(name: str, taken: set[str]) -> str:
    """
    A unique ISO 9660 level-1 name (8.3, upper case) for a Rock Ridge name.
    """
    stem, _, extension = name.lstrip(".").upper().rpartition(".")
    if not stem:
        stem, extension = extension, ""
    clean = "".join(c if c.isalnum() else "_" for c in stem)[:8] or "_"
    extension = "".join(c if c.isalnum() else "_" for c in extension)[:3]
    candidate = f"{clean}.{extension}"
    number = 0
    while candidate in taken:
        number += 1
        candidate = f"{clean[:6]}{number:02d}.{extension}"
    taken.add(candidate)
    return candidate


def make_iso(
    path: Path,
    files: Mapping[str, bytes | tuple[BinaryIO, int]],
    joliet: bool = True,
    rock_ridge: bool = True,
) -> None:
    """
    Write an ISO holding C{files} (Rock Ridge paths such as C{/boot/linux26}; content as
    bytes, or an open file and its size).
    """
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=1,
        rock_ridge="1.09" if rock_ridge else None,
        joliet=3 if joliet else None,
        vol_ident="PROXMOX",
    )
    taken: dict[str, set[str]] = {}
    directories: dict[str, str] = {"/": "/"}
    for rr_path in sorted(files):
        parts = rr_path.strip("/").split("/")
        parent = "/"
        for part in parts[:-1]:
            child = f"{parent.rstrip('/')}/{part}"
            if child not in directories:
                iso_parent = directories[parent]
                name = _iso_name(part, taken.setdefault(iso_parent, set())).rstrip(".")
                iso_dir = f"{iso_parent.rstrip('/')}/{name}"
                iso.add_directory(
                    iso_dir,
                    rr_name=part if rock_ridge else None,
                    joliet_path=child if joliet else None,
                )
                directories[child] = iso_dir
            parent = child
        iso_parent = directories[parent]
        leaf = _iso_name(parts[-1], taken.setdefault(iso_parent, set()))
        iso_path = f"{iso_parent.rstrip('/')}/{leaf};1"
        content = files[rr_path]
        fp, size = (io.BytesIO(content), len(content)) if isinstance(content, bytes) else content
        iso.add_fp(
            fp,
            size,
            iso_path,
            rr_name=parts[-1] if rock_ridge else None,
            joliet_path=rr_path if joliet else None,
        )
    iso.write(str(path))
    iso.close()


def proxmox_files(
    info: bytes | None = None,
    kernel: bytes = b"MZ kernel image " * 4096,
    initrd: bytes | None = None,
    capable: bool = True,
    extra: Mapping[str, bytes | tuple[BinaryIO, int]] | None = None,
) -> dict[str, bytes | tuple[BinaryIO, int]]:
    """
    The files of a Proxmox installer ISO.
    """
    info = cd_info() if info is None else info
    files: dict[str, bytes | tuple[BinaryIO, int]] = {
        "/.cd-info": info,
        "/.disk/info": info,
        "/.pve-cd-id.txt": b"0f3e8c1a-pve-cd-id\n",
        "/boot/linux26": kernel,
        "/boot/initrd.img": gzip.compress(b"initramfs " * 10000) if initrd is None else initrd,
        "/pve-installer.squashfs": os.urandom(200_000),
        "/COPYING": b"GNU AGPL\n",
    }
    if capable:
        files["/auto-installer-capable"] = b""
    files.update(extra or {})
    return files
