"""
A small, strict TFTP client for tests and benchmarks: it checks every reply against the
RFCs while downloading, and can ask for any option.
"""

from __future__ import annotations

import socket
import time

from pxepilot.tftp.packets import (
    Ack,
    Data,
    Error,
    OptionAck,
    Packet,
    ReadRequest,
    RequestOption,
    decode,
    encode,
)


class TFTPFailure(Exception):
    pass


def request(
    server: tuple[str, int],
    name: str | bytes,
    options: dict[str, str] | None = None,
    mode: str = "octet",
) -> tuple[socket.socket, Packet, tuple[str, int]]:
    """
    Send a read request from a fresh socket; the socket, the first reply and where it
    came from.
    """
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(5)
    raw = name.encode() if isinstance(name, str) else name
    opts = tuple(RequestOption(k, v.encode()) for k, v in (options or {}).items())
    sock.sendto(encode(ReadRequest(raw, mode, opts)), server)
    datagram, source = sock.recvfrom(70000)
    return sock, decode(datagram), source[:2]


def download(
    server: tuple[str, int],
    name: str,
    blksize: int | None = None,
    windowsize: int | None = None,
    tsize: bool = True,
) -> bytes:
    """
    Download C{name}, acknowledging like an RFC 7440 receiver: the last block of each
    window, or the last in-order block after a gap.
    """
    options: dict[str, str] = {}
    if tsize:
        options["tsize"] = "0"
    if blksize:
        options["blksize"] = str(blksize)
    if windowsize:
        options["windowsize"] = str(windowsize)
    sock, reply, peer = request(server, name, options)
    granted_blksize, window, size = 512, 1, None
    data = bytearray()
    expected = 1
    try:
        if isinstance(reply, OptionAck):
            granted = dict(reply.options)
            if not set(granted) <= set(options):
                raise TFTPFailure(f"unrequested options in OACK: {granted}")
            granted_blksize = int(granted.get("blksize", 512))
            window = int(granted.get("windowsize", 1))
            size = int(granted["tsize"]) if "tsize" in granted else None
            sock.sendto(encode(Ack(0)), peer)
            datagram, source = sock.recvfrom(70000)
            reply = decode(datagram)
        in_window = 0
        while True:
            if isinstance(reply, Error):
                raise TFTPFailure(f"error {reply.code}: {reply.message}")
            if not isinstance(reply, Data):
                raise TFTPFailure(f"unexpected {reply}")
            if reply.block == expected & 0xFFFF:
                if len(reply.payload) > granted_blksize:
                    raise TFTPFailure("block larger than blksize")
                data += reply.payload
                expected += 1
                in_window += 1
                last = len(reply.payload) < granted_blksize
                if last or in_window == window:
                    sock.sendto(encode(Ack((expected - 1) & 0xFFFF)), peer)
                    in_window = 0
                if last:
                    break
            else:
                sock.sendto(encode(Ack((expected - 1) & 0xFFFF)), peer)
                in_window = 0
            datagram, source = sock.recvfrom(70000)
            if source[:2] != peer:
                raise TFTPFailure(f"reply from {source}, transfer is with {peer}")
            reply = decode(datagram)
    finally:
        sock.close()
    if size is not None and size != len(data):
        raise TFTPFailure(f"tsize {size} but {len(data)} bytes")
    return bytes(data)


def wait_for_silence(sock: socket.socket, seconds: float) -> list[bytes]:
    """
    Everything that arrives on C{sock} within C{seconds}.
    """
    received = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            received.append(sock.recvfrom(70000)[0])
        except TimeoutError:
            break
    return received
