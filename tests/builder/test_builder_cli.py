"""
pxe-pilot-builder as a user runs it: the command in a subprocess, against local ISOs
and a real HTTP server on 127.0.0.1; every failure one line, nothing half-published.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import utils
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from builder.testing import cd_info, make_iso, proxmox_files
from pxepilot._version import __version__
from tests.builder.helpers import iso_file, split_combined
from tests.builder.servers import IsoServer, closed_port, self_signed, tls_server

BUILDER = str(Path(sys.executable).parent / "pxe-pilot-builder")
ANSWER = "http://192.0.2.10:8080/answer"
# The tests' answer servers listen on loopback, which the builder builds for only when
# told to.
LOOPBACK = "--force"
INITRD = b"\x1f\x8b initramfs " * 5000


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("iso") / "proxmox-ve_9.1-1.iso"
    make_iso(path, proxmox_files(initrd=INITRD))
    return path


def builder(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUILDER, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def leftovers(output: Path) -> list[str]:
    return sorted(p.name for p in output.rglob(".*")) if output.exists() else []


def check_assets(target: Path) -> dict[str, Any]:
    """
    asset.json describes the files next to it, exactly.
    """
    metadata: dict[str, Any] = json.loads((target / "asset.json").read_text())
    names = sorted(p.name for p in target.iterdir() if p.name != "asset.json")
    assert sorted(metadata["files"]) == names
    for name, described in metadata["files"].items():
        data = (target / name).read_bytes()
        assert described == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return metadata


def test_local_iso(iso: Path, tmp_path: Path) -> None:
    """
    One command turns a local ISO into a versioned assets directory.
    """
    result = builder(
        "--iso",
        iso,
        "--answer-url",
        ANSWER,
        "--output",
        tmp_path / "assets",
        "--cert-fingerprint",
        "ab" * 32,
        "--answer-token",
        "pxe:s3cret",
    )
    assert result.returncode == 0, result.stderr
    target = tmp_path / "assets" / "proxmox-ve" / "9.1-1"
    metadata = check_assets(target)
    assert metadata["source"]["sha256"] == hashlib.sha256(iso.read_bytes()).hexdigest()
    assert metadata["source"]["verification"] == "local file"
    assert metadata["answer"] == {
        "url": ANSWER,
        "cert_fingerprint": ":".join(["AB"] * 32),
        "pinned_from": "option",
        "token": True,
    }
    assert "s3cret" not in (target / "asset.json").read_text()
    assert metadata["layout"] == "combined"
    assert metadata["kernel_cmdline"].endswith("proxmox-start-auto-installer")
    _, image = split_combined((target / "initrd").read_bytes(), len(INITRD))
    mode = iso_file(image, rr_path="/auto-installer-mode.toml").decode()
    assert mode == (
        'mode = "http"\n\n[http]\n'
        f'url = "{ANSWER}"\ncert_fingerprint = "{":".join(["AB"] * 32)}"\n'
        'token = "pxe:s3cret"\n'
    )
    assert leftovers(tmp_path / "assets") == []


def test_named_layout_and_names(iso: Path, tmp_path: Path) -> None:
    """
    --layout named keeps initrd.img and proxmox.iso; --product and --version-dir name
    the directories.
    """
    result = builder(
        "--iso",
        iso,
        "--answer-url",
        ANSWER,
        "--output",
        tmp_path,
        "--layout",
        "named",
        "--product",
        "pve-lab",
        "--version-dir",
        "9.1-test",
    )
    assert result.returncode == 0, result.stderr
    metadata = check_assets(tmp_path / "pve-lab" / "9.1-test")
    assert metadata["initrds"] == [
        {"file": "initrd.img"},
        {"file": "proxmox.iso", "name": "proxmox.iso"},
    ]
    assert (metadata["product"], metadata["version"]) == ("pve", "9.1-1")


def test_existing_version_needs_force(iso: Path, tmp_path: Path) -> None:
    """
    An existing version is kept unless --force; with it, replaced whole.
    """
    assert builder("--iso", iso, "--answer-url", ANSWER, "--output", tmp_path).returncode == 0
    target = tmp_path / "proxmox-ve" / "9.1-1"
    before = (target / "asset.json").read_text()
    result = builder(
        "--iso", iso, "--answer-url", "http://192.0.2.99/answer", "--output", tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith("already exists; use --force to replace it")
    assert (target / "asset.json").read_text() == before
    result = builder(
        "--iso", iso, "--answer-url", "http://192.0.2.99/answer", "--output", tmp_path, "--force"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((target / "asset.json").read_text())["answer"]["url"] == (
        "http://192.0.2.99/answer"
    )
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--iso", "x.iso"],
        ["--answer-url", ANSWER],
        ["--iso", "a", "--iso-url", "http://x/a", "--answer-url", ANSWER],
        ["--iso", "a", "--answer-url", ANSWER, "--bogus"],
        ["--iso", "a", "--answer-url", "ftp://x/answer"],
        ["--iso", "a", "--answer-url", ANSWER, "--cert-fingerprint", "12:34"],
        ["--iso", "a", "--answer-url", ANSWER, "--layout", "flat"],
        ["--iso", "a", "--answer-url", ANSWER, "--product", "../x"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    """
    A missing, unknown or invalid option exits 2 with the usage.
    """
    result = builder(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: pxe-pilot-builder")


def test_help() -> None:
    """
    --help describes every option.
    """
    result = builder("--help")
    assert result.returncode == 0
    for option in [
        "--iso-url",
        "--iso",
        "--answer-url",
        "--output",
        "--cert-fingerprint",
        "--answer-token",
        "--product",
        "--version-dir",
        "--version",
        "--layout",
        "--skip-verify",
        "--force",
    ]:
        assert option in result.stdout


def bad_inputs(tmp_path: Path, iso: Path) -> dict[str, tuple[Path, str]]:
    data = iso.read_bytes()
    (tmp_path / "not-an-iso.iso").write_bytes(os.urandom(100_000))
    (tmp_path / "truncated.iso").write_bytes(data[: len(data) // 2])
    (tmp_path / "tiny.iso").write_bytes(b"ISO")
    make_iso(tmp_path / "debian.iso", {"/README": b"Debian", "/boot/linux26": b"k"})
    make_iso(tmp_path / "old.iso", proxmox_files(capable=False))
    make_iso(tmp_path / "rhel.iso", proxmox_files(info=cd_info(product="rhel")))
    return {
        "not-an-iso": (tmp_path / "not-an-iso.iso", "not an ISO 9660 image"),
        "truncated": (tmp_path / "truncated.iso", "truncated"),
        "tiny": (tmp_path / "tiny.iso", "truncated or not an ISO 9660 image"),
        "debian": (tmp_path / "debian.iso", "not a Proxmox ISO"),
        "too old": (tmp_path / "old.iso", "cannot install automatically"),
        "other product": (tmp_path / "rhel.iso", "not a Proxmox ISO"),
        "missing": (tmp_path / "missing.iso", "cannot read"),
        "directory": (tmp_path, "is not a file"),
    }


def test_bad_isos(iso: Path, tmp_path: Path) -> None:
    """
    Each bad ISO fails with one clear line and leaves the output directory untouched.
    """
    output = tmp_path / "assets"
    output.mkdir()
    (output / "keep").write_text("an operator's file")
    (tmp_path / "in").mkdir()
    for label, (path, message) in bad_inputs(tmp_path / "in", iso).items():
        result = builder("--iso", path, "--answer-url", ANSWER, "--output", output)
        assert result.returncode == 1, label
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("pxe-pilot-builder: error: "), (label, lines)
        assert message in lines[-1], (label, lines[-1])
        assert sorted(p.name for p in output.iterdir()) == ["keep"], label


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """
    A directory for tmpfs mounts, unmounted afterwards.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small file system")
    point = tmp_path / "mnt"
    point.mkdir()
    yield point
    subprocess.run(["umount", str(point)], check=False, capture_output=True)


