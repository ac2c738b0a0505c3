"""
The boot chain's TFTP side: C{boot.ipxe} is generated and points to the HTTP server; an
iPXE that asks for its own binary gets the chain script instead, while PXE firmware gets
the binary; everything else is the TFTP root as it is, names checked as always.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.application.service import IServiceCollection, MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pxepilot import Config, PxePilot, make_service
from pxepilot.address import HTTPAddress
from pxepilot.boot.ipxe import MENU_QUERY, boot_script, chain_script
from pxepilot.boot.tftp import IPXE_BINARIES, BootFiles, is_ipxe, tftp_base_url
from pxepilot.tftp.files import (
    FileNotFound,
    IReader,
    ITFTPFiles,
    RequestContext,
    TFTPRoot,
)
from pxepilot.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OptionAck,
    Packet,
    ReadRequest,
    RequestOption,
    decode,
    encode,
)
from pxepilot.tftp.server import Address, TFTPServer
from tests.conftest import AnswersDir
from tests.tftp_client import download, request

LOCAL = "192.0.2.10"
CLIENT = ("192.0.2.50", 2000)
BASE = f"http://{LOCAL}:8080/"
BINARY = b"\x7fELF not really ipxe" * 50

# Option shapes as clients send them.
IPXE = (("blksize", "1432"), ("tsize", "0"))
IPXE_WITH_WINDOW = (("blksize", "1432"), ("tsize", "0"), ("windowsize", "4"))
IPXE_UPPER_CASE = (("BLKSIZE", "1432"), ("TSIZE", "0"))
OVMF = (("tsize", "0"), ("blksize", "1468"))
OVMF_WINDOWED = (("tsize", "0"), ("blksize", "1468"), ("windowsize", "4"))
PXE_ROM: tuple[tuple[str, str], ...] = ()
BLKSIZE_ONLY = (("blksize", "1456"),)
TSIZE_ONLY = (("tsize", "0"),)
WINDOW_FIRST = (("windowsize", "4"), ("blksize", "1432"), ("tsize", "0"))


def options(shape: tuple[tuple[str, str], ...]) -> tuple[RequestOption, ...]:
    return tuple(RequestOption(name, value.encode()) for name, value in shape)


def context(shape: tuple[tuple[str, str], ...] = (), local: str = LOCAL) -> RequestContext:
    return RequestContext(CLIENT[0], local, options(shape))


def read_all(reader: IReader) -> bytes:
    data = reader.read(0, 1 << 20)
    reader.close()
    return data


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """
    A TFTP root as Debian's ipxe package installs it, plus a file of another loader and
    a secret beside the root.
    """
    root = tmp_path / "tftp"
    (root / "efi").mkdir(parents=True)
    for name in IPXE_BINARIES:
        (root / name).write_bytes(BINARY + name.encode())
    (root / "efi" / "ipxe.efi").write_bytes(BINARY + b"efi/ipxe.efi")
    (root / "pxelinux.0").write_bytes(b"pxelinux")
    (root / "boot.ipxe").write_bytes(b"#!ipxe\necho a stale script on disk\n")
    (tmp_path / "secret").write_bytes(b"secret")
    return root


@pytest.fixture
def files(root: Path) -> BootFiles:
    return BootFiles(TFTPRoot(root), lambda context: BASE)


def test_provides_the_interface(files: BootFiles) -> None:
    """
    The boot files stand in for the TFTP root.
    """
    assert verifyObject(ITFTPFiles, files)


@pytest.mark.parametrize("shape", [PXE_ROM, IPXE, OVMF])
def test_boot_script_is_generated(files: BootFiles, shape: tuple[tuple[str, str], ...]) -> None:
    """
    C{boot.ipxe} is made for whoever asks, however it asks, and fetches the menu from
    the HTTP server; a file of that name in the root is not used.
    """
    reader = files.open("boot.ipxe", context(shape))
    assert reader.size is not None
    script = read_all(reader)
    assert len(script) == reader.size
    assert script == boot_script(f"{BASE}menu.ipxe").encode()
    assert f"chain --autofree {BASE}menu.ipxe?{MENU_QUERY} || goto failed" in script.decode()


@pytest.mark.parametrize("name", [*sorted(IPXE_BINARIES), "efi/ipxe.efi"])
@pytest.mark.parametrize("shape", [IPXE, IPXE_WITH_WINDOW, IPXE_UPPER_CASE])
def test_ipxe_asking_for_itself_gets_the_chain_script(
    files: BootFiles, name: str, shape: tuple[tuple[str, str], ...]
) -> None:
    """
    An iPXE binary requested the way iPXE requests files (C{blksize}, then C{tsize})
    is answered with a script sending that iPXE on to the boot script over HTTP: it
    does not load itself again.
    """
    script = read_all(files.open(name, context(shape)))
    assert script == chain_script(f"{BASE}boot.ipxe").encode()
    assert script.startswith(b"#!ipxe\n")
    assert f"chain --autofree {BASE}boot.ipxe || goto failed" in script.decode()


@pytest.mark.parametrize("name", [*sorted(IPXE_BINARIES), "efi/ipxe.efi"])
@pytest.mark.parametrize(
    "shape", [OVMF, OVMF_WINDOWED, PXE_ROM, BLKSIZE_ONLY, TSIZE_ONLY, WINDOW_FIRST]
)
def test_firmware_gets_the_binary(
    files: BootFiles, name: str, shape: tuple[tuple[str, str], ...]
) -> None:
    """
    PXE firmware (OVMF asks for C{tsize} first, PXE ROMs ask for little or nothing)
    gets the binary itself, byte for byte.
    """
    assert read_all(files.open(name, context(shape))) == BINARY + name.encode()


def test_is_ipxe() -> None:
    """
    Only the first two options decide, in order, in any letter case.
    """
    assert is_ipxe(options(IPXE))
    assert is_ipxe(options(IPXE_UPPER_CASE))
    assert is_ipxe(options(IPXE_WITH_WINDOW))
    for shape in (OVMF, OVMF_WINDOWED, PXE_ROM, BLKSIZE_ONLY, TSIZE_ONLY, WINDOW_FIRST):
        assert not is_ipxe(options(shape))


@pytest.mark.parametrize("shape", [IPXE, OVMF])
def test_other_files_pass_through(files: BootFiles, shape: tuple[tuple[str, str], ...]) -> None:
    """
    Files that are not iPXE's own come from the root as they are, whoever asks.
    """
    assert read_all(files.open("pxelinux.0", context(shape))) == b"pxelinux"
    with pytest.raises(FileNotFound):
        files.open("missing.efi", context(shape))


def test_names_that_only_look_like_ipxe(files: BootFiles, root: Path) -> None:
    """
    A file is iPXE's only by its exact name.
    """
    (root / "ipxe.efi.bak").write_bytes(b"backup")
    (root / "my-ipxe.efi").write_bytes(b"mine")
    assert read_all(files.open("ipxe.efi.bak", context(IPXE))) == b"backup"
    assert read_all(files.open("my-ipxe.efi", context(IPXE))) == b"mine"


def test_base_url_is_asked_for_each_request(root: Path) -> None:
    """
    The scripts point to the HTTP address worked out for each request.
    """
    seen: list[RequestContext] = []

    def base(request: RequestContext) -> str:
        seen.append(request)
        return f"http://{request.local}:8080/"

    files = BootFiles(TFTPRoot(root), base)
    script = read_all(files.open("ipxe.efi", context(IPXE, local="198.51.100.1")))
    assert b"http://198.51.100.1:8080/boot.ipxe" in script
    script = read_all(files.open("boot.ipxe", context(local="203.0.113.9")))
    assert b"http://203.0.113.9:8080/menu.ipxe?" in script
    assert [c.local for c in seen] == ["198.51.100.1", "203.0.113.9"]


@pytest.mark.parametrize(
    ("public_url", "local", "base"),
    [
        ("https://boot.example.com/pxe/", LOCAL, "https://boot.example.com/pxe/"),
        (None, LOCAL, f"http://{LOCAL}:8080/"),
        (None, "2001:db8::10", "http://[2001:db8::10]:8080/"),
        (None, "", "http://${next-server}:8080/"),
    ],
)
def test_tftp_base_url(public_url: str | None, local: str, base: str) -> None:
    """
    The public URL when configured; otherwise the address the TFTP request was sent to
    (the client reached it), bracketed when IPv6; iPXE's C{next-server} when unknown.
    """
    assert tftp_base_url(HTTPAddress(public_url, 8080))(context(local=local)) == base


def test_tftp_base_url_follows_the_http_port() -> None:
    """
    The HTTP port is read for each request: it is known only once HTTP listens, and
    the configured one stands in while it does not.
    """
    address = HTTPAddress(None, 8080)
    base = tftp_base_url(address)
    assert base(context()) == f"http://{LOCAL}:8080/"
    address.listening(43210)
    assert base(context()) == f"http://{LOCAL}:43210/"
    address.listening(None)
    assert base(context()) == f"http://{LOCAL}:8080/"


# Through the TFTP server, in memory.


@implementer(IListeningPort)
class FakePort:
    """
    A transfer port that keeps what is sent through it.
    """

    def __init__(self, protocol: DatagramProtocol, interface: str) -> None:
        self.protocol = protocol
        self.interface = interface
        self.sent: list[bytes] = []
        protocol.makeConnection(self)  # type: ignore[arg-type]

    def write(self, datagram: bytes, addr: Address) -> None:
        self.sent.append(datagram)

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred[None]:
        return succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface, 40000)

    def receive(self, packet: Packet) -> None:
        self.protocol.datagramReceived(encode(packet), CLIENT)


class Server:
    """
    A TFTP server serving the boot files, with ports and refusals kept in memory.
    """

    def __init__(self, files: ITFTPFiles) -> None:
        self.ports: list[FakePort] = []
        self.refusals: list[Packet] = []
        self.server = TFTPServer(
            files=files,
            clock=Clock(),
            open_port=self.open_port,
            send_refusal=lambda local, client, d: self.refusals.append(decode(d)),
        )

    def open_port(self, protocol: DatagramProtocol, interface: str) -> FakePort:
        port = FakePort(protocol, interface)
        self.ports.append(port)
        return port

    def fetch(self, name: bytes, shape: tuple[tuple[str, str], ...]) -> bytes:
        """
        Ask for C{name} with options in the given order and acknowledge every block.
        """
        packet = ReadRequest(name, "octet", options(shape))
        self.server.requestReceived(encode(packet), CLIENT, LOCAL, LOCAL)
        if self.refusals:
            raise AssertionError(f"refused: {self.refusals}")
        [port] = self.ports
        data = b""
        blksize = 512
        reply = decode(port.sent.pop(0))
        if isinstance(reply, OptionAck):
            blksize = int(dict(reply.options).get("blksize", blksize))
            port.receive(Ack(0))
            reply = decode(port.sent.pop(0))
        while True:
            assert isinstance(reply, Data)
            data += reply.payload
            port.receive(Ack(reply.block))
            if len(reply.payload) < blksize:
                return data
            reply = decode(port.sent.pop(0))


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        (b"boot.ipxe", IPXE, "boot"),
        (b"/boot.ipxe", PXE_ROM, "boot"),
        (b"ipxe.efi", IPXE, "chain"),
        (b"\\efi\\ipxe.efi", IPXE, "chain"),
        (b"undionly.kpxe", IPXE_UPPER_CASE, "chain"),
        (b"ipxe.efi", OVMF, "binary"),
        (b"snponly.efi", OVMF, "binary"),
        (b"undionly.kpxe", PXE_ROM, "binary"),
        (b"efi//ipxe.efi", TSIZE_ONLY, "binary"),
    ],
)
def test_over_tftp(
    files: BootFiles, name: bytes, shape: tuple[tuple[str, str], ...], expected: str
) -> None:
    """
    Through the TFTP server, with names as clients spell them, each client gets what
    it can run.
    """
    received = Server(files).fetch(name, shape)
    if expected == "boot":
        assert received == boot_script(f"{BASE}menu.ipxe").encode()
    elif expected == "chain":
        assert received == chain_script(f"{BASE}boot.ipxe").encode()
    else:
        normalised = name.decode().replace("\\", "/").lstrip("/").replace("//", "/")
        assert received == BINARY + normalised.encode()


def test_generated_sizes_are_announced(files: BootFiles) -> None:
    """
    iPXE's C{tsize} is answered with the length of the script it will receive.
    """
    server = Server(files)
    packet = ReadRequest(b"ipxe.efi", "octet", options(IPXE))
    server.server.requestReceived(encode(packet), CLIENT, LOCAL, LOCAL)
    [port] = server.ports
    reply = decode(port.sent[0])
    assert isinstance(reply, OptionAck)
    assert dict(reply.options)["tsize"] == str(len(chain_script(f"{BASE}boot.ipxe")))


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (b"../secret", ErrorCode.ACCESS_VIOLATION),
        (b"../boot.ipxe", ErrorCode.ACCESS_VIOLATION),
        (b"..\\ipxe.efi", ErrorCode.ACCESS_VIOLATION),
        (b"efi/../../ipxe.efi", ErrorCode.ACCESS_VIOLATION),
        (b".hidden/ipxe.efi", ErrorCode.ACCESS_VIOLATION),
        (b"efi/.ipxe.efi", ErrorCode.ACCESS_VIOLATION),
        (b"/", ErrorCode.FILE_NOT_FOUND),
        (b"a" * 300 + b"/ipxe.efi", ErrorCode.ILLEGAL_OPERATION),
    ],
)
@pytest.mark.parametrize("shape", [IPXE, OVMF])
def test_names_are_still_checked(
    files: BootFiles, name: bytes, code: ErrorCode, shape: tuple[tuple[str, str], ...]
) -> None:
    """
    A name that may not be served is refused before anything is generated: no chain
    script for a path out of the root, a hidden one or an absurd one.
    """
    server = Server(files)
    server.server.requestReceived(
        encode(ReadRequest(name, "octet", options(shape))), CLIENT, LOCAL, LOCAL
    )
    assert server.ports == []
    [refusal] = server.refusals
    assert isinstance(refusal, Error)
    assert refusal.code == code


# Over real sockets: TFTP and HTTP of one pxe-pilot.


def fetch_ipxe_style(server: tuple[str, int], name: str) -> bytes:
    """
    Download a small file asking as iPXE does: C{blksize}, then C{tsize}.
    """
    sock, reply, peer = request(server, name, {"blksize": "1432", "tsize": "0"})
    try:
        assert isinstance(reply, OptionAck), reply
        sock.sendto(encode(Ack(0)), peer)
        datagram, _ = sock.recvfrom(70000)
        data = decode(datagram)
        assert isinstance(data, Data)
        assert len(data.payload) < 1432
        sock.sendto(encode(Ack(data.block)), peer)
        return data.payload
    finally:
        sock.close()


def http_get(url: str) -> tuple[int, str]:
    """
    GET C{url} (an IPv6 host in brackets, which treq cannot yet); its status and body.
    """
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - http only
        return response.status, response.read().decode()


def service_port(top: IServiceCollection, *names: str) -> int:
    service: Any = top
    for name in names:
        service = service.getServiceNamed(name)
    return cast(int, service.address().port)


@pytest.mark.parametrize(
    ("interface", "client", "https_port"),
    [
        ("127.0.0.1", "127.0.0.1", 8443),
        ("::1", "::1", 0),
        # Both families on one dual-stack pxe-pilot.
        ("::", "::1", 0),
        ("::", "127.0.0.1", 0),
    ],
)
@pytest_twisted.ensureDeferred
async def test_boot_chain_over_sockets(
    tmp_path: Path,
    root: Path,
    answers_dir: AnswersDir,
    interface: str,
    client: str,
    https_port: int,
) -> None:
    """
    On loopback: firmware loads the iPXE binary over TFTP; that iPXE, asking for itself,
    is sent to C{boot.ipxe} on the HTTP port pxe-pilot really listens on; C{boot.ipxe}
    over TFTP points there too; and HTTP answers both scripts; over IPv4, IPv6 (every
    URL with the address in brackets) and both families of one pxe-pilot bound to
    C{::}. The TFTP download after the menu is placed on the host the menu named: HTTP
    and TFTP know the client by one address.
    """
    (tmp_path / "assets").mkdir()
    answers_dir.write("default.toml")
    config = Config(
        answers_dir=answers_dir.root,
        assets_dir=tmp_path / "assets",
        port=0,
        interface=interface,
        boot_enabled=True,
        tftp_port=0,
        tftp_root=root,
        state_dir=tmp_path / "state",
        https_port=https_port,
    )
    top = cast(MultiService, make_service(config))
    top.startService()
    try:
        http_port = service_port(top, "http")
        tftp = (client, service_port(top, "pxe-pilot", "tftp"))
        host = f"[{client}]" if ":" in client else client
        base = f"http://{host}:{http_port}/"

        binary = await deferToThread(download, tftp, "ipxe.efi", 1468)
        assert binary == BINARY + b"ipxe.efi"

        chain = await deferToThread(fetch_ipxe_style, tftp, "ipxe.efi")
        assert chain == chain_script(f"{base}boot.ipxe").encode()

        script = await deferToThread(download, tftp, "boot.ipxe")
        assert script == boot_script(f"{base}menu.ipxe").encode()

        _, over_http = await deferToThread(http_get, f"{base}boot.ipxe")
        [menu_url] = re.findall(r"^chain --autofree (\S+)", over_http, re.MULTILINE)
        assert menu_url == f"{base}menu.ipxe?{MENU_QUERY}"

        mac_url = menu_url.split("?")[0] + "?mac=b0:7b:25:c1:0a:10&platform=efi"
        code, menu = await deferToThread(http_get, mac_url)
        assert code == 200
        assert menu.startswith("#!ipxe\n# pxe-pilot menu for b0:7b:25:c1:0a:10")

        await deferToThread(download, tftp, "ipxe.efi", 1468)
        _, text = await deferToThread(http_get, f"{base}hosts/b0:7b:25:c1:0a:10/status")
        report = json.loads(text)
        kinds = [event["kind"] for event in report["timeline"]]
        assert "tftp" in kinds, report
    finally:
        await top.stopService()


@pytest_twisted.ensureDeferred
async def test_waiting_tftp_blocks_go_before_http_work(
    answers_dir: AnswersDir, root: Path, tmp_path: Path
) -> None:
    """
    What the HTTP site does before each request (and asset downloads before each
    C{sendfile}) is serving the TFTP transfers whose ACK has arrived: the next block
    leaves at once, without the reactor coming round first.
    """
    from twisted.internet import reactor

    (tmp_path / "assets").mkdir()
    answers_dir.write("default.toml")
    (root / "big.bin").write_bytes(bytes(range(256)) * 40)
    config = Config(
        answers_dir=answers_dir.root,
        assets_dir=tmp_path / "assets",
        port=0,
        interface="127.0.0.1",
        boot_enabled=True,
        tftp_port=0,
        tftp_root=root,
        state_dir=tmp_path / "state",
        https_port=0,
    )
    pilot = PxePilot(config, reactor)
    pilot.service.startService()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.settimeout(5)
        port = service_port(pilot.service, "tftp")
        client.sendto(encode(ReadRequest(b"big.bin", "octet")), ("127.0.0.1", port))
        datagram, transfer = await deferToThread(client.recvfrom, 2048)
        assert decode(datagram) == Data(1, (bytes(range(256)) * 2)[:512])
        client.sendto(encode(Ack(1)), transfer)
        # The ACK waits in the transfer's socket; the reactor does not run from here on.
        time.sleep(0.05)
        client.settimeout(0)
        with pytest.raises(BlockingIOError):
            client.recvfrom(2048)
        pilot.site().urgent()
        assert decode(client.recvfrom(2048)[0]) == Data(2, (bytes(range(256)) * 2)[:512])
    finally:
        client.close()
        await pilot.service.stopService()
