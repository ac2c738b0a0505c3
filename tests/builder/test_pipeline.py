"""
The streaming pass: an ISO fed in chunks of any size becomes the assets, read back
and checked here; bad ISOs fail with a clear error.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from builder import pipeline as pipeline_module
from builder.pipeline import BuildError, InOrderDigest, Pipeline
from builder.testing import cd_info, make_iso, proxmox_files
from tests.builder.helpers import iso_file, rock_ridge_listing, split_combined

MODE = b'mode = "http"\n\n[http]\nurl = "http://192.0.2.10:8080/answer"\n'
KERNEL = b"\x4d\x5a kernel " * 50_000
INITRD = b"\x28\xb5\x2f\xfd zstd-compressed initramfs " * 2000


@pytest.fixture
def iso(tmp_path: Path) -> bytes:
    make_iso(tmp_path / "src.iso", proxmox_files(kernel=KERNEL, initrd=INITRD))
    return (tmp_path / "src.iso").read_bytes()


def run(
    image: bytes,
    staging: Path,
    layout: str = "combined",
    chunks: int | None = 65536,
    size: int | None = -1,
    threaded: bool = False,
) -> object:
    staging.mkdir(exist_ok=True)
    pipeline = Pipeline(
        staging, layout, MODE, len(image) if size == -1 else size, threaded=threaded, now=0
    )
    position = 0
    sizes = random.Random(1)
    while position < len(image):
        step = chunks or sizes.randint(1, 200_000)
        pipeline.feed(image[position : position + step])
        position += step
    return pipeline.finish()


@pytest.mark.parametrize(
    ("threaded", "chunks"),
    [(False, 65536), (False, None), (False, 7), (True, 65536), (True, None)],
)
def test_combined_layout(iso: bytes, tmp_path: Path, threaded: bool, chunks: int | None) -> None:
    """
    vmlinuz is the kernel; initrd is the original initrd, zero padding, and a newc
    archive holding the prepared ISO; the hashes are those of the files. Chunks of any
    size (random ones included), inline or in worker threads.
    """
    result = run(iso, tmp_path / "out", chunks=chunks, threaded=threaded)
    out = tmp_path / "out"
    assert (out / "vmlinuz").read_bytes() == KERNEL
    head, image = split_combined((out / "initrd").read_bytes(), len(INITRD))
    assert head == INITRD
    assert iso_file(image, rr_path="/auto-installer-mode.toml") == MODE
    listing = rock_ridge_listing(image)
    assert listing.pop("/auto-installer-mode.toml") == MODE
    assert listing == rock_ridge_listing(iso)
    assert result.source_sha256 == hashlib.sha256(iso).hexdigest()  # type: ignore[attr-defined]
    for name, output in result.files.items():  # type: ignore[attr-defined]
        data = (out / name).read_bytes()
        assert (output.size, output.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert sorted(p.name for p in out.iterdir()) == ["initrd", "vmlinuz"]


def test_named_layout(iso: bytes, tmp_path: Path) -> None:
    """
    named: vmlinuz, the initrd unchanged, and the prepared ISO as proxmox.iso.
    """
    result = run(iso, tmp_path / "out", layout="named")
    out = tmp_path / "out"
    assert (out / "initrd.img").read_bytes() == INITRD
    assert (out / "vmlinuz").read_bytes() == KERNEL
    assert iso_file(out / "proxmox.iso", rr_path="/auto-installer-mode.toml") == MODE
    assert sorted(result.files) == ["initrd.img", "proxmox.iso", "vmlinuz"]  # type: ignore[attr-defined]


def test_unknown_size(iso: bytes, tmp_path: Path) -> None:
    """
    Without a Content-Length the layout is planned at the end, with the same result.
    """
    known = run(iso, tmp_path / "a")
    unknown = run(iso, tmp_path / "b", size=None)
    assert known.files == unknown.files  # type: ignore[attr-defined]


def test_product(iso: bytes, tmp_path: Path) -> None:
    """
    The ISO's identity is read from inside it.
    """
    result = run(iso, tmp_path / "out")
    product = result.product  # type: ignore[attr-defined]
    assert (product.product, product.iso_name, product.version) == ("pve", "proxmox-ve", "9.1-1")


def broken(tmp_path: Path, **changes: object) -> bytes:
    make_iso(tmp_path / "bad.iso", proxmox_files(**changes))  # type: ignore[arg-type]
    return (tmp_path / "bad.iso").read_bytes()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"capable": False}, "cannot install automatically"),
        ({"info": b"NAME='Debian GNU/Linux'\n"}, "not a Proxmox ISO"),
        ({"info": cd_info(product="rhel")}, "not a Proxmox ISO"),
    ],
)
def test_not_a_usable_proxmox_iso(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    """
    An ISO without /auto-installer-capable, or of another distribution, is refused.
    """
    with pytest.raises(Exception, match=message):
        run(broken(tmp_path, **changes), tmp_path / "out")


def test_another_distribution_without_cd_info(tmp_path: Path) -> None:
    """
    An ISO with no .cd-info at all is refused early, as soon as its tree has arrived.
    """
    make_iso(tmp_path / "debian.iso", {"/README": b"Debian", "/boot/linux26": b"k"})
    image = (tmp_path / "debian.iso").read_bytes()
    (tmp_path / "out").mkdir()
    pipeline = Pipeline(tmp_path / "out", "combined", MODE, len(image))

    def feed_all() -> None:
        for offset in range(0, len(image), 4096):
            pipeline.feed(image[offset : offset + 4096])

    with pytest.raises(BuildError, match="not a Proxmox ISO"):
        feed_all()
    pipeline.abort()


@pytest.mark.parametrize("cut", [1000, 40_000, 0.5, -2048])
def test_truncated(iso: bytes, tmp_path: Path, cut: float) -> None:
    """
    A truncated ISO is refused, whatever its size was said to be.
    """
    length = (
        int(cut * len(iso)) if isinstance(cut, float) else (cut if cut > 0 else len(iso) + cut)
    )
    with pytest.raises(BuildError, match="truncated"):
        run(iso[:length], tmp_path / "out", size=len(iso))
    with pytest.raises(BuildError, match="truncated"):
        run(iso[:length], tmp_path / "out2", size=None)


def test_not_an_iso(tmp_path: Path) -> None:
    """
    A file that is not an ISO fails as soon as its first 34 KiB are in.
    """
    data = gzip.compress(os.urandom(100_000))
    (tmp_path / "out").mkdir()
    pipeline = Pipeline(tmp_path / "out", "combined", MODE, len(data))
    with pytest.raises(Exception, match="not an ISO 9660 image"):
        pipeline.feed(data[:40000])
    pipeline.abort()


def test_larger_than_announced(iso: bytes, tmp_path: Path) -> None:
    """
    More bytes than the announced size are an error, not silent corruption.
    """
    with pytest.raises(BuildError, match="larger than announced"):
        run(iso + b"\0" * 8192, tmp_path / "out", size=len(iso))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_digest_of_parts_written_in_any_order(tmp_path: Path, seed: int) -> None:
    """
    A file written in parts, in any order, with or without their bytes at hand: its
    digest is the file's. Only the parts that were written ahead of the hashed prefix,
    or given without their bytes, are read back.
    """
    shuffle = random.Random(seed)
    content = os.urandom(300_000)
    cuts = sorted(shuffle.sample(range(1, len(content)), 40))
    parts = list(zip([0, *cuts], [*cuts, len(content)], strict=True))
    shuffle.shuffle(parts)
    fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    try:
        digest = InOrderDigest("file", fd)
        hashed_prefix = 0
        expected_read_back = 0
        ahead: dict[int, int] = {}
        for start, end in parts:
            os.pwrite(fd, content[start:end], start)
            with_bytes = shuffle.random() < 0.7
            digest.wrote(start, end - start, [content[start:end]] if with_bytes else None)
            # What an in-order reader of the file would have to go back for.
            if with_bytes and start == hashed_prefix:
                hashed_prefix = end
            else:
                ahead[start] = end
            while hashed_prefix in ahead:
                end_ahead = ahead.pop(hashed_prefix)
                expected_read_back += end_ahead - hashed_prefix
                hashed_prefix = end_ahead
        assert digest.hexdigest(len(content)) == hashlib.sha256(content).hexdigest()
        assert digest.read_back == expected_read_back
    finally:
        os.close(fd)


def test_digest_of_an_incomplete_file(tmp_path: Path) -> None:
    """
    A part never reported is an error, not the digest of something else.
    """
    fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    try:
        digest = InOrderDigest("initrd", fd)
        os.pwrite(fd, b"a" * 100, 0)
        digest.wrote(0, 50, [b"a" * 50])
        with pytest.raises(BuildError, match="initrd is incomplete: 50 of 100 bytes"):
            digest.hexdigest(100)
    finally:
        os.close(fd)


@pytest.mark.parametrize("threaded", [False, True])
def test_outputs_hashed_as_written(
    iso: bytes, tmp_path: Path, threaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The outputs' hashes come from the bytes as they are written: the image is read back
    only as far as the initrd's extent goes (it must come first in the combined initrd),
    and the named layout reads back nothing of the boot files and after.
    """
    read_back: dict[str, int] = {}
    original = InOrderDigest.hexdigest

    def recorded(self: InOrderDigest, size: int) -> str:
        read_back[self.name] = self.read_back
        return original(self, size)

    monkeypatch.setattr(InOrderDigest, "hexdigest", recorded)
    initrd_end = iso.index(INITRD) + len(INITRD)
    run(iso, tmp_path / "combined", threaded=threaded)
    assert initrd_end <= read_back["initrd"] < initrd_end + 2 * 65536 + 4 * 2048
    run(iso, tmp_path / "named", layout="named", threaded=threaded)
    # Only the tree, kept aside until the image could be planned, and the appended part.
    assert read_back["proxmox.iso"] < iso.index(INITRD)
    assert read_back["vmlinuz"] == read_back["initrd.img"] == 0