@pytest.mark.e2e
def test_disk_full(iso: Path, mounted: Path) -> None:
    """
    Running out of space mid-build fails with one line and removes what was written.
    """
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mounted)], check=True)
    result = builder("--iso", iso, "--answer-url", ANSWER, "--output", mounted)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("pxe-pilot-builder: error: No space left on device")
    )
    assert list(mounted.iterdir()) == []


@pytest.mark.e2e
def test_output_not_writable(iso: Path, mounted: Path) -> None:
    """
    A read-only output directory is reported before anything is downloaded or read.
    """
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mounted)], check=True)
    result = builder("--iso", iso, "--answer-url", ANSWER, "--output", mounted)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"pxe-pilot-builder: error: cannot write to the output directory {mounted}: "
        "Read-only file system"
    )


def test_output_is_a_file(iso: Path, tmp_path: Path) -> None:
    """
    An output path that is a file is reported.
    """
    (tmp_path / "file").write_text("")
    result = builder("--iso", iso, "--answer-url", ANSWER, "--output", tmp_path / "file")
    assert result.returncode == 1
    assert "pxe-pilot-builder: error: " in result.stderr


def port_number(port: Any) -> int:
    return int(port.getHost().port)


def sums(data: bytes) -> bytes:
    return f"{hashlib.sha256(data).hexdigest()}  proxmox-ve_9.1-1.iso\n".encode()


