"""
Renamed iPXE binaries are recognised by content, so iPXE asking for itself again under
any name gets the chain script and no boot loop; other boot files pass through.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pxepilot.boot.tftp import BootFiles, looks_like_ipxe
from pxepilot.tftp.files import BytesReader, RequestContext, TFTPRoot
from pxepilot.tftp.packets import RequestOption

DISTRIBUTION = Path("/usr/lib/ipxe")
IPXE_SHAPE = (RequestOption("blksize", b"1432"), RequestOption("tsize", b"0"))
FIRMWARE_SHAPE = (RequestOption("tsize", b"0"), RequestOption("blksize", b"1468"))


def distribution_binary(name: str) -> bytes:
    path = DISTRIBUTION / name
    if not path.exists():
        pytest.skip(f"{path} comes with Debian's ipxe package (.ci/run installs it)")
    return path.read_bytes()


@pytest.mark.e2e
@pytest.mark.parametrize(
    "name", ["undionly.kpxe", "undionly.kkpxe", "ipxe.pxe", "ipxe.efi", "snponly.efi"]
)
def test_distribution_binaries_are_recognised(name: str) -> None:
    """
    Each of Debian's iPXE network boot binaries is recognised from its bytes alone.
    """
    assert looks_like_ipxe(BytesReader(distribution_binary(name)))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xea\x05\x00\xc0\x07" + b"\x00" * 59,  # the jump without iPXE's stack magic
        b"MZ" + os.urandom(3 << 20),  # another EFI program (GRUB, shim, ...)
        b"\xeb\x3c\x90" + os.urandom(1000),  # a boot sector, a PXELINUX image
        b"#!ipxe\necho iPXE\n",  # a script naming iPXE is not a binary
    ],
    ids=["empty", "jump-only", "other-efi", "other-pxe", "script"],
)
def test_other_files_are_not(data: bytes) -> None:
    """
    Files that are not iPXE binaries are not taken for one.
    """
    assert not looks_like_ipxe(BytesReader(data))


def test_marker_across_read_chunks() -> None:
    """
    The EFI marker is found where it straddles two reads.
    """
    data = b"MZ" + b"\x00" * ((1 << 20) - 4) + b"iPXE" + b"\x00" * 100
    assert looks_like_ipxe(BytesReader(data))


@pytest.mark.e2e
def test_renamed_binary_gets_the_chain_script(tmp_path: Path) -> None:
    """
    A renamed ipxe.efi is served to firmware as it is, and answered with the chain
    script when iPXE asks for it; a renamed non-iPXE file is served to iPXE unchanged.
    """
    binary = distribution_binary("ipxe.efi")
    (tmp_path / "x64-loader.efi").write_bytes(binary)
    (tmp_path / "grubx64.efi").write_bytes(b"MZ" + b"\x00" * 4096)
    files = BootFiles(TFTPRoot(tmp_path), lambda context: "http://192.0.2.10:8080/")
    firmware = files.open("x64-loader.efi", RequestContext("192.0.2.50", "", FIRMWARE_SHAPE))
    assert firmware.size == len(binary)
    ipxe = files.open("x64-loader.efi", RequestContext("192.0.2.50", "", IPXE_SHAPE))
    script = ipxe.read(0, 4096)
    assert script.startswith(b"#!ipxe\n")
    assert b"chain --autofree http://192.0.2.10:8080/boot.ipxe" in script
    other = files.open("grubx64.efi", RequestContext("192.0.2.50", "", IPXE_SHAPE))
    assert other.read(0, 8) == b"MZ" + b"\x00" * 6
