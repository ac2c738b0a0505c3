"""
The TFTP server over real sockets, for each way it may be bound: IPv4, IPv6, and both
on one dual-stack port (C{::}). Every answer leaves from the address its request was
sent to; traversal, malformed and write requests get the same refusals in both
families; the options OVMF asks for over IPv6 work; the chain script names pxe-pilot's
HTTP side by a URL the client can use, an IPv6 address in brackets.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from pxepilot.address import HTTPAddress
from pxepilot.boot.tftp import BootFiles, tftp_base_url
from pxepilot.events import EventBus, TransferFinished
from pxepilot.tftp.files import TFTPRoot
from pxepilot.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OptionAck,
    WriteRequest,
    decode,
    encode,
)
from pxepilot.tftp.server import TFTPServer, reactor_port_opener
from pxepilot.tftp.service import TFTPService
from tests.tftp_client import download, request, wait_for_silence

# How the server is bound, and the address a client sends to.
FAMILIES = [
    pytest.param(("127.0.0.1", "127.0.0.1"), id="ipv4"),
    pytest.param(("::1", "::1"), id="ipv6"),
    pytest.param(("::", "::1"), id="dual-stack-ipv6"),
    pytest.param(("::", "127.0.0.1"), id="dual-stack-ipv4"),
]

FILE = bytes(range(256)) * 40  # 10 KiB: several windows of 1228-byte blocks


class Finished:
    """
    Keeps the transfers the server publishes as finished.
    """

    def __init__(self) -> None:
        self.events: list[TransferFinished] = []

    def observe(self, event: object) -> None:
        if isinstance(event, TransferFinished):
            self.events.append(event)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "tftp"
    root.mkdir()
    (root / "file.bin").write_bytes(FILE)
    (root / "ipxe.efi").write_bytes(b"MZ" + b"\0" * 62 + b"iPXE" * 100)
    (tmp_path / "secret").write_bytes(b"s")
    return root


@pytest_twisted.async_yield_fixture(params=FAMILIES)
async def served(
    request: pytest.FixtureRequest, root: Path
) -> AsyncIterator[tuple[tuple[str, int], Finished]]:
    from twisted.internet import reactor

    interface, client = request.param
    finished = Finished()
    events = EventBus()
    events.subscribe(finished)  # type: ignore[arg-type]
    server = TFTPServer(
        files=BootFiles(TFTPRoot(root), tftp_base_url(HTTPAddress(None, 8080, interface))),
        clock=reactor,
        open_port=reactor_port_opener(reactor),
        interface=interface,
        events=events,
    )
    service = TFTPService(reactor, server, 0, interface)
    service.startService()
    try:
        yield (client, service.address().port), finished
    finally:
        await service.stopService()


def first_reply(server: tuple[str, int], name: bytes | str, **options: str) -> tuple[object, str]:
    """
    The first reply to a read request, and the address it came from.
    """
    sock, reply, source = request(server, name, options)
    sock.close()
    return reply, source[0]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (b"../secret", ErrorCode.ACCESS_VIOLATION),
        (b"..\\secret", ErrorCode.ACCESS_VIOLATION),
        (b"/../../secret", ErrorCode.ACCESS_VIOLATION),
        (b"missing.efi", ErrorCode.FILE_NOT_FOUND),
        (b"a" * 300, ErrorCode.ILLEGAL_OPERATION),
    ],
)
@pytest_twisted.ensureDeferred
async def test_refusals_come_from_the_requested_address(
    served: tuple[tuple[str, int], Finished], name: bytes, code: ErrorCode
) -> None:
    """
    Traversal, missing files and absurd names are refused with the same codes in both
    families, from the address the request was sent to.
    """
    server, _ = served
    reply, source = await deferToThread(first_reply, server, name)
    assert isinstance(reply, Error)
    assert reply.code == code
    assert source == server[0]


def send_raw(
    server: tuple[str, int], datagram: bytes, timeout: float = 2.0
) -> tuple[list[bytes], str | None]:
    """
    Send one datagram; what came back (within C{timeout}, then while more arrives),
    and from where.
    """
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram, server)
        sock.settimeout(timeout)
        try:
            first, source = sock.recvfrom(70000)
        except TimeoutError:
            return [], None
        return [first, *wait_for_silence(sock, 0.2)], source[0]


@pytest.mark.parametrize(
    ("datagram", "code"),
    [
        (b"\x00\x01file.bin", ErrorCode.ILLEGAL_OPERATION),  # no terminator, no mode
        (b"\x00\x01file.bin\x00bogus\x00", ErrorCode.ILLEGAL_OPERATION),
        (encode(WriteRequest(b"new.bin", "octet", ())), ErrorCode.ACCESS_VIOLATION),
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_and_write_requests(
    served: tuple[tuple[str, int], Finished], datagram: bytes, code: ErrorCode
) -> None:
    """
    A malformed read request and a write request each get one ERROR, in both families,
    from the requested address; stray packets on the request port get nothing.
    """
    server, _ = served
    replies, source = await deferToThread(send_raw, server, datagram)
    [reply] = [decode(datagram) for datagram in replies]
    assert isinstance(reply, Error)
    assert reply.code == code
    assert source == server[0]
    stray, _ = await deferToThread(send_raw, server, b"\x00\x04\x00\x01", 0.3)
    assert stray == []


@pytest.mark.parametrize(("blksize", "windowsize"), [(1228, 4), (1468, 1), (None, None)])
@pytest_twisted.ensureDeferred
async def test_downloads(
    served: tuple[tuple[str, int], Finished], blksize: int | None, windowsize: int | None
) -> None:
    """
    A download with OVMF's IPv6 options (blksize 1228, windowsize 4), iPXE's IPv4 ones
    and none, in both families; the finished transfer names the client in its plain
    form (IPv4 as IPv4, also on the dual-stack port).
    """
    server, finished = served
    data = await deferToThread(download, server, "file.bin", blksize, windowsize)
    assert data == FILE
    for _ in range(100):
        if finished.events:
            break
        await deferToThread(lambda: None)
    [event] = finished.events
    assert (event.client, event.outcome, event.bytes) == (server[0], "complete", len(FILE))


def chain_script_of(server: tuple[str, int]) -> tuple[str, str]:
    """
    What iPXE gets for C{ipxe.efi} (its requests ask for C{blksize}, then C{tsize}),
    and the address it came from.
    """
    sock, reply, source = request(server, "ipxe.efi", {"blksize": "1432", "tsize": "0"})
    with sock:
        assert isinstance(reply, OptionAck), reply
        sock.sendto(encode(Ack(0)), source)
        data = decode(sock.recvfrom(2048)[0])
        assert isinstance(data, Data), data
        sock.sendto(encode(Ack(1)), source)
    return data.payload.decode(), source[0]


@pytest_twisted.ensureDeferred
async def test_the_chain_script_names_the_requested_address(
    served: tuple[tuple[str, int], Finished],
) -> None:
    """
    iPXE asking for itself gets the chain script, to the address its request was sent
    to: an IPv6 one in brackets.
    """
    server, _ = served
    script, source = await deferToThread(chain_script_of, server)
    host = f"[{server[0]}]" if ":" in server[0] else server[0]
    assert f"chain --autofree http://{host}:8080/boot.ipxe || goto failed" in script
    assert source == server[0]