async def run_builder(*args: str) -> tuple[str, str, int]:
    out, err, code = await utils.getProcessOutputAndValue(BUILDER, args, env=dict(os.environ))
    return out.decode(), err.decode(), code


@pytest_twisted.ensureDeferred
async def test_real_server_with_drops(iso: Path, tmp_path: Path) -> None:
    """
    Against a real HTTP server that drops the connection twice mid-body, the download
    resumes with Range requests and the assets verify.
    """
    from twisted.internet import reactor

    data = iso.read_bytes()
    server = IsoServer(
        {"proxmox-ve_9.1-1.iso": data, "SHA256SUMS": sums(data)},
        drops=2,
        drop_after=len(data) // 3,
    )
    site: Any = Site(server)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port_number(port)}/iso/proxmox-ve_9.1-1.iso"
        _out, err, code = await run_builder(
            "--iso-url", url, "--answer-url", ANSWER, "--output", str(tmp_path)
        )
    finally:
        await maybeDeferred(port.stopListening)
    assert code == 0, err
    third = len(data) // 3
    assert server.ranges == [None, f"bytes={third}-", f"bytes={2 * third}-"]
    assert "verified against SHA256SUMS" in err
    check_assets(tmp_path / "proxmox-ve" / "9.1-1")


class Trickle(Resource):
    """
    Sends a file slowly, so that the builder can be interrupted mid-download.
    """

    isLeaf = True

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data
        self.started: Deferred[None] = Deferred()

    def render_GET(self, request: Request) -> Any:
        from twisted.internet import reactor

        if request.path.endswith(b"SHA256SUMS"):
            request.setResponseCode(404)
            return b""
        request.setHeader(b"content-length", str(len(self.data)).encode())
        position = [0]

        def more() -> None:
            if request.finished or request._disconnected:
                return
            request.write(self.data[position[0] : position[0] + 65536])
            position[0] += 65536
            if not self.started.called and position[0] > 200_000:
                self.started.callback(None)
            if position[0] < len(self.data):
                reactor.callLater(0.05, more)
            else:
                request.finish()

        more()
        return NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_interrupt_leaves_nothing(iso: Path, tmp_path: Path) -> None:
    """
    Ctrl-C during the download ends the builder with an error status and removes its
    staging directory: nothing the server would list, nothing at all.
    """
    from twisted.internet import reactor

    trickle = Trickle(iso.read_bytes())
    site: Any = Site(trickle)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    process = subprocess.Popen(
        [
            BUILDER,
            "--iso-url",
            f"http://127.0.0.1:{port_number(port)}/x/proxmox-ve_9.1-1.iso",
            "--answer-url",
            ANSWER,
            "--output",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await trickle.started
        assert leftovers(tmp_path), "the build should be staging by now"
        process.send_signal(signal.SIGINT)
        code = await Deferred.fromCoroutine(_wait(process))
    finally:
        process.kill()
        await maybeDeferred(port.stopListening)
    assert code != 0
    assert list(tmp_path.iterdir()) == []


async def _wait(process: subprocess.Popen[bytes]) -> int:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(200):
        if process.poll() is not None:
            return process.returncode
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError("the builder did not stop")


def installer_mode(target: Path) -> dict[str, Any]:
    """
    The C{/auto-installer-mode.toml} the installer will read: from the ISO inside a
    combined initrd, parsed.
    """
    _, image = split_combined((target / "initrd").read_bytes(), len(INITRD))
    return tomllib.loads(iso_file(image, rr_path="/auto-installer-mode.toml").decode())


def openssl_fingerprint(der: bytes) -> str:
    """
    What C{openssl x509 -fingerprint -sha256} prints for a certificate, after the C{=}.
    """
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def test_pins_the_server_certificate(iso: Path, tmp_path: Path) -> None:
    """
    An https:// answer URL without --cert-fingerprint: the builder fetches the server's
    certificate and pins its SHA-256 in the ISO's mode file, says so, and records it in
    asset.json as pinned from the server.
    """
    certificate = self_signed(tmp_path)
    with tls_server(certificate) as server:
        url = f"https://127.0.0.1:{server.port}/answer"
        result = builder(
            "--iso", iso, "--answer-url", url, "--output", tmp_path / "assets", LOOPBACK
        )
    assert result.returncode == 0, result.stderr
    expected = openssl_fingerprint(certificate.der)
    target = tmp_path / "assets" / "proxmox-ve" / "9.1-1"
    assert installer_mode(target) == {
        "mode": "http",
        "http": {"url": url, "cert_fingerprint": expected},
    }
    assert (
        f"pinned the certificate of 127.0.0.1:{server.port}: SHA256 {expected}; installers "
        "of this asset accept only that certificate"
    ) in result.stderr.splitlines()
    assert check_assets(target)["answer"] == {
        "url": url,
        "cert_fingerprint": expected,
        "pinned_from": "server",
        "token": False,
    }
    assert server.handshakes == 1


def test_given_fingerprint_is_normalised_and_nothing_fetched(iso: Path, tmp_path: Path) -> None:
    """
    --cert-fingerprint in lower case without colons is pinned as the installer prints
    it, and the answer server is not contacted: the build succeeds with nothing
    listening at the URL.
    """
    digest = hashlib.sha256(b"a certificate made elsewhere").hexdigest()
    expected = ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()
    with closed_port() as port:
        url = f"https://127.0.0.1:{port}/answer"
        result = builder(
            "--iso",
            iso,
            "--answer-url",
            url,
            "--cert-fingerprint",
            digest,
            "--output",
            tmp_path / "assets",
            LOOPBACK,
        )
    assert result.returncode == 0, result.stderr
    target = tmp_path / "assets" / "proxmox-ve" / "9.1-1"
    assert installer_mode(target)["http"] == {"url": url, "cert_fingerprint": expected}
    metadata = check_assets(target)
    assert metadata["answer"]["cert_fingerprint"] == expected
    assert metadata["answer"]["pinned_from"] == "option"
    assert "pinned the certificate" not in result.stderr


def test_no_cert_pin_leaves_trust_to_the_system_cas(iso: Path, tmp_path: Path) -> None:
    """
    With --no-cert-pin, an https:// answer URL is built without a fingerprint (the
    installer then trusts its CAs) and nothing is contacted; with --cert-fingerprint as
    well, the contradiction is a usage error.
    """
    with closed_port() as port:
        url = f"https://127.0.0.1:{port}/answer"
        result = builder(
            "--iso",
            iso,
            "--answer-url",
            url,
            "--no-cert-pin",
            "--output",
            tmp_path / "assets",
            LOOPBACK,
        )
        both = builder(
            "--iso",
            iso,
            "--answer-url",
            url,
            "--no-cert-pin",
            "--cert-fingerprint",
            "ab" * 32,
            "--output",
            tmp_path / "other",
        )
    assert result.returncode == 0, result.stderr
    target = tmp_path / "assets" / "proxmox-ve" / "9.1-1"
    assert installer_mode(target)["http"] == {"url": url}
    assert check_assets(target)["answer"]["pinned_from"] is None
    assert both.returncode == 2
    assert "contradict" in both.stderr


def test_http_answer_url_pins_nothing(iso: Path, tmp_path: Path) -> None:
    """
    An http:// answer URL has no certificate: the mode file has no cert_fingerprint and
    asset.json records none.
    """
    result = builder("--iso", iso, "--answer-url", ANSWER, "--output", tmp_path)
    assert result.returncode == 0, result.stderr
    target = tmp_path / "proxmox-ve" / "9.1-1"
    assert installer_mode(target)["http"] == {"url": ANSWER}
    answer = check_assets(target)["answer"]
    assert (answer["cert_fingerprint"], answer["pinned_from"]) == (None, None)
    assert "pinned" not in result.stderr


def strings(value: Any) -> Iterator[str]:
    """
    Every string in a JSON document, keys included.
    """
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_asset_json_holds_no_local_path(tmp_path: Path) -> None:
    """
    asset.json is served to anyone with the assets: it names the source ISO's file but
    no directory of the build machine (the ISO's, the output's, the home directory).
    """
    source = tmp_path / "isos" / "proxmox-ve_9.1-1.iso"
    source.parent.mkdir()
    make_iso(source, proxmox_files(initrd=INITRD))
    output = tmp_path / "assets"
    result = builder("--iso", source, "--answer-url", ANSWER, "--output", output)
    assert result.returncode == 0, result.stderr
    metadata = check_assets(output / "proxmox-ve" / "9.1-1")
    assert metadata["source"]["file"] == "proxmox-ve_9.1-1.iso"
    home = str(Path.home())
    for text in strings(metadata):
        assert str(tmp_path) not in text, text
        assert not text.startswith("/"), text
        assert home == "/" or home not in text, text


class PlainHTTP(Protocol):
    """
    An HTTP server's answer to whatever arrives, as a TLS client meets it when an
    https:// URL names an http:// server's port.
    """

    def dataReceived(self, data: bytes) -> None:
        transport: Any = self.transport
        transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        transport.loseConnection()


@pytest.mark.parametrize("listening", ["nothing", "plain HTTP"])
@pytest_twisted.ensureDeferred
async def test_unusable_answer_server_fails_first(
    iso: Path, tmp_path: Path, listening: str
) -> None:
    """
    When the https:// answer URL leads to no server, or to one that does not speak TLS,
    the build stops in seconds with one line naming the URL and the way around, before
    the ISO is requested, and creates nothing.
    """
    from twisted.internet import reactor

    data = iso.read_bytes()
    server = IsoServer({"proxmox-ve_9.1-1.iso": data, "SHA256SUMS": sums(data)})
    site: Any = Site(server)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    factory: Any = Factory.forProtocol(PlainHTTP)
    plain = reactor.listenTCP(0, factory, interface="127.0.0.1")
    output = tmp_path / "assets"
    try:
        with closed_port() as closed:
            answer_port = closed if listening == "nothing" else port_number(plain)
            url = f"https://127.0.0.1:{answer_port}/answer"
            started = time.monotonic()
            _out, err, code = await run_builder(
                "--iso-url",
                f"http://127.0.0.1:{port_number(port)}/iso/proxmox-ve_9.1-1.iso",
                "--answer-url",
                url,
                "--output",
                str(output),
                LOOPBACK,
            )
            elapsed = time.monotonic() - started
    finally:
        await maybeDeferred(port.stopListening)
        await maybeDeferred(plain.stopListening)
    assert code == 1
    [_warning, line] = err.strip().splitlines()
    cause = "Connection refused" if listening == "nothing" else "TLS handshake failed"
    assert line.startswith(
        f"pxe-pilot-builder: error: cannot pin the certificate of {url}: {cause}"
    ), line
    assert line.endswith("give its fingerprint with --cert-fingerprint"), line
    assert elapsed < 30
    assert server.requests == []
    assert not output.exists()


def test_version_prints_the_program_version() -> None:
    """
    --version prints the program's version and exits 0, whatever else is given.
    """
    for args in (["--version"], ["--iso", "x.iso", "--version"]):
        result = builder(*args)
        assert (result.returncode, result.stdout, result.stderr) == (
            0,
            f"pxe-pilot-builder {__version__}\n",
            "",
        )


def test_old_version_dir_spelling_still_builds(iso: Path, tmp_path: Path) -> None:
    """
    --version with a value, the option's old spelling, still names the version's
    directory, with a warning naming --version-dir; it never prints the version and
    exits 0 without building, which a script relying on it would not notice.
    """
    result = builder(
        "--iso", iso, "--answer-url", ANSWER, "--output", tmp_path, "--version", "9.1-old"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (
        "pxe-pilot-builder: warning: --version 9.1-old is the old spelling of "
        "--version-dir 9.1-old, which replaces it"
    ) in result.stderr.splitlines()
    check_assets(tmp_path / "proxmox-ve" / "9.1-old")
    bad = builder("--iso", iso, "--answer-url", ANSWER, "--version", "../x")
    assert bad.returncode == 2
    assert "usable directory name" in bad.stderr


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/answer", "its host 127.0.0.1 is loopback"),
        ("http://127.3.2.1:8080/answer", "its host 127.3.2.1 is loopback"),
        ("http://localhost:8080/answer", "its host localhost is loopback"),
        ("http://[::1]:8080/answer", "its host ::1 is loopback"),
        ("https://169.254.10.20:8443/answer", "its host 169.254.10.20 is link-local"),
        ("http://[fe80::1]:8080/answer", "its host fe80::1 is link-local"),
        ("http://0.0.0.0:8080/answer", "its host 0.0.0.0 is the unspecified address"),
        ("http://[::]:8080/answer", "its host :: is the unspecified address"),
        ("http://192.0.2.10:8080/", "its path is /, not pxe-pilot's /answer"),
        ("http://192.0.2.10:8080", "its path is empty, not pxe-pilot's /answer"),
        ("http://192.0.2.10:8080/answers", "its path is /answers, not pxe-pilot's /answer"),
        ("http://192.0.2.10:8080/webhook", "its path is /webhook, not pxe-pilot's /answer"),
    ],
)
def test_answer_url_that_cannot_be_pxe_pilot(
    iso: Path, tmp_path: Path, url: str, reason: str
) -> None:
    """
    An answer URL the installed machines cannot reach pxe-pilot's /answer at is refused
    with one line saying why, before anything is created; --force builds it anyway,
    with the same reason as a warning.
    """
    output = tmp_path / "assets"
    refused = builder("--iso", iso, "--answer-url", url, "--output", output, "--no-cert-pin")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"pxe-pilot-builder: error: the answer URL {url} will not reach "), line
    assert reason in line, line
    assert line.endswith("or --force to build anyway"), line
    assert not output.exists()

    forced = builder(
        "--iso", iso, "--answer-url", url, "--output", output, "--no-cert-pin", "--force"
    )
    assert forced.returncode == 0, forced.stderr
    [warning] = [line for line in forced.stderr.splitlines() if "warning" in line]
    assert warning.startswith(f"pxe-pilot-builder: warning: the answer URL {url} may not ")
    assert reason in warning
    assert check_assets(output / "proxmox-ve" / "9.1-1")["answer"]["url"] == url