def test_writeback_starts_during_the_feed(
    iso: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The writer asks the kernel to write the outputs out as it goes, so that the sync at
    the end has little left to do.
    """
    started: list[int] = []
    monkeypatch.setattr(pipeline_module, "WRITEBACK_EVERY", 100_000)
    monkeypatch.setattr(pipeline_module, "start_writeback", started.append)
    staging = tmp_path / "out"
    staging.mkdir()
    pipeline = Pipeline(staging, "combined", MODE, len(iso), now=0)
    for offset in range(0, len(iso), 65536):
        pipeline.feed(iso[offset : offset + 65536])
    during_feed = list(started)
    pipeline.finish()
    # Both files (vmlinuz and initrd), again and again as the bytes arrive.
    assert len(set(during_feed)) == 2
    assert len(during_feed) >= 2 * 4


def test_writeback_starter_accepts_a_file(tmp_path: Path) -> None:
    """
    The kernel hint is harmless on a regular file, wherever the call exists.
    """
    with open(tmp_path / "file", "wb") as f:
        f.write(b"x" * 10_000)
        pipeline_module.start_writeback(f.fileno())


def test_announced_size_smaller_than_the_volume(iso: bytes, tmp_path: Path) -> None:
    """
    A size (Content-Length) smaller than the ISO's own volume is refused as soon as the
    tree has arrived, not after the whole download.
    """
    staging = tmp_path / "out"
    staging.mkdir()
    announced = len(iso) - 4 * 2048
    pipeline = Pipeline(staging, "combined", MODE, announced, now=0)
    fed = 0

    def feed_all() -> None:
        nonlocal fed
        while fed < announced:
            fed += 4096
            pipeline.feed(iso[fed - 4096 : fed])

    with pytest.raises(BuildError, match="truncated ISO"):
        feed_all()
    assert fed < len(iso) // 2
    pipeline.abort()


def test_abort_stops_the_workers(iso: bytes, tmp_path: Path) -> None:
    """
    After an abort no worker is left writing into files that are closed (or whose
    descriptors are reused by then).
    """
    staging = tmp_path / "out"
    staging.mkdir()
    pipeline = Pipeline(staging, "combined", MODE, len(iso), threaded=True, now=0)
    pipeline.feed(iso[: len(iso) // 2])
    pipeline.abort()
    pipeline.abort()
    assert not [t for t in threading.enumerate() if t.name.startswith("builder-")]
