"""
Sending response bodies made of open files and literal bytes (an asset, or the combined
initrd composed from two files) as the client takes them, with the reactor shared fairly
among all bodies being sent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web.server import Request
from zope.interface import implementer

from pxepilot.boot.pxedir import Piece
from pxepilot.http.tcp_access import PlainTCPSocket
from pxepilot.logs import logger

log = logger(__name__)

# How much all bodies together send in one turn of the reactor before other work (the
# answer endpoint above all) gets its turn: about 3 ms of sendfile on loopback. Each body
# gets an equal share, never less than MIN_SHARE_BYTES, so one client still moves its
# file in few large system calls while twenty clients keep the reactor responsive.
ROUND_BYTES = 8 << 20
MIN_SHARE_BYTES = 256 << 10
# For transports without a socket (TLS): the size of each read. The transport pauses
# the body once its buffer is full, so one body never holds much more than this.
READ_BYTES = 1 << 20

# Told when a body ends: the bytes sent, and whether that was all of them.
BodyEnded = Callable[[int, bool], None]

# The name of a plain asset's one file among a body's files.
ASSET = ""


def _nothing() -> None:
    pass


class Turns:
    """
    Shares each turn of the reactor among the bodies being sent: the more are sent at
    once, the less each sends before it lets the reactor go round.
    """

    def __init__(self, round_bytes: int = ROUND_BYTES, min_share: int = MIN_SHARE_BYTES) -> None:
        self._round_bytes = round_bytes
        self._min_share = min_share
        self.active = 0
        # Called before each body's turn: what cannot wait for a whole round of bodies
        # is served first. The blocks of lock-step TFTP transfers are: each waits for
        # the one before it, so a round's wait would be paid by every block. (Calling it
        # between smaller sendfile calls instead made downloads in a storm of 20
        # machines twice as slow, for no measurable gain to TFTP.)
        self.urgent: Callable[[], object] = _nothing

    def share(self) -> int:
        """
        How many bytes one body may send before it yields.
        """
        return max(self._min_share, self._round_bytes // max(1, self.active))


@implementer(IPushProducer)
class BodySender:
    """
    Sends C{pieces} in order as a response body: stretches of C{files} (name to open
    descriptor) and literal bytes. Closes the files when done.

    Over a plain TCP connection the body goes to the socket directly once the
    transport's own buffer (the response headers) has gone out: the files' stretches
    copied by the kernel (C{os.sendfile}), literal bytes sent as they are, as much as
    the socket takes; then it waits until the socket is writable again, through the
    transport, which resumes its paused producer when it is. What that takes of the
    transport's internals is all in L{PlainTCPSocket}. Elsewhere (TLS) it reads and
    writes, paused and resumed by the transport as any push producer.

    While the kernel sends, the socket is corked (C{TCP_CORK}, as nginx's C{tcp_nopush}):
    only full segments go out, and the last one when the body is complete. Without it,
    the end of every C{sendfile} call leaves as a short pushed segment, and one client's
    download runs about a fifth slower on loopback.
    """

    def __init__(
        self,
        request: Request,
        files: Mapping[str, int],
        pieces: list[Piece],
        turns: Turns | None = None,
        ended: BodyEnded | None = None,
    ) -> None:
        self._request = request
        self._files = dict(files)
        self._pieces = list(pieces)
        self._turns = turns if turns is not None else Turns()
        self._ended = ended
        self._length = sum(piece.length for piece in self._pieces)
        self._sent = 0
        self._paused = False
        self._done = False
        channel = getattr(request, "channel", None)
        self._transport: Any = getattr(channel, "transport", None)
        self._tcp = PlainTCPSocket.of(self._transport)

    def start(self) -> None:
        self._turns.active += 1
        self._cork(True)
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addBoth(lambda _: self._close())
        self._request.write(b"")  # the headers
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._done:
            return
        try:
            if self._tcp is not None:
                self._send_directly(self._tcp)
            else:
                self._write_chunks()
        except OSError as e:
            log.info("sending an asset failed: {error}", error=e.strerror or str(e))
            self._fail()

    def stopProducing(self) -> None:
        self._close()

    def _wait_writable(self, tcp: PlainTCPSocket) -> None:
        self._paused = True
        tcp.wait_until_writable()

    def _send_directly(self, tcp: PlainTCPSocket) -> None:
        if tcp.has_buffered_data():
            self._wait_writable(tcp)
            return
        turns = self._turns
        turns.urgent()
        share = turns.share()
        sent_this_turn = 0
        out = tcp.socket
        while self._pieces:
            piece = self._pieces[0]
            source = piece.source
            try:
                if isinstance(source, bytes):
                    sent = out.send(memoryview(source)[piece.start : piece.start + piece.length])
                else:
                    wanted = min(piece.length, share)
                    sent = os.sendfile(out.fileno(), self._files[source], piece.start, wanted)
            except BlockingIOError:
                sent = 0
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET):
                    self._close()
                    return
                raise
            if sent == 0:
                if not isinstance(source, bytes):
                    self._check_size(source, piece)
                self._wait_writable(tcp)
                return
            self._moved(sent)
            self._account(sent)
            sent_this_turn += sent
            if sent_this_turn >= share and self._pieces:
                # Let the reactor serve others (the answer endpoint above all).
                self._wait_writable(tcp)
                return
        self._finish()

    def _check_size(self, name: str, piece: Piece) -> None:
        # sendfile sends nothing at the end of the file, as when the socket is full.
        if os.fstat(self._files[name]).st_size < piece.start + 1:
            raise OSError(errno.EIO, f"{_file_named(name)} shrank while being sent")

    def _write_chunks(self) -> None:
        while self._pieces and not self._paused and not self._done:
            piece = self._pieces[0]
            source = piece.source
            if isinstance(source, bytes):
                data = source[piece.start : piece.start + piece.length]
            else:
                wanted = min(READ_BYTES, piece.length)
                data = os.pread(self._files[source], wanted, piece.start)
                if not data:
                    raise OSError(errno.EIO, f"{_file_named(source)} shrank while being sent")
            self._moved(len(data))
            self._request.write(data)
        if not self._pieces and not self._done:
            self._finish()

    def _moved(self, count: int) -> None:
        piece = self._pieces[0]
        if count >= piece.length:
            self._pieces.pop(0)
        else:
            self._pieces[0] = Piece(piece.source, piece.start + count, piece.length - count)
        self._sent += count

    def _account(self, sent: int) -> None:
        # Bytes that bypassed request.write, for the access log.
        request: Any = self._request
        if hasattr(request, "sentLength"):
            request.sentLength += sent

    def _finish(self) -> None:
        self._close()
        self._request.unregisterProducer()
        self._request.finish()

    def _fail(self) -> None:
        self._close()
        self._request.unregisterProducer()
        if self._transport is not None:
            self._transport.loseConnection()

    def _cork(self, corked: bool) -> None:
        if self._tcp is None or _TCP_CORK is None:
            return
        # The connection may be gone already; corking is only an optimisation.
        with contextlib.suppress(OSError):
            self._tcp.socket.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, int(corked))

    def _close(self) -> None:
        if not self._done:
            self._done = True
            self._turns.active -= 1
            # Uncorking sends what is left at once, and leaves a kept-alive connection's
            # next response as it found it.
            self._cork(False)
            for fd in self._files.values():
                os.close(fd)
            if self._ended is not None:
                self._ended(self._sent, self._sent == self._length)


def _file_named(name: str) -> str:
    return "the file" if name == ASSET else name


_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)
