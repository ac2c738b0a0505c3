"""
What the TFTP server may serve: name normalisation, the root boundary, readers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from pxepilot.tftp.files import (
    AccessViolation,
    BadFileName,
    BytesReader,
    FileNotFound,
    IReader,
    ITFTPFiles,
    NetasciiReader,
    RequestContext,
    TFTPRoot,
    normalise_name,
    to_netascii,
)

CONTEXT = RequestContext("192.0.2.1")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"undionly.kpxe", "undionly.kpxe"),
        (b"/undionly.kpxe", "undionly.kpxe"),
        (b"efi\\ipxe.efi", "efi/ipxe.efi"),
        (b"\\efi\\\\ipxe.efi", "efi/ipxe.efi"),
        (b"./a//b/./c", "a/b/c"),
        (b"pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"),
    ],
)
def test_names(raw: bytes, name: str) -> None:
    """
    Backslashes are slashes; leading, doubled and C{.} segments go.
    """
    assert normalise_name(raw) == name


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"..", AccessViolation),
        (b"../etc/passwd", AccessViolation),
        (b"sub/../../etc/hostname", AccessViolation),
        (b"..\\..\\etc\\hostname", AccessViolation),
        (b"/a/b/..", AccessViolation),
        (b".hidden", AccessViolation),
        (b"dir/.ssh/id_rsa", AccessViolation),
        (b"/", FileNotFound),
        (b"./", FileNotFound),
        (b"a" * 256, BadFileName),
    ],
)
def test_refused_names(raw: bytes, error: type[Exception]) -> None:
    """
    C{..} and hidden segments, empty and over-long names are refused.
    """
    with pytest.raises(error):
        normalise_name(raw)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "tftp"
    (root / "efi").mkdir(parents=True)
    (root / "undionly.kpxe").write_bytes(b"bios")
    (root / "efi" / "ipxe.efi").write_bytes(b"uefi")
    (tmp_path / "secret").write_bytes(b"secret")
    return root


def test_provides_interfaces(root: Path) -> None:
    """
    L{TFTPRoot} and its readers provide their interfaces.
    """
    files = TFTPRoot(root)
    assert verifyObject(ITFTPFiles, files)
    reader = files.open("undionly.kpxe", CONTEXT)
    assert verifyObject(IReader, reader)
    reader.close()
    assert verifyObject(IReader, BytesReader(b""))
    assert verifyObject(IReader, NetasciiReader(BytesReader(b"")))


def test_open_and_read(root: Path) -> None:
    """
    Files are read by offset, up to their size at open time.
    """
    reader = TFTPRoot(root).open("efi/ipxe.efi", CONTEXT)
    assert reader.size == 4
    assert reader.read(1, 10) == b"efi"
    assert reader.read(4, 10) == b""
    reader.close()


def test_symlinks(root: Path, tmp_path: Path) -> None:
    """
    A file's own link is followed wherever it points, as distributions install boot
    loaders (Debian's ipxe.efi links to /boot); a directory that leaves the root is
    refused, and so is a link to something other than a regular file.
    """
    (tmp_path / "secret").write_bytes(b"linked file")
    (root / "alias.kpxe").symlink_to("undionly.kpxe")
    (root / "linked.efi").symlink_to(tmp_path / "secret")
    (root / "outside").symlink_to(tmp_path)
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(tmp_path)
    (root / "directory-link").symlink_to(tmp_path)
    files = TFTPRoot(root)
    assert files.open("alias.kpxe", CONTEXT).read(0, 10) == b"bios"
    assert files.open("linked.efi", CONTEXT).read(0, 20) == b"linked file"
    for name in ("outside/secret", "sub/up/secret"):
        with pytest.raises(AccessViolation):
            files.open(name, CONTEXT)
    with pytest.raises(FileNotFound):
        files.open("directory-link", CONTEXT)


def test_missing_directories_and_specials(root: Path) -> None:
    """
    Missing files and directories are not found; a FIFO is neither opened blocking nor
    served.
    """
    files = TFTPRoot(root)
    for name in ["nothing", "efi", "undionly.kpxe/x"]:
        with pytest.raises(FileNotFound):
            files.open(name, CONTEXT)
    os.mkfifo(root / "fifo")
    with pytest.raises(FileNotFound):
        files.open("fifo", CONTEXT)


def test_netascii_conversion() -> None:
    """
    LF becomes CR LF and a bare CR becomes CR NUL (the FreeBSD test's example).
    """
    assert to_netascii(b"foo\nbar\rbaz\n") == b"foo\r\nbar\r\0baz\r\n"
    assert to_netascii(b"a\r\nb") == b"a\r\0\r\nb"


def test_netascii_reader_across_chunks() -> None:
    """
    Converted data is cut into blocks after conversion, so a CR NUL pair may straddle
    two blocks; the windows not yet acknowledged can be read again, older data is
    released.
    """
    raw = (b"x" * 65535 + b"\r" + b"y\n" * 40000) * 2
    expected = to_netascii(raw)
    reader = NetasciiReader(BytesReader(raw), retain=4096)
    assert reader.size is None
    pieces = []
    offset = 0
    while True:
        block = reader.read(offset, 512)
        assert reader.read(offset, 512) == block
        if offset >= 4096:
            assert reader.read(offset - 4096, 512) == expected[offset - 4096 : offset - 3584]
        pieces.append(block)
        offset += len(block)
        if len(block) < 512:
            break
    assert b"".join(pieces) == expected
    with pytest.raises(ValueError, match="released"):
        reader.read(0, 10)
