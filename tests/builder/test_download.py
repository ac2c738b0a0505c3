"""
Downloading the ISO in memory (treq's StubTreq): verification against SHA256SUMS, HTTP
and connection errors, resuming after a dropped connection, and what a failed run
leaves behind.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.testing import MemoryReactorClock

from builder.cli import build, parser
from builder.pipeline import BuildError
from builder.testing import make_iso, proxmox_files
from tests.builder.helpers import iso_file, split_combined
from tests.builder.servers import IsoServer
from tests.conftest import result_of

URL = "http://mirror.test/iso/proxmox-ve_9.1-1.iso"
INITRD = b"\x1f\x8b initramfs " * 5000


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("iso") / "x.iso"
    make_iso(path, proxmox_files(initrd=INITRD))
    return path.read_bytes()


def sums(data: bytes, name: str = "proxmox-ve_9.1-1.iso") -> bytes:
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode()


def args(output: Path, *extra: str) -> argparse.Namespace:
    return parser().parse_args(
        [
            "--iso-url",
            URL,
            "--answer-url",
            "http://192.0.2.10:8080/answer",
            "--output",
            str(output),
            *extra,
        ]
    )


def run_build(
    server: IsoServer, output: Path, *extra: str, client: Any = None, stream: Any = None
) -> Deferred[Path]:
    clock = MemoryReactorClock()
    d = Deferred.fromCoroutine(
        build(
            clock,
            args(output, *extra),
            client=client or StubTreq(server),
            stream=stream or io.StringIO(),
            threaded=False,
            now=0,
        )
    )
    # Retries wait on the clock; let them run.
    for _ in range(100):
        if d.called:
            break
        clock.advance(60)
    return d


def test_verified_download(iso: bytes, tmp_path: Path) -> None:
    """
    With a SHA256SUMS next to it, the ISO is verified, and the assets published with
    that recorded.
    """
    server = IsoServer({"proxmox-ve_9.1-1.iso": iso, "SHA256SUMS": sums(iso)})
    target = result_of(run_build(server, tmp_path / "assets"))
    assert target == tmp_path / "assets" / "proxmox-ve" / "9.1-1"
    metadata = json.loads((target / "asset.json").read_text())
    assert metadata["source"] == {
        "url": URL,
        "file": "proxmox-ve_9.1-1.iso",
        "size": len(iso),
        "sha256": hashlib.sha256(iso).hexdigest(),
        "verification": "SHA256SUMS",
    }
    head, image = split_combined((target / "initrd").read_bytes(), len(INITRD))
    assert head == INITRD
    assert b'url = "http://192.0.2.10:8080/answer"' in iso_file(
        image, rr_path="/auto-installer-mode.toml"
    )
    assert server.ranges == [None]


def test_mismatch_keeps_nothing(iso: bytes, tmp_path: Path) -> None:
    """
    A checksum mismatch stops the build and leaves nothing in the output directory.
    """
    server = IsoServer({"proxmox-ve_9.1-1.iso": iso, "SHA256SUMS": sums(b"other")})
    failure = run_build(server, tmp_path / "assets")
    with pytest.raises(BuildError, match="SHA-256 mismatch"):
        result_of(failure)
    assert not (tmp_path / "assets").exists()


def test_sums_without_the_iso(iso: bytes, tmp_path: Path) -> None:
    """
    A SHA256SUMS that does not list the ISO is an error before the download.
    """
    server = IsoServer({"proxmox-ve_9.1-1.iso": iso, "SHA256SUMS": sums(iso, "other.iso")})
    with pytest.raises(BuildError, match=r"has no entry for proxmox-ve_9\.1-1\.iso"):
        result_of(run_build(server, tmp_path / "assets"))
    assert server.ranges == []


def test_no_sums_and_skip_verify(iso: bytes, tmp_path: Path) -> None:
    """
    Without a SHA256SUMS the download goes on, unverified, and says so; --skip-verify
    does not even look.
    """
    server = IsoServer({"proxmox-ve_9.1-1.iso": iso})
    target = result_of(run_build(server, tmp_path / "a"))
    assert json.loads((target / "asset.json").read_text())["source"]["verification"] == (
        "none available"
    )
    target = result_of(run_build(server, tmp_path / "b", "--skip-verify"))
    assert json.loads((target / "asset.json").read_text())["source"]["verification"] == "skipped"


@pytest.mark.parametrize(("status", "message"), [(404, "HTTP 404"), (500, "HTTP 500")])
def test_http_errors(iso: bytes, tmp_path: Path, status: int, message: str) -> None:
    """
    A missing ISO or a failing server is a clear error and leaves nothing behind.
    """
    files = {"SHA256SUMS": sums(iso)} if status == 404 else {"proxmox-ve_9.1-1.iso": iso}
    server = IsoServer(files, status=status)
    with pytest.raises(BuildError, match=message):
        result_of(run_build(server, tmp_path / "assets", "--skip-verify"))
    assert not (tmp_path / "assets").exists()


def test_dropped_connections_resume(iso: bytes, tmp_path: Path) -> None:
    """
    Connections that drop part-way are resumed with Range requests from where they
    stopped, and the result is the same.
    """
    server = IsoServer(
        {"proxmox-ve_9.1-1.iso": iso, "SHA256SUMS": sums(iso)}, drops=3, drop_after=100_000
    )
    target = result_of(run_build(server, tmp_path / "assets"))
    assert server.ranges == [None, "bytes=100000-", "bytes=200000-", "bytes=300000-"]
    assert json.loads((target / "asset.json").read_text())["source"]["sha256"] == (
        hashlib.sha256(iso).hexdigest()
    )


def test_retries_are_bounded(iso: bytes, tmp_path: Path) -> None:
    """
    A server that keeps dropping without progress is given up on after the retries.
    """
    server = IsoServer({"proxmox-ve_9.1-1.iso": iso}, drops=100, drop_after=0)
    with pytest.raises(BuildError, match="failed 6 times in a row"):
        result_of(run_build(server, tmp_path / "assets", "--skip-verify"))
    assert len(server.ranges) == 6
    assert not (tmp_path / "assets").exists()


def test_server_ignoring_range_restarts(iso: bytes, tmp_path: Path) -> None:
    """
    A server that answers a Range request with the whole file makes the download start
    over cleanly, not append the file to itself.
    """
    server = IsoServer(
        {"proxmox-ve_9.1-1.iso": iso, "SHA256SUMS": sums(iso)},
        drops=1,
        drop_after=300_000,
        ignore_range=True,
    )
    target = result_of(run_build(server, tmp_path / "assets"))
    assert server.ranges == [None, "bytes=300000-"]
    assert json.loads((target / "asset.json").read_text())["files"]["vmlinuz"]["size"] > 0


def test_existing_version_is_found_before_the_end(iso: bytes, tmp_path: Path) -> None:
    """
    Once the ISO's identity has arrived, an existing version stops the download (no
    need to fetch the rest) with a clear error, and the existing version is untouched.
    """
    existing = tmp_path / "assets" / "proxmox-ve" / "9.1-1"
    existing.mkdir(parents=True)
    (existing / "asset.json").write_text("{}")
    server = IsoServer({"proxmox-ve_9.1-1.iso": iso})
    with pytest.raises(BuildError, match="already exists; use --force"):
        result_of(run_build(server, tmp_path / "assets", "--skip-verify"))
    assert (existing / "asset.json").read_text() == "{}"
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == ["proxmox-ve"]


def test_failed_run_removes_the_directories_it_created(iso: bytes, tmp_path: Path) -> None:
    """
    A run that fails takes back every directory it made on the way to its output
    directory: nothing empty is left behind.
    """
    server = IsoServer({"proxmox-ve_9.1-1.iso": iso}, status=500)
    with pytest.raises(BuildError, match="HTTP 500"):
        result_of(run_build(server, tmp_path / "srv" / "pxe" / "assets", "--skip-verify"))
    assert list(tmp_path.iterdir()) == []


def test_failed_run_leaves_an_existing_output_as_it_was(iso: bytes, tmp_path: Path) -> None:
    """
    An output directory that was there before keeps exactly what it held when a run
    fails after the whole ISO has arrived and been written.
    """
    output = tmp_path / "assets"
    (output / "proxmox-backup-server" / "4.1-1").mkdir(parents=True)
    (output / "notes.txt").write_text("an operator's file")
    before = sorted(str(p.relative_to(output)) for p in output.rglob("*"))
    server = IsoServer({"proxmox-ve_9.1-1.iso": iso, "SHA256SUMS": sums(b"other")})
    with pytest.raises(BuildError, match="SHA-256 mismatch"):
        result_of(run_build(server, output))
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*")) == before


class Refusing:
    """
    A treq-like client whose every connection fails with C{error}.
    """

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.urls: list[str] = []

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        self.urls.append(url)
        return fail(self.error)


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(osError=111, string="Connection refused")


def test_refused_checksums_name_the_iso_url(tmp_path: Path) -> None:
    """
    When the server refuses the first request (SHA256SUMS), the error names the ISO
    the user asked for and says why in the system's words; nothing is created.
    """
    client = Refusing(refused())
    with pytest.raises(BuildError) as raised:
        result_of(run_build(IsoServer({}), tmp_path / "assets", client=client))
    assert str(raised.value) == (
        "cannot fetch http://mirror.test/iso/SHA256SUMS (the checksums of "
        f"{URL}): Connection refused"
    )
    assert not (tmp_path / "assets").exists()


def test_refused_download_names_the_iso_url(tmp_path: Path) -> None:
    """
    A refused download is retried, each retry said in a line, and then fails with the
    ISO's URL and the cause.
    """
    client = Refusing(refused())
    stream = io.StringIO()
    with pytest.raises(BuildError) as raised:
        result_of(
            run_build(
                IsoServer({}), tmp_path / "assets", "--skip-verify", client=client, stream=stream
            )
        )
    assert str(raised.value) == (f"download of {URL} failed 6 times in a row: Connection refused")
    assert client.urls == [URL] * 6
    retries = [line for line in stream.getvalue().splitlines() if "retrying" in line]
    assert retries[0] == f"download of {URL} interrupted: Connection refused; retrying in 2 s"
    assert len(retries) == 5
    assert not (tmp_path / "assets").exists()


def test_unknown_host_names_the_iso_url(tmp_path: Path) -> None:
    """
    A name that does not resolve fails at once (no retry cures it), naming the ISO.
    """
    client = Refusing(DNSLookupError("no results for hostname lookup: mirror.test"))
    with pytest.raises(BuildError) as raised:
        result_of(run_build(IsoServer({}), tmp_path / "assets", "--skip-verify", client=client))
    assert str(raised.value).startswith(f"cannot download {URL}: DNS lookup failed")
    assert client.urls == [URL]
