"""
Builds with Secure Boot pieces: shim and GRUB taken out of the ISO's El Torito EFI
image as the ISO streams by, or from packages and directories given with
C{--secure-boot-from}; who signed what recorded in asset.json; sets that cannot boot
refused with nothing published.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

from builder import secure_boot
from builder.iso9660 import Entry, read_descriptors, read_tree
from builder.pipeline import BuildError, Pipeline
from builder.secure_boot import Piece, assemble, iso_extracts
from builder.testing import make_iso, prepare_iso_pxe, proxmox_files
from tests.builder.signed_pieces import (
    DEBIAN_GRUBNET,
    DEBIAN_SHIM,
    Key,
    fat_image,
    grub_mods_section,
    make_deb,
    make_key,
    make_pe,
    need,
    need_debian_files,
    sign,
    vendor_cert_section,
)

BUILDER = str(Path(sys.executable).parent / "pxe-pilot-builder")
ANSWER = "http://192.0.2.10:8080/answer"
INITRD = gzip.compress(b"initramfs " * 5000)
BIOS_IMAGE = "/boot/grub/i386-pc/eltorito.img"
NETWORK_GRUB = ["normal", "efinet", "net", "tftp", "http"]
CD_GRUB = ["normal", "efinet", "net", "iso9660"]


@frozen
class Pieces:
    keys: dict[str, Key]
    shim: bytes
    cd_grub: bytes
    net_grub: bytes
    debian_grub: bytes
    kernel: bytes
    debian_kernel: bytes


@pytest.fixture(scope="module")
def pieces(tmp_path_factory: pytest.TempPathFactory) -> Pieces:
    """
    Proxmox-like pieces signed with test keys: shim signed by a stand-in for
    Microsoft and trusting a Proxmox CA; GRUBs and kernel signed by that CA's signer.
    """
    directory = tmp_path_factory.mktemp("pieces")
    microsoft_ca = make_key(directory, "Test UEFI CA")
    proxmox_ca = make_key(directory, "Proxmox Secure Boot CA", organisation="Proxmox Test")
    debian_ca = make_key(directory, "Debian Secure Boot CA")
    microsoft = make_key(directory, "Test Windows UEFI Driver Publisher", microsoft_ca)
    proxmox = make_key(directory, "Proxmox Secure Boot Signing", proxmox_ca)
    debian = make_key(directory, "Debian Secure Boot Signer", debian_ca)
    shim = make_pe([(".vendor_cert", vendor_cert_section(proxmox_ca.certificate))])
    return Pieces(
        keys={"proxmox-ca": proxmox_ca, "debian-ca": debian_ca, "microsoft": microsoft},
        shim=sign(shim, microsoft, directory, "shim"),
        cd_grub=sign(make_pe([("mods", grub_mods_section(CD_GRUB))]), proxmox, directory, "cd"),
        net_grub=sign(
            make_pe([("mods", grub_mods_section(NETWORK_GRUB))]), proxmox, directory, "net"
        ),
        debian_grub=sign(
            make_pe([("mods", grub_mods_section(NETWORK_GRUB))]), debian, directory, "deb"
        ),
        kernel=sign(make_pe([]), proxmox, directory, "kernel"),
        debian_kernel=sign(make_pe([]), debian, directory, "debian-kernel"),
    )


def efi_iso(
    path: Path, pieces: Pieces, image: bytes | None = None, bios: bool = True
) -> tuple[Path, bytes]:
    """
    A Proxmox-like ISO booting UEFI from /efi.img (holding shim and the CD's GRUB), and
    BIOS from a stand-in El Torito image; and that EFI image.
    """
    if image is None:
        image = fat_image(
            path.parent,
            {"EFI/BOOT/BOOTX64.EFI": pieces.shim, "EFI/BOOT/grubx64.efi": pieces.cd_grub},
        )
    extra = {"/efi.img": image, BIOS_IMAGE: b"\xfa" * 2048}
    files = proxmox_files(kernel=pieces.kernel, initrd=INITRD, extra=extra)
    make_iso(path, files, bios_boot=BIOS_IMAGE if bios else None, efi_boot="/efi.img")
    return path, image


def builder(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUILDER, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def build(iso: Path, output: Path, *more: str | Path) -> subprocess.CompletedProcess[str]:
    return builder("--iso", iso, "--answer-url", ANSWER, "--output", output, *more)


def published(output: Path) -> dict[str, Any]:
    """
    The one version published: asset.json, checked against every file beside it (the
    secure-boot/ files included), and nothing hidden left behind.
    """
    [target] = [p for p in output.glob("*/*") if p.is_dir()]
    metadata: dict[str, Any] = json.loads((target / "asset.json").read_text())
    names = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert names == sorted([*metadata["files"], "asset.json"])
    for name, described in metadata["files"].items():
        data = (target / name).read_bytes()
        assert described == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert sorted(p.name for p in output.rglob(".*")) == []
    metadata["target"] = target
    return metadata


def test_pieces_from_the_isos_efi_image(tmp_path: Path, pieces: Pieces) -> None:
    """
    Shim and GRUB come out of the El Torito EFI image while the ISO streams by; who
    signed each, and whom shim trusts, is recorded; the CD's GRUB has no network module,
    which the builder says, naming the package to pass.
    """
    iso, _ = efi_iso(tmp_path / "proxmox-ve_9.1-1.iso", pieces)
    result = build(iso, tmp_path / "assets")
    assert result.returncode == 0, result.stderr
    metadata = published(tmp_path / "assets")
    target = metadata["target"]
    assert (target / "secure-boot/shimx64.efi").read_bytes() == pieces.shim
    assert (target / "secure-boot/grubx64.efi").read_bytes() == pieces.cd_grub
    image = "the ISO's EFI boot image"
    assert metadata["secure_boot"] == {
        "shim": {
            "file": "secure-boot/shimx64.efi",
            "signer": "CN=Test Windows UEFI Driver Publisher",
            "signers": ["CN=Test Windows UEFI Driver Publisher"],
            "vendor": "Proxmox Secure Boot CA",
            "from": f"{image} (EFI/BOOT/BOOTX64.EFI)",
        },
        "grub": {
            "file": "secure-boot/grubx64.efi",
            "signer": "CN=Proxmox Secure Boot Signing",
            "network": False,
            "protocols": [],
            "from": f"{image} (EFI/BOOT/grubx64.efi)",
        },
        "kernel": {"signer": "CN=Proxmox Secure Boot Signing"},
    }
    assert (
        "has no network modules (tftp or http): it cannot boot over the network; pass "
        "Proxmox's network GRUB: --secure-boot-from grub-efi-amd64-signed_<version>_amd64.deb"
    ) in result.stderr
    assert "download.proxmox.com/debian/pve/dists/<suite>/pve-no-subscription" in result.stderr


def test_package_replaces_the_isos_grub(tmp_path: Path, pieces: Pieces) -> None:
    iso, _ = efi_iso(tmp_path / "proxmox-ve_9.1-1.iso", pieces, bios=False)
    package = make_deb(
        tmp_path,
        "grub-efi-amd64-signed",
        {"/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed": pieces.net_grub},
    )
    result = build(iso, tmp_path / "assets", "--secure-boot-from", package)
    assert result.returncode == 0, result.stderr
    metadata = published(tmp_path / "assets")
    assert (metadata["target"] / "secure-boot/grubx64.efi").read_bytes() == pieces.net_grub
    assert (metadata["target"] / "secure-boot/shimx64.efi").read_bytes() == pieces.shim
    grub = metadata["secure_boot"]["grub"]
    assert grub["network"] is True
    assert grub["protocols"] == ["http", "tftp"]
    assert grub["from"] == f"grubnetx64.efi.signed from {package.name}"
    assert "warning" not in result.stderr


def test_debian_shim_with_proxmox_kernel_is_refused(tmp_path: Path, pieces: Pieces) -> None:
    """
    Debian's shim (trusting Debian's CA only) cannot start a Proxmox-signed kernel:
    refused with the sentence that says so, and nothing is published.
    """
    need_debian_files()
    iso, _ = efi_iso(tmp_path / "proxmox-ve_9.1-1.iso", pieces)
    given = tmp_path / "debian"
    given.mkdir()
    shutil.copy(DEBIAN_SHIM, given / "shimx64.efi")
    shutil.copy(DEBIAN_GRUBNET, given / "grubx64.efi")
    result = build(iso, tmp_path / "assets", "--secure-boot-from", given)
    assert result.returncode == 1
    assert (
        "error: a Debian shim with a Proxmox kernel cannot boot under Secure Boot: shim "
        "trusts CN=Debian Secure Boot CA, the kernel (the asset's vmlinuz) is signed by "
        "CN=Proxmox Secure Boot Signing"
    ) in result.stderr
    assert not (tmp_path / "assets").exists()


def test_debian_set_for_an_iso_without_efi_image(tmp_path: Path) -> None:
    """
    Debian's own shim and network GRUB, given as a directory, for an ISO whose kernel
    is not an EFI program: recorded, with a warning that the kernel is unsigned.
    """
    need_debian_files()
    iso = tmp_path / "proxmox-ve_9.1-1.iso"
    make_iso(iso, proxmox_files(initrd=INITRD))
    given = tmp_path / "debian"
    given.mkdir()
    shutil.copy(DEBIAN_SHIM, given / "shimx64.efi.signed")
    shutil.copy(DEBIAN_GRUBNET, given / "grubnetx64.efi.signed")
    result = build(iso, tmp_path / "assets", "--secure-boot-from", given)
    assert result.returncode == 0, result.stderr
    section = published(tmp_path / "assets")["secure_boot"]
    assert section["shim"]["signer"].startswith("CN=Microsoft Windows UEFI Driver Publisher,")
    assert len(section["shim"]["signers"]) == 2
    assert section["shim"]["vendor"] == "Debian Secure Boot CA"
    assert section["grub"]["signer"] == "CN=Debian Secure Boot Signer 2022 - grub2"
    assert section["grub"]["network"] is True
    assert section["grub"]["protocols"] == ["tftp"]
    assert section["kernel"] == {"signer": None}
    assert "the kernel (the asset's vmlinuz) is not signed" in result.stderr


def test_iso_without_efi_image_has_no_pieces(tmp_path: Path) -> None:
    iso = tmp_path / "proxmox-ve_9.1-1.iso"
    make_iso(iso, proxmox_files(initrd=INITRD))
    result = build(iso, tmp_path / "assets")
    assert result.returncode == 0, result.stderr
    metadata = published(tmp_path / "assets")
    assert "secure_boot" not in metadata
    assert not (metadata["target"] / "secure-boot").exists()


def test_damaged_efi_image_fails_the_build(tmp_path: Path, pieces: Pieces) -> None:
    image = bytearray(
        fat_image(tmp_path, {"EFI/BOOT/BOOTX64.EFI": pieces.shim, "EFI/BOOT/grubx64.efi": b"x"})
    )
    image[11:13] = b"\x00\x03"  # a sector size FAT does not have
    iso, _ = efi_iso(tmp_path / "proxmox-ve_9.1-1.iso", pieces, image=bytes(image))
    result = build(iso, tmp_path / "assets")
    assert result.returncode == 1
    assert (
        "error: the ISO's EFI boot image cannot be read: not a FAT file system "
        "(sector size 768, 1 sectors per cluster)"
    ) in result.stderr
    assert not (tmp_path / "assets").exists()


def test_damaged_package_fails_before_the_iso_is_read(tmp_path: Path, pieces: Pieces) -> None:
    package = make_deb(
        tmp_path,
        "grub-efi-amd64-signed",
        {"/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed": pieces.net_grub},
    )
    short = tmp_path / "short.deb"
    short.write_bytes(package.read_bytes()[:-500])
    result = build(tmp_path / "absent.iso", tmp_path / "assets", "--secure-boot-from", short)
    assert result.returncode == 1
    assert f"error: {short} is truncated: its member data.tar.xz needs" in result.stderr
    assert not (tmp_path / "assets").exists()


# --- the streaming pass and the set's checks, without the command


def _reader(data: bytes) -> Any:
    return lambda offset, length: data[offset : offset + length]


@pytest.mark.parametrize("maker", ["pycdlib-efi-only", "pycdlib-bios-and-efi", "xorriso"])
def test_el_torito_efi_image_is_found(tmp_path: Path, pieces: Pieces, maker: str) -> None:
    """
    The El Torito catalog's UEFI entry leads to /efi.img, whoever wrote the catalog.
    """
    if maker == "xorriso":
        need("xorriso")
        tree = tmp_path / "tree"
        _, image = efi_iso(tmp_path / "unused.iso", pieces)
        for name, content in proxmox_files(extra={"/efi.img": image}).items():
            assert isinstance(content, bytes)
            (tree / name.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (tree / name.lstrip("/")).write_bytes(content)
        (tree / "EFI/BOOT").mkdir(parents=True)
        (tree / "EFI/BOOT/BOOTX64.EFI").write_bytes(pieces.shim)
        iso = tmp_path / "x.iso"
        subprocess.run(
            ["xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", str(iso),
             "-e", "efi.img", "-no-emul-boot", str(tree)],
            check=True,
            capture_output=True,
        )  # fmt: skip
    else:
        iso, image = efi_iso(tmp_path / "x.iso", pieces, bios=maker.endswith("bios-and-efi"))
    data = iso.read_bytes()
    read = _reader(data)
    trees = [read_tree(d, read) for d in read_descriptors(read)]
    found = iso_extracts(trees, read)
    offset, size = found[secure_boot.EFI_IMAGE]
    assert data[offset : offset + size] == image
    if maker == "xorriso":
        offset, size = found[secure_boot.TREE_SHIM]
        assert data[offset : offset + size] == pieces.shim
    extracted = {name: data[o : o + s] for name, (o, s) in found.items()}
    got = secure_boot.pieces_from_extracts(extracted)
    assert got["shim"].data == pieces.shim


def test_pipeline_copies_the_image_out_as_it_streams(tmp_path: Path, pieces: Pieces) -> None:
    """
    Fed in small pieces, the pipeline copies the EFI image out as its bytes go by.
    """
    iso, image = efi_iso(tmp_path / "x.iso", pieces)
    data = iso.read_bytes()
    staging = tmp_path / "staging"
    staging.mkdir()
    pipeline = Pipeline(staging, "combined", b'mode = "http"\n', len(data), extract=iso_extracts)
    for at in range(0, len(data), 4096):
        pipeline.feed(data[at : at + 4096])
    result = pipeline.finish()
    assert (staging / secure_boot.EFI_IMAGE).read_bytes() == image
    assert result.files[secure_boot.EFI_IMAGE].size == len(image)
    got = secure_boot.pieces_from_staging(staging)
    assert [got["shim"].data, got["grub"].data] == [pieces.shim, pieces.cd_grub]
    assert not (staging / secure_boot.EFI_IMAGE).exists()


def test_image_outside_the_iso_is_refused(tmp_path: Path, pieces: Pieces) -> None:
    iso, _ = efi_iso(tmp_path / "x.iso", pieces)
    data = iso.read_bytes()
    read = _reader(data)
    trees = [read_tree(d, read) for d in read_descriptors(read)]
    files = trees[0].files
    for name, entry in list(files.items()):
        files[name] = Entry(entry.extent, len(data))
    with pytest.raises(BuildError, match=r"EFI boot image .* does not fit in the ISO"):
        iso_extracts(trees, read)


def _assemble(
    tmp_path: Path, shim: bytes, grub: bytes, kernel: bytes
) -> tuple[dict[str, Any] | None, list[str]]:
    (tmp_path / "vmlinuz").write_bytes(kernel)
    warnings: list[str] = []
    section, _files = assemble(
        tmp_path,
        {"shim": Piece(shim, "test shim"), "grub": Piece(grub, "test GRUB")},
        {},
        tmp_path / "vmlinuz",
        warnings.append,
    )
    return section, warnings


def test_grub_of_another_vendor_is_refused(tmp_path: Path, pieces: Pieces) -> None:
    with pytest.raises(
        BuildError, match=r"^a Proxmox shim with a Debian GRUB cannot boot under Secure Boot: "
    ):
        _assemble(tmp_path, pieces.shim, pieces.debian_grub, pieces.kernel)
    with pytest.raises(
        BuildError, match=r"^a Proxmox shim with a Debian kernel cannot boot under Secure Boot"
    ):
        _assemble(tmp_path, pieces.shim, pieces.net_grub, pieces.debian_kernel)
    assert not (tmp_path / "secure-boot").exists()


def test_nothing_to_compare_is_recorded_and_warned(tmp_path: Path, pieces: Pieces) -> None:
    """
    A shim without a vendor certificate, an unsigned GRUB, a kernel that is no EFI
    program: nothing to refuse on, so the set is recorded and each gap is said.
    """
    plain_shim = sign(make_pe([]), pieces.keys["microsoft"], tmp_path, "plain")
    unsigned_grub = make_pe([("mods", grub_mods_section(NETWORK_GRUB))])
    section, warnings = _assemble(tmp_path, plain_shim, unsigned_grub, os.urandom(4096))
    assert section is not None
    assert section["shim"]["vendor"] is None
    assert section["grub"]["signer"] is None
    assert section["kernel"] == {"signer": None}
    assert [w.split(":")[0] for w in warnings] == [
        "shim (test shim) carries no vendor certificate",
        "the GRUB (test GRUB) is not signed",
        "the kernel (the asset's vmlinuz) is not signed",
    ]


def test_unsigned_shim_is_warned(tmp_path: Path, pieces: Pieces) -> None:
    section, warnings = _assemble(tmp_path, make_pe([]), pieces.net_grub, pieces.kernel)
    assert section is not None and section["shim"]["signer"] is None
    assert warnings[0] == ("shim (test shim) is not signed: firmware with Secure Boot refuses it")


def test_a_lone_piece_gives_no_set(tmp_path: Path, pieces: Pieces) -> None:
    warnings: list[str] = []
    section, files = assemble(
        tmp_path, {"shim": Piece(pieces.shim, "x")}, {}, None, warnings.append
    )
    assert (section, files) == (None, {})
    assert warnings[0].startswith("no GRUB found for Secure Boot: the asset gets no signed")
    assert not (tmp_path / "secure-boot").exists()


def test_from_pxe_dir_takes_the_isos_efi_directory(tmp_path: Path, pieces: Pieces) -> None:
    """
    A prepare-iso --pxe directory: shim from the prepared ISO's /EFI/BOOT/, GRUB from
    the package given, the kernel's signer from its vmlinuz.
    """
    files = proxmox_files(
        kernel=pieces.kernel,
        initrd=INITRD,
        extra={"/EFI/BOOT/BOOTX64.EFI": pieces.shim, "/EFI/BOOT/grubx64.efi": pieces.cd_grub},
    )
    prepare_iso_pxe(tmp_path / "pxe", files)
    package = make_deb(
        tmp_path,
        "grub-efi-amd64-signed",
        {"/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed": pieces.net_grub},
    )
    result = builder(
        "--from-pxe-dir", tmp_path / "pxe", "--output", tmp_path / "assets",
        "--secure-boot-from", package,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    section = published(tmp_path / "assets")["secure_boot"]
    assert section["shim"]["from"] == "the ISO's /EFI/BOOT/BOOTX64.EFI"
    assert section["shim"]["vendor"] == "Proxmox Secure Boot CA"
    assert section["grub"]["from"] == f"grubnetx64.efi.signed from {package.name}"
    assert section["grub"]["network"] is True
    assert section["kernel"] == {"signer": "CN=Proxmox Secure Boot Signing"}


def test_from_pxe_dir_refuses_a_mixed_set(tmp_path: Path, pieces: Pieces) -> None:
    files = proxmox_files(kernel=pieces.debian_kernel, initrd=INITRD)
    prepare_iso_pxe(tmp_path / "pxe", files)
    given = tmp_path / "given"
    given.mkdir()
    (given / "shimx64.efi").write_bytes(pieces.shim)
    (given / "grubx64.efi").write_bytes(pieces.net_grub)
    result = builder(
        "--from-pxe-dir", tmp_path / "pxe", "--output", tmp_path / "assets",
        "--secure-boot-from", given,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: a Proxmox shim with a Debian kernel cannot boot under Secure Boot" in (
        result.stderr
    )
    assert not (tmp_path / "assets").exists()


def test_damaged_signature_fails_the_build(tmp_path: Path, pieces: Pieces) -> None:
    """
    A shim whose signature is garbled fails the build with a line naming it.
    """
    shim = bytearray(pieces.shim)
    offset = struct.unpack_from("<I", shim, 0x80 + 24 + 112 + 8 * 4)[0]
    shim[offset + 8 : offset + 40] = b"\xff" * 32
    image = fat_image(
        tmp_path, {"EFI/BOOT/BOOTX64.EFI": bytes(shim), "EFI/BOOT/grubx64.efi": pieces.net_grub}
    )
    iso, _ = efi_iso(tmp_path / "proxmox-ve_9.1-1.iso", pieces, image=image)
    result = build(iso, tmp_path / "assets")
    assert result.returncode == 1
    assert (
        "error: shim (the ISO's EFI boot image (EFI/BOOT/BOOTX64.EFI)): damaged signature"
    ) in result.stderr
    assert not (tmp_path / "assets").exists()
