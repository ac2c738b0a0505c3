"""
The running TFTP server against real clients from Debian's packages (curl, atftp,
busybox, tftp-hpa) and a strict client of our own, over real sockets.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxepilot.tftp.packets import (
    Ack,
    Data,
    Error,
    OptionAck,
    ReadRequest,
    RequestOption,
    decode,
    encode,
)
from tests.tftp_client import TFTPFailure, download, request, wait_for_silence
from tests.twistd_process import TwistdProcess

TFTP_LISTENING = re.compile(r"TFTP listening on (?P<host>[^ ]+):(?P<port>\d+)\n")
BIG = 65536 * 512 + 100  # just over 65535 blocks at blksize 512: the block number wraps

SIZES = {"empty": 0, "one": 1, "b511": 511, "b512": 512, "b513": 513, "m1": 1 << 20}


def need(program: str) -> None:
    if shutil.which(program) is None:
        pytest.fail(f"{program} is not installed (.ci/run installs it)")


class Server:
    def __init__(self, process: TwistdProcess, root: Path, port: int) -> None:
        self.process = process
        self.root = root
        self.port = port
        self.address = ("127.0.0.1", port)

    def digest(self, name: str) -> str:
        return hashlib.sha256((self.root / name).read_bytes()).hexdigest()


def make_root(root: Path) -> None:
    root.mkdir()
    for name, size in SIZES.items():
        (root / name).write_bytes(os.urandom(size))
    with open(root / "big", "wb") as f:
        for offset in range(0, BIG, 1 << 20):
            f.write(os.urandom(min(1 << 20, BIG - offset)))
    # CR and LF pairs straddling block boundaries in netascii.
    (root / "text.cfg").write_bytes(
        (b"x" * 510 + b"\r\n" + b"y" * 509 + b"\r" + b"\n" * 3 + b"end\n") * 40
    )
    (root / "sub").mkdir()
    (root / "sub" / "inner").write_bytes(b"inner")
    (root.parent / "secret").write_bytes(b"secret")
    (root / "escape").symlink_to(root.parent)


def start(tmp: Path, *args: str) -> tuple[TwistdProcess, int]:
    (tmp / "answers").mkdir(exist_ok=True)
    (tmp / "assets").mkdir(exist_ok=True)
    process = TwistdProcess(
        [
            "--answers",
            str(tmp / "answers"),
            "--assets",
            str(tmp / "assets"),
            "--port",
            "0",
            "--boot",
            "--tftp-port",
            "0",
            "--tftp-root",
            str(tmp / "root"),
            *args,
        ]
    )
    return process, int(process.read_until(TFTP_LISTENING)["port"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("tftp")
    make_root(tmp / "root")
    process, port = start(tmp, "--interface", "127.0.0.1", "--tftp-max-per-client", "64")
    try:
        yield Server(process, tmp / "root", port)
    finally:
        assert process.stop() in (0, -15), process.text


def run(args: list[str], out: Path) -> Path:
    result = subprocess.run(args, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CURL_CASES = [
    (name, blksize)
    for name in sorted(SIZES)
    for blksize in (None, 8, 512, 1468, 8192, 65464)
    # blksize 8 takes 131072 round trips for a MiB: only the small files.
    if not (blksize == 8 and SIZES[name] > 4096)
]


@pytest.mark.parametrize(("name", "blksize"), CURL_CASES)
def test_curl(server: Server, tmp_path: Path, name: str, blksize: int | None) -> None:
    """
    curl, without options (plain RFC 1350), and asking for each block size (with its
    tsize and timeout).
    """
    need("curl")
    out = tmp_path / "out"
    args = ["curl", "-sS", "-o", str(out)]
    args += ["--tftp-no-options"] if blksize is None else ["--tftp-blksize", str(blksize)]
    run([*args, f"tftp://127.0.0.1:{server.port}/{name}"], out)
    assert sha(out) == server.digest(name)


@pytest.mark.parametrize("name", sorted(SIZES))
@pytest.mark.parametrize(
    "options",
    [
        (),
        ("blksize 1468",),
        ("blksize 1468", "windowsize 8"),
        ("blksize 512", "windowsize 16", "tsize", "timeout 2"),
        ("blksize 8192", "windowsize 4"),
    ],
)
def test_atftp(server: Server, tmp_path: Path, name: str, options: tuple[str, ...]) -> None:
    """
    atftp, the one Debian client that asks for windowsize.
    """
    need("atftp")
    out = tmp_path / "out"
    args = ["atftp"]
    for option in options:
        args += ["--option", option]
    run([*args, "-g", "-r", name, "-l", str(out), "127.0.0.1", str(server.port)], out)
    assert sha(out) == server.digest(name)


@pytest.mark.parametrize("name", sorted(SIZES))
@pytest.mark.parametrize("blksize", [None, 1468])
def test_busybox(server: Server, tmp_path: Path, name: str, blksize: int | None) -> None:
    """
    busybox tftp, which always asks for tsize.
    """
    need("busybox")
    out = tmp_path / "out"
    args = ["busybox", "tftp", "-g", "-r", name, "-l", str(out)]
    if blksize:
        args += ["-b", str(blksize)]
    run([*args, "127.0.0.1", str(server.port)], out)
    assert sha(out) == server.digest(name)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_tftp_hpa(server: Server, tmp_path: Path, name: str) -> None:
    """
    The tftp-hpa client: plain RFC 1350, octet mode.
    """
    need("tftp")
    out = tmp_path / "out"
    run(["tftp", "-m", "octet", "127.0.0.1", str(server.port), "-c", "get", name, str(out)], out)
    assert sha(out) == server.digest(name)


def test_tftp_hpa_netascii(server: Server, tmp_path: Path) -> None:
    """
    tftp-hpa's default mode is netascii: converted on the wire and back, the text
    arrives as it is on disk, CR and LF pairs across block boundaries included.
    """
    need("tftp")
    out = tmp_path / "out"
    run(["tftp", "127.0.0.1", str(server.port), "-c", "get", "text.cfg", str(out)], out)
    assert out.read_bytes() == (server.root / "text.cfg").read_bytes()


@pytest.mark.parametrize(
    "client",
    [
        ["curl", "-sS", "--tftp-blksize", "512", "-o", "{out}", "tftp://127.0.0.1:{port}/big"],
        [
            "atftp",
            "--option",
            "blksize 512",
            "--option",
            "tsize",
            "-g",
            "-r",
            "big",
            "-l",
            "{out}",
            "127.0.0.1",
            "{port}",
        ],
        ["busybox", "tftp", "-g", "-r", "big", "-l", "{out}", "127.0.0.1", "{port}"],
        ["tftp", "-m", "octet", "127.0.0.1", "{port}", "-c", "get", "big", "{out}"],
    ],
    ids=["curl", "atftp", "busybox", "tftp-hpa"],
)
def test_block_number_wrap(server: Server, tmp_path: Path, client: list[str]) -> None:
    """
    A file just over 65535 blocks at blksize 512 arrives intact with every client.
    """
    need(client[0])
    out = tmp_path / "out"
    run([a.format(out=out, port=server.port) for a in client], out)
    assert out.stat().st_size == BIG
    assert sha(out) == server.digest("big")


@pytest.mark.parametrize(
    ("blksize", "windowsize"), [(512, 1), (1468, 16), (1468, 64), (8192, 16), (65464, 2)]
)
def test_strict_client(server: Server, blksize: int, windowsize: int) -> None:
    """
    Our strict client checks every reply against the RFCs, including large windows.
    """
    for name in ("empty", "b512", "m1"):
        data = download(server.address, name, blksize, windowsize)
        assert hashlib.sha256(data).hexdigest() == server.digest(name)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (b"../secret", 2),
        (b"..\\secret", 2),
        (b"sub/../../secret", 2),
        (b"escape/secret", 2),
        (b"/etc/passwd", 1),
        (b"sub/../sub/inner/../../../secret", 2),
        (b".hidden", 2),
        (b"a" * 300, 4),
        (b"sub", 1),
        (b"nothing", 1),
    ],
)
def test_traversal_and_bad_names(server: Server, name: bytes, code: int) -> None:
    """
    Nothing outside the root is served; errors never carry a server path.
    """
    sock, reply, _ = request(server.address, name)
    sock.close()
    assert isinstance(reply, Error)
    assert reply.code == code
    assert str(server.root) not in reply.message
    assert "/" not in reply.message


def test_write_request_refused(server: Server, tmp_path: Path) -> None:
    """
    An upload is refused and creates nothing.
    """
    need("tftp")
    source = tmp_path / "upload"
    source.write_bytes(b"data")
    subprocess.run(
        [
            "tftp",
            "-m",
            "octet",
            "127.0.0.1",
            str(server.port),
            "-c",
            "put",
            str(source),
            "uploaded",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert not (server.root / "uploaded").exists()


def test_stranger_gets_error_5(server: Server) -> None:
    """
    A datagram from another port to a transfer's port gets ERROR 5; the transfer goes
    on and completes.
    """
    sock, reply, peer = request(server.address, "b513")
    assert reply == Data(1, (server.root / "b513").read_bytes()[:512])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.settimeout(5)
        stranger.sendto(encode(Ack(1)), peer)
        assert decode(stranger.recvfrom(100)[0]) == Error(5, "Unknown transfer ID")
    sock.sendto(encode(Ack(1)), peer)
    assert decode(sock.recvfrom(1000)[0]) == Data(2, (server.root / "b513").read_bytes()[512:])
    sock.sendto(encode(Ack(2)), peer)
    sock.close()


def test_duplicate_ack_sends_nothing_more(server: Server) -> None:
    """
    Two ACKs for one block bring one next block, not two.
    """
    sock, _reply, peer = request(server.address, "m1")
    sock.sendto(encode(Ack(1)), peer)
    sock.sendto(encode(Ack(1)), peer)
    received = wait_for_silence(sock, 0.5)
    sock.sendto(encode(Error(0, "done")), peer)
    sock.close()
    assert [decode(d) for d in received] == [Data(2, (server.root / "m1").read_bytes()[512:1024])]


def test_size_probe_then_download(server: Server) -> None:
    """
    The UEFI pattern: ask with tsize, abort with ERROR 8 after the OACK, then download.
    """
    sock, reply, peer = request(
        server.address, "m1", {"tsize": "0", "blksize": "1468", "windowsize": "4"}
    )
    assert reply == OptionAck((("tsize", str(1 << 20)), ("blksize", "1468"), ("windowsize", "4")))
    sock.sendto(encode(Error(8, "User aborted the transfer")), peer)
    sock.close()
    data = download(server.address, "m1", 1468, 4)
    assert hashlib.sha256(data).hexdigest() == server.digest("m1")
    server.process.read_until(re.compile(r"TFTP 127\.0\.0\.1 m1: probe"))


def test_flood_of_abandoned_requests_then_a_normal_one(server: Server, tmp_path: Path) -> None:
    """
    Hundreds of requests that are never acknowledged, then a normal download by curl
    from the same address: it completes, and the server stays healthy.
    """
    need("curl")
    sockets = []
    for _ in range(400):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(
            encode(ReadRequest(b"m1", "octet", (RequestOption("tsize", b"0"),))), server.address
        )
        sockets.append(sock)
    out = tmp_path / "out"
    run(
        [
            "curl",
            "-sS",
            "--tftp-blksize",
            "1468",
            "-o",
            str(out),
            f"tftp://127.0.0.1:{server.port}/m1",
        ],
        out,
    )
    assert sha(out) == server.digest("m1")
    for sock in sockets:
        sock.close()


def test_replies_come_from_the_address_asked(tmp_path: Path) -> None:
    """
    Bound to every address, the server answers a request sent to 127.0.0.2 from
    127.0.0.2, and one sent to 127.0.0.1 from 127.0.0.1, on fresh ports.
    """
    make_root(tmp_path / "root")
    process, port = start(tmp_path)
    try:
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            sock, reply, peer = request((address, port), "one")
            sock.close()
            assert reply == Data(1, (tmp_path / "root" / "one").read_bytes())
            assert peer[0] == address
            assert peer[1] != port
        with pytest.raises(TFTPFailure):
            download(("127.0.0.2", port), "nothing")
    finally:
        assert process.stop() in (0, -15), process.text


def test_ipv6(tmp_path: Path) -> None:
    """
    Bound to an IPv6 address, the server serves over IPv6 from fresh ports.
    """
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    make_root(tmp_path / "root")
    process, port = start(tmp_path, "--interface", "::1")
    try:
        data = download(("::1", port), "m1", 1468, 8)
        assert data == (tmp_path / "root" / "m1").read_bytes()
    finally:
        assert process.stop() in (0, -15), process.text


def test_health_reports_tftp(server: Server) -> None:
    """
    /health reports the TFTP server listening, its root readable, and what it has done.
    """
    download(server.address, "b513")
    port = server.process.http_port()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        health = json.load(response)
    tftp = health["tftp"]
    assert tftp["status"] == "ok"
    assert (tftp["listening"], tftp["port"], tftp["root"]) == (True, server.port, "readable")
    assert tftp["transfers"]["complete"] > 0
    assert tftp["bytes_sent"] > 0
