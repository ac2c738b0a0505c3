"""
The readers behind the Secure Boot pieces, each against files made by another program:
FAT images by mkfs.fat and mcopy, signatures by sbsign and by Debian, packages by
dpkg-deb; and each against damaged input.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from builder import authenticode, deb, secure_boot
from builder.authenticode import PeError
from builder.fat import FatError, FatImage
from builder.pipeline import BuildError
from builder.secure_boot import Piece
from tests.builder.signed_pieces import (
    DEBIAN_GRUB_CD,
    DEBIAN_GRUBNET,
    DEBIAN_SHIM,
    Key,
    fat_image,
    grub_mods_section,
    make_deb,
    make_key,
    make_pe,
    need_debian_files,
    sign,
    vendor_cert_section,
)

FILES = {
    "EFI/BOOT/BOOTX64.EFI": os.urandom(300_000),
    "EFI/BOOT/grubx64.efi": os.urandom(70_001),
    "EFI/proxmox/a rather long file name.cfg": b"set root=(cd0)\n",
    "EFI/proxmox/empty": b"",
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    directory = tmp_path_factory.mktemp("keys")
    microsoft = make_key(directory, "Test UEFI CA", organisation="Test Microsoft")
    proxmox = make_key(directory, "Proxmox Secure Boot CA")
    debian = make_key(directory, "Debian Secure Boot CA")
    return {
        "microsoft": make_key(directory, "Test Windows UEFI Driver Publisher", microsoft),
        "proxmox-ca": proxmox,
        "proxmox": make_key(directory, "Proxmox Secure Boot Signing", proxmox),
        "debian-ca": debian,
        "debian": make_key(directory, "Debian Secure Boot Signer", debian),
    }


# --- FAT


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_fat_reads_what_mkfs_and_mcopy_wrote(tmp_path: Path, bits: int) -> None:
    """
    Every file reads back byte for byte, by its long or short name in any case; a path
    that is not there is None.
    """
    image = FatImage(fat_image(tmp_path, FILES, bits))
    assert image.bits == bits
    for path, data in FILES.items():
        assert image.read(path) == data
    assert image.read("efi/boot/GRUBX64.EFI") == FILES["EFI/BOOT/grubx64.efi"]
    assert image.read("/EFI/BOOT/bootx64.efi") == FILES["EFI/BOOT/BOOTX64.EFI"]
    assert image.read("EFI/BOOT/missing.efi") is None
    assert image.read("EFI/BOOT") is None
    assert image.read("EFI/BOOT/BOOTX64.EFI/below") is None


def _fat16(tmp_path: Path) -> tuple[bytearray, FatImage]:
    data = bytearray(fat_image(tmp_path, FILES, 16))
    return data, FatImage(bytes(data))


def test_fat_chain_that_loops_is_an_error(tmp_path: Path) -> None:
    data, image = _fat16(tmp_path)
    entry = image.find("EFI/BOOT/BOOTX64.EFI")
    assert entry is not None
    fat = struct.unpack_from("<H", data, 14)[0] * image.sector_size
    # The file's third cluster points back at its first.
    third = image._chain(entry.cluster)[2]
    struct.pack_into("<H", data, fat + 2 * third, entry.cluster)
    with pytest.raises(FatError, match="loops"):
        FatImage(bytes(data)).read("EFI/BOOT/BOOTX64.EFI")


def test_fat_chain_leaving_the_data_area_is_an_error(tmp_path: Path) -> None:
    data, image = _fat16(tmp_path)
    entry = image.find("EFI/BOOT/BOOTX64.EFI")
    assert entry is not None
    fat = struct.unpack_from("<H", data, 14)[0] * image.sector_size
    struct.pack_into("<H", data, fat + 2 * entry.cluster, image.clusters + 10)
    with pytest.raises(FatError, match="is followed by"):
        FatImage(bytes(data)).read("EFI/BOOT/BOOTX64.EFI")


def test_fat_file_larger_than_its_chain_is_an_error(tmp_path: Path) -> None:
    data, image = _fat16(tmp_path)
    entry = image.find("EFI/BOOT/BOOTX64.EFI")
    assert entry is not None
    fat = struct.unpack_from("<H", data, 14)[0] * image.sector_size
    struct.pack_into("<H", data, fat + 2 * entry.cluster, 0xFFFF)
    with pytest.raises(FatError, match="bytes in 1 clusters"):
        FatImage(bytes(data)).read("EFI/BOOT/BOOTX64.EFI")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:400], "no boot sector signature"),
        (lambda d: d[: len(d) // 2], "described"),
        (lambda d: d[:11] + b"\x00\x03" + d[13:], "sector size 768"),
        (lambda d: bytes(512), "no boot sector signature"),
    ],
)
def test_not_a_fat_image(tmp_path: Path, damage: object, message: str) -> None:
    data = fat_image(tmp_path, FILES, 12)
    with pytest.raises(FatError, match=message):
        FatImage(damage(data))  # type: ignore[operator]


# --- Authenticode


def test_debian_shim_and_grub(tmp_path: Path) -> None:
    """
    Debian's shim is signed by Microsoft (twice: the 2011 and the 2023 CA) and trusts
    Debian's CA, which signed Debian's network GRUB; the GRUB for CDs has no tftp.
    """
    need_debian_files()
    shim = DEBIAN_SHIM.read_bytes()
    signatures = authenticode.signatures(shim)
    assert signatures[0].subject == (
        "CN=Microsoft Windows UEFI Driver Publisher,O=Microsoft Corporation,"
        "L=Redmond,ST=Washington,C=US"
    )
    vendor = authenticode.vendor_certificate(shim)
    assert vendor is not None
    assert authenticode.subject(vendor) == "CN=Debian Secure Boot CA"
    assert authenticode.vendor_name(vendor) == "Debian"
    grub = DEBIAN_GRUBNET.read_bytes()
    [grub_signature] = authenticode.signatures(grub)
    assert grub_signature.subject == "CN=Debian Secure Boot Signer 2022 - grub2"
    assert authenticode.chains_to(grub_signature, vendor)
    assert not authenticode.chains_to(signatures[0], vendor)
    modules = secure_boot.grub_modules(grub, authenticode.parse_pe(grub))
    assert modules is not None and {"efinet", "net", "tftp"} <= modules
    cd = DEBIAN_GRUB_CD.read_bytes()
    cd_modules = secure_boot.grub_modules(cd, authenticode.parse_pe(cd))
    assert cd_modules is not None and "efinet" in cd_modules and "tftp" not in cd_modules


def test_test_signatures(tmp_path: Path, keys: dict[str, Key]) -> None:
    """
    The signer sbsign used is found, and chains to its CA and not to another.
    """
    program = make_pe([("mods", grub_mods_section(["normal", "efinet", "tftp"]))])
    assert authenticode.signatures(program) == []
    signed = sign(program, keys["proxmox"], tmp_path, "grub")
    [signature] = authenticode.signatures(signed)
    assert signature.subject == "CN=Proxmox Secure Boot Signing"
    assert authenticode.signer_vendor(signature) == "Proxmox"
    assert authenticode.chains_to(signature, keys["proxmox-ca"].certificate)
    assert not authenticode.chains_to(signature, keys["debian-ca"].certificate)
    shim = make_pe([(".vendor_cert", vendor_cert_section(keys["proxmox-ca"].certificate))])
    vendor = authenticode.vendor_certificate(sign(shim, keys["microsoft"], tmp_path, "shim"))
    assert vendor == keys["proxmox-ca"].certificate
    assert authenticode.vendor_certificate(program) is None


def test_damaged_signatures(tmp_path: Path, keys: dict[str, Key]) -> None:
    signed = sign(make_pe([]), keys["proxmox"], tmp_path, "program")
    offset, size = authenticode.parse_pe(signed).security
    with pytest.raises(PeError, match="truncated or damaged PE image"):
        authenticode.signatures(signed[: offset + size - 100])
    garbled = bytearray(signed)
    garbled[offset + 8 : offset + 40] = b"\xff" * 32
    with pytest.raises(PeError, match="damaged signature"):
        authenticode.signatures(bytes(garbled))
    wrong_length = bytearray(signed)
    struct.pack_into("<I", wrong_length, offset, size + 4096)
    with pytest.raises(PeError, match="certificate entry"):
        authenticode.signatures(bytes(wrong_length))
    with pytest.raises(authenticode.NotPe):
        authenticode.signatures(b"MZ kernel image " * 64)
    shim = bytearray(make_pe([(".vendor_cert", b"\x00\x10\0\0" + bytes(12))]))
    with pytest.raises(PeError, match="outside its section"):
        authenticode.vendor_certificate(bytes(shim))


# --- packages and directories


def _package_files(keys: dict[str, Key], tmp_path: Path) -> dict[str, bytes]:
    grub = sign(make_pe([("mods", grub_mods_section(["tftp"]))]), keys["proxmox"], tmp_path, "g")
    return {
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed": grub,
        "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed": b"the CD's GRUB",
        "/usr/share/doc/grub-efi-amd64-signed/changelog": b"text",
    }


@pytest.mark.parametrize("compression", ["xz", "gzip", "none"])
def test_deb(tmp_path: Path, keys: dict[str, Key], compression: str) -> None:
    """
    The network GRUB comes out of a package dpkg-deb built; the CD's GRUB beside it is
    not taken.
    """
    files = _package_files(keys, tmp_path)
    package = make_deb(tmp_path, "grub-efi-amd64-signed", files, compression)
    pieces = secure_boot.pieces_from_sources([package])
    grub = files["/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"]
    assert pieces == {
        "grub": Piece(grub, f"grubnetx64.efi.signed from {package.name}"),
    }


def test_deb_with_zstd_is_refused_clearly(tmp_path: Path, keys: dict[str, Key]) -> None:
    package = make_deb(tmp_path, "grub-efi-amd64-signed", _package_files(keys, tmp_path), "zstd")
    with pytest.raises(BuildError, match=r"zstd .* cannot read; unpack it with 'dpkg-deb -x'"):
        secure_boot.pieces_from_sources([package])


def test_damaged_debs(tmp_path: Path, keys: dict[str, Key]) -> None:
    package = make_deb(tmp_path, "grub-efi-amd64-signed", _package_files(keys, tmp_path))
    data = package.read_bytes()
    garbled = bytearray(data)
    member = data.index(b"data.tar.xz") + 60
    garbled[member + 100 : member + 300] = bytes(200)
    for name, content, message in [
        ("short.deb", data[: len(data) - 3000], "is truncated: its member data.tar.xz needs"),
        ("header.deb", data[:100], r"is truncated or damaged \(ar header at byte 72\)"),
        ("garbled.deb", bytes(garbled), r"is truncated or damaged \(data.tar.xz: "),
        ("text.deb", b"not a package", "no ar archive header"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BuildError, match=message):
            secure_boot.pieces_from_sources([tmp_path / name])
    with pytest.raises(deb.DebError, match="truncated"):
        deb.extract(tmp_path / "short.deb", ["grubnetx64.efi.signed"])
    empty = make_deb(tmp_path, "empty", {"/usr/share/doc/x": b"x"})
    with pytest.raises(BuildError, match=r"holds neither shimx64\.efi\.signed nor"):
        secure_boot.pieces_from_sources([empty])
    with pytest.raises(BuildError, match="no such file or directory"):
        secure_boot.pieces_from_sources([tmp_path / "absent.deb"])


def test_directory(tmp_path: Path) -> None:
    """
    An unpacked package or a directory of copies will do; the signed files win over the
    unsigned ones beside them; a later source replaces an earlier one's piece.
    """
    need_debian_files()
    tree = tmp_path / "unpacked"
    (tree / "usr/lib/shim").mkdir(parents=True)
    (tree / "usr/lib/grub/x86_64-efi-signed").mkdir(parents=True)
    shutil.copy(DEBIAN_SHIM, tree / "usr/lib/shim/shimx64.efi.signed")
    (tree / "usr/lib/shim/shimx64.efi").write_bytes(b"unsigned shim")
    shutil.copy(DEBIAN_GRUBNET, tree / "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
    shutil.copy(DEBIAN_GRUB_CD, tree / "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
    pieces = secure_boot.pieces_from_sources([tree])
    assert pieces["shim"].data == DEBIAN_SHIM.read_bytes()
    assert pieces["grub"].data == DEBIAN_GRUBNET.read_bytes()
    assert pieces["grub"].origin == "grubnetx64.efi.signed from --secure-boot-from unpacked"
    other = tmp_path / "other"
    other.mkdir()
    (other / "grubx64.efi").write_bytes(b"an operator's GRUB")
    assert secure_boot.pieces_from_sources([tree, other])["grub"].data == b"an operator's GRUB"
    twice = tmp_path / "twice"
    for folder in ("a", "b"):
        (twice / folder).mkdir(parents=True)
        (twice / folder / "shimx64.efi").write_bytes(b"shim")
    with pytest.raises(BuildError, match=r"several shimx64\.efi"):
        secure_boot.pieces_from_sources([twice])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(BuildError, match="holds neither"):
        secure_boot.pieces_from_sources([tmp_path / "nothing"])