@pytest.mark.parametrize(
    "url",
    [
        "http://192.0.2.10:8080/answer",
        "https://pxe.example.com/answer",
        "http://[2001:db8::10]:8080/answer",
        "http://[fd00:77::1]:8080/answer",
        "http://192.0.2.10:8000/pxe/answer",
    ],
)
def test_answer_urls_that_can_be_pxe_pilot(iso: Path, tmp_path: Path, url: str) -> None:
    """
    An address or name the machines may reach, with pxe-pilot's route (under a prefix
    when pxe-pilot is embedded in another site), builds without a word about it.
    """
    result = builder("--iso", iso, "--answer-url", url, "--output", tmp_path, "--no-cert-pin")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


def test_an_ipv6_answer_url_without_brackets(iso: Path, tmp_path: Path) -> None:
    """
    An IPv6 address written into the answer URL without brackets cannot be told from a
    port: refused, saying how to write it.
    """
    url = "http://fd00:77::1:8080/answer"
    refused = builder("--iso", iso, "--answer-url", url, "--output", tmp_path, "--no-cert-pin")
    assert refused.returncode == 2
    assert "is not a URL (an IPv6 address goes in brackets" in refused.stderr


def test_refused_iso_url_is_named(tmp_path: Path) -> None:
    """
    A server that refuses the connection fails the build at once with one line naming
    the ISO's URL and the cause, and nothing is created.
    """
    output = tmp_path / "srv" / "assets"
    with closed_port() as port:
        url = f"http://127.0.0.1:{port}/iso/proxmox-ve_9.1-1.iso"
        result = builder("--iso-url", url, "--answer-url", ANSWER, "--output", output)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("pxe-pilot-builder: error: cannot fetch "), line
    assert f"the checksums of {url}" in line
    assert line.endswith(": Connection refused"), line
    assert list(tmp_path.iterdir()) == []


def test_failed_build_leaves_no_directory(tmp_path: Path) -> None:
    """
    A build that fails after creating its output directory (and the missing parents)
    removes them: the file system is as it was.
    """
    (tmp_path / "not.iso").write_bytes(b"ISO")
    output = tmp_path / "srv" / "pxe" / "assets"
    result = builder("--iso", tmp_path / "not.iso", "--answer-url", ANSWER, "--output", output)
    assert result.returncode == 1
    assert "truncated or not an ISO 9660 image" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not.iso"]
