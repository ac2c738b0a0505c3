"""
Adding a file to an ISO by appending a new directory tree: readable by pycdlib and
xorriso under its Rock Ridge and Joliet names, every original file intact.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.iso9660 import (
    SECTOR,
    IsoError,
    NeedMoreData,
    parse_records,
    prepare,
    read_descriptors,
    read_tree,
)
from builder.testing import make_iso, proxmox_files
from tests.builder.helpers import iso_file, rock_ridge_listing

MODE = b'mode = "http"\n\n[http]\nurl = "http://192.0.2.10:8080/answer"\n'


def prepared(image: bytes, content: bytes = MODE) -> bytes:
    def read(offset: int, length: int) -> bytes:
        return image[offset : offset + length]

    trees = [read_tree(d, read) for d in read_descriptors(read)]
    plan = prepare(trees, len(image), "auto-installer-mode.toml", content, read, now=0)
    out = bytearray(image)
    for offset, patch in plan.patches:
        out[offset : offset + len(patch)] = patch
    assert plan.tail_offset >= len(image)
    return bytes(out.ljust(plan.tail_offset, b"\0") + plan.tail)


@pytest.fixture
def pycdlib_iso(tmp_path: Path) -> bytes:
    extra = {f"/proxmox/packages/pkg{i:03d}.deb": bytes([i]) * (i * 100) for i in range(60)}
    make_iso(tmp_path / "x.iso", proxmox_files(extra=extra))
    return (tmp_path / "x.iso").read_bytes()


@pytest.fixture
def xorriso_iso(tmp_path: Path) -> bytes:
    if shutil.which("xorriso") is None:
        pytest.fail("xorriso is not installed (.ci/run installs it)")
    tree = tmp_path / "tree"
    for name, content in proxmox_files().items():
        path = tree / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        assert isinstance(content, bytes)
        path.write_bytes(content)
    deep = tree / "a" / "b" / "c" / "d" / "e" / "f" / "g" / "h" / "i"
    deep.mkdir(parents=True)
    (deep / "deep-file").write_bytes(b"nine levels down")
    subprocess.run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-V",
            "PVE",
            "-o",
            str(tmp_path / "x.iso"),
            str(tree),
        ],
        check=True,
        capture_output=True,
    )
    return (tmp_path / "x.iso").read_bytes()


@pytest.mark.parametrize("maker", ["pycdlib_iso", "xorriso_iso"])
def test_added_file_and_everything_else_intact(request: pytest.FixtureRequest, maker: str) -> None:
    """
    The mode file is there under its Rock Ridge and Joliet names, and every original
    file reads back unchanged.
    """
    image: bytes = request.getfixturevalue(maker)
    result = prepared(image)
    assert result[: len(image)][: 16 * SECTOR] == image[: 16 * SECTOR]
    assert iso_file(result, rr_path="/auto-installer-mode.toml") == MODE
    assert iso_file(result, joliet_path="/auto-installer-mode.toml") == MODE
    before = rock_ridge_listing(image)
    after = rock_ridge_listing(result)
    assert after.pop("/auto-installer-mode.toml") == MODE
    assert after == before


def test_xorriso_reads_the_prepared_image(xorriso_iso: bytes, tmp_path: Path) -> None:
    """
    xorriso, which Proxmox's own tooling uses, lists the new file read-only and extracts
    it; its own consistency check finds nothing wrong.
    """
    (tmp_path / "p.iso").write_bytes(prepared(xorriso_iso))
    listing = subprocess.run(
        ["xorriso", "-indev", str(tmp_path / "p.iso"), "-find", "/", "-exec", "lsdl", "--"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = next(x for x in listing.splitlines() if "auto-installer-mode.toml" in x)
    assert line.startswith("-r--r--r--")
    subprocess.run(
        [
            "xorriso",
            "-osirrox",
            "on",
            "-indev",
            str(tmp_path / "p.iso"),
            "-extract",
            "/auto-installer-mode.toml",
            str(tmp_path / "mode.toml"),
        ],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "mode.toml").read_bytes() == MODE


def test_an_existing_mode_file_is_replaced(tmp_path: Path) -> None:
    """
    An ISO already prepared (for another server) gets the new content, and the file
    appears once.
    """
    make_iso(tmp_path / "x.iso", proxmox_files(extra={"/auto-installer-mode.toml": b"old"}))
    result = prepared((tmp_path / "x.iso").read_bytes())
    assert iso_file(result, rr_path="/auto-installer-mode.toml") == MODE
    names = [p for p in rock_ridge_listing(result) if p.endswith("mode.toml")]
    assert names == ["/auto-installer-mode.toml"]


def test_root_directory_that_grows_a_sector(tmp_path: Path) -> None:
    """
    When the root directory's last sector is full, the new tree's root takes one more.
    """
    extra = {f"/file-with-a-long-name-{i:02d}.bin": b"x" for i in range(40)}
    make_iso(tmp_path / "x.iso", proxmox_files(extra=extra))
    image = (tmp_path / "x.iso").read_bytes()
    result = prepared(image)
    assert iso_file(result, rr_path="/auto-installer-mode.toml") == MODE
    assert len(rock_ridge_listing(result)) == len(rock_ridge_listing(image)) + 1


def test_without_joliet(tmp_path: Path) -> None:
    """
    An ISO without Joliet gets the file in its one tree.
    """
    make_iso(tmp_path / "x.iso", proxmox_files(), joliet=False)
    result = prepared((tmp_path / "x.iso").read_bytes())
    assert iso_file(result, rr_path="/auto-installer-mode.toml") == MODE


def test_trees_and_files(pycdlib_iso: bytes) -> None:
    """
    The trees name files by Rock Ridge (primary) and Joliet paths, with their extents.
    """

    def read(offset: int, length: int) -> bytes:
        return pycdlib_iso[offset : offset + length]

    primary, joliet = (read_tree(d, read) for d in read_descriptors(read))
    assert primary.rock_ridge
    assert not joliet.rock_ridge
    for tree in (primary, joliet):
        entry = tree.files["/boot/linux26"]
        assert (
            pycdlib_iso[entry.extent * SECTOR : entry.extent * SECTOR + entry.size]
            == (proxmox_files()["/boot/linux26"])
        )
        assert "/.disk/info" in tree.files
        assert "/auto-installer-capable" in tree.files


def test_reads_wait_for_data(pycdlib_iso: bytes) -> None:
    """
    While the image is still arriving, a read past its end says how far it must get.
    """
    available = 20 * SECTOR

    def read(offset: int, length: int) -> bytes:
        if offset + length > available:
            raise NeedMoreData(offset + length)
        return pycdlib_iso[offset : offset + length]

    with pytest.raises(NeedMoreData) as raised:
        [read_tree(d, read) for d in read_descriptors(read)]
    assert raised.value.offset > available


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"\0" * 40000, "not an ISO 9660 image"),
        (
            b"\0" * 32768 + b"\x01CD001" + b"\0" * 2041 + b"\x00XXXXX" + b"\0" * 2042,
            "not terminated",
        ),
    ],
)
def test_not_an_iso(image: bytes, message: str) -> None:
    """
    Data that is not ISO 9660 is refused with a clear error.
    """
    with pytest.raises(IsoError, match=message):
        read_descriptors(lambda o, n: image[o : o + n].ljust(n, b"\0"))


@settings(max_examples=200)
@given(st.binary(min_size=0, max_size=3000), st.integers(0, 60 * SECTOR))
def test_damaged_images_raise_only_declared_errors(garbage: bytes, where: int) -> None:
    """
    An image with garbage written over its metadata raises L{IsoError} or
    L{NeedMoreData}, or reads as some tree: nothing else escapes.
    """
    image = bytearray(_BASE)
    image[where : where + len(garbage)] = garbage

    def read(offset: int, length: int) -> bytes:
        if offset + length > len(image):
            raise NeedMoreData(offset + length)
        return bytes(image[offset : offset + length])

    try:
        for descriptor in read_descriptors(read):
            read_tree(descriptor, read)
    except (IsoError, NeedMoreData):
        pass


def _base_image() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "base.iso"
        make_iso(path, proxmox_files())
        return path.read_bytes()


_BASE = _base_image()


def test_records_never_cross_sectors() -> None:
    """
    A record that would cross a sector boundary is refused as malformed.
    """

    def record(length: int) -> bytes:
        return bytes([length]) + b"\0" * 31 + bytes([1]) + b"A" + b"\0" * (length - 34)

    fits = record(203) * 10
    assert len(parse_records(fits)) == 10
    with pytest.raises(IsoError):
        parse_records(fits + record(40))
