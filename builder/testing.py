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
    bios_boot: str | None = None,
    efi_boot: str | None = None,
) -> None:
    """
    Write an ISO holding C{files} (Rock Ridge paths such as C{/boot/linux26}; content as
    bytes, or an open file and its size), with El Torito entries for the boot images
    among them given as C{bios_boot} and C{efi_boot}.
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
    iso_paths: dict[str, str] = {}
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
        iso_paths[rr_path] = iso_path
        content = files[rr_path]
        fp, size = (io.BytesIO(content), len(content)) if isinstance(content, bytes) else content
        iso.add_fp(
            fp,
            size,
            iso_path,
            rr_name=parts[-1] if rock_ridge else None,
            joliet_path=rr_path if joliet else None,
        )
    for boot, efi in ((bios_boot, False), (efi_boot, True)):
        if boot is not None:
            iso.add_eltorito(
                iso_paths[boot],
                "/BOOT.CAT;1",
                rr_bootcatname="boot.cat" if rock_ridge else None,
                joliet_bootcatfile="/boot.cat" if joliet else None,
                efi=efi,
                platform_id=0xEF if efi else 0,
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


PXE_BOOT_SCRIPT = """#!ipxe

dhcp

menu Welcome to Proxmox Automated Installer
item auto Install Proxmox (Automated)
choose --default auto --timeout 10000 target && goto ${{target}}

:auto
echo Loading Proxmox Automated Installer ...
kernel vmlinuz ramdisk_size=16777216 rw quiet initrd=initrd.img splash=silent \
proxmox-start-auto-installer
goto load

:load
initrd initrd.img
initrd {iso} proxmox.iso
boot
"""


def prepare_iso_pxe(
    output: Path,
    files: Mapping[str, bytes | tuple[BinaryIO, int]],
    answer_url: str = "http://192.0.2.10:8080/answer",
    stem: str = "proxmox-ve_9.1-1",
) -> Path:
    """
    What C{proxmox-auto-install-assistant prepare-iso --pxe --pxe-loader ipxe
    --fetch-from http --output OUTPUT} writes for an ISO holding C{files} (see
    L{proxmox_files}): C{vmlinuz} (C{/boot/linux26}), C{initrd.img} (gzip, as the
    assistant recompresses it), the prepared ISO without its C{/boot}, named after the
    input, and C{boot.ipxe}. The initrd given is taken as gzip already.

    @return: The prepared ISO's path.
    """
    output.mkdir(parents=True, exist_ok=True)
    for source, name in (("/boot/linux26", "vmlinuz"), ("/boot/initrd.img", "initrd.img")):
        content = files[source]
        data = content if isinstance(content, bytes) else content[0].read()
        (output / name).write_bytes(data)
    prepared = {k: v for k, v in files.items() if not k.startswith("/boot/")}
    prepared["/auto-installer-mode.toml"] = (
        f'mode = "http"\n\n[http]\nurl = "{answer_url}"\n'.encode()
    )
    iso = output / f"{stem}-auto-from-http.iso"
    make_iso(iso, prepared)
    (output / "boot.ipxe").write_text(PXE_BOOT_SCRIPT.format(iso=iso.name))
    return iso
