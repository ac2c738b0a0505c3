"""
The combined initrd of a C{prepare-iso --pxe} directory as a response body: the
stretches of L{pxepilot.boot.pxedir.combined_layout} that a request's range covers,
read from C{initrd.img} and the ISO as the transport takes them, never copied to disk
or held in memory whole.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.web.server import Request
from zope.interface import implementer

from pxepilot.boot.pxedir import COMBINED, INITRD, ISO_MEMBER, Piece, combined_layout, pieces_in
from pxepilot.logs import logger

log = logger(__name__)

# The size of each read: the transport pauses this producer once its buffer is full,
# so one body never holds more than about this much of the ISO in memory.
READ_BYTES = 1 << 20

BodyEnded = Callable[[int, bool], None]


class _Turns(Protocol):
    active: int


class ComposedBody:
    """
    C{initrd.img} and the ISO, composed into one initrd.

    @raise ValueError: for an ISO of 4 GiB or more, which a cpio member cannot hold.
    """

    name = COMBINED

    def __init__(
        self,
        initrd_fd: int,
        initrd: os.stat_result,
        iso_fd: int,
        iso: os.stat_result,
    ) -> None:
        self._layout = combined_layout(initrd.st_size, iso.st_size)
        self._files = {INITRD: initrd_fd, ISO_MEMBER: iso_fd}
        self.size = self._layout[-1].start + self._layout[-1].length
        self.mtime = max(initrd.st_mtime, iso.st_mtime)
        # Changes whenever either file does, as a file's own tag would.
        self.etag = (
            '"'
            + "+".join(f"{s.st_ino:x}-{s.st_size:x}-{s.st_mtime_ns:x}" for s in (initrd, iso))
            + '"'
        )

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)

    def send(
        self,
        request: Request,
        first: int,
        length: int,
        turns: _Turns,
        ended: BodyEnded | None,
    ) -> None:
        pieces = pieces_in(self._layout, first, length)
        ComposedSender(request, self._files, pieces, turns, ended).start()


@implementer(IPushProducer)
class ComposedSender:
    """
    Writes the pieces in order, reading the files' stretches a chunk at a time; the
    transport pauses and resumes it as its buffer fills and drains. Closes the files
    when done.
    """

    def __init__(
        self,
        request: Request,
        files: dict[str, int],
        pieces: list[Piece],
        turns: _Turns,
        ended: BodyEnded | None = None,
    ) -> None:
        self._request = request
        self._files = files
        self._pieces = pieces
        self._turns = turns
        self._ended = ended
        self._length = sum(p.length for p in pieces)
        self._sent = 0
        self._paused = False
        self._done = False
        channel = getattr(request, "channel", None)
        self._transport: Any = getattr(channel, "transport", None)

    def start(self) -> None:
        self._turns.active += 1
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
            self._write()
        except OSError as e:
            log.info("sending a combined initrd failed: {error}", error=e.strerror or str(e))
            self._fail()

    def stopProducing(self) -> None:
        self._close()

    def _write(self) -> None:
        while self._pieces and not self._paused and not self._done:
            piece = self._pieces[0]
            if isinstance(piece.source, bytes):
                data = piece.source
            else:
                wanted = min(READ_BYTES, piece.length)
                data = os.pread(self._files[piece.source], wanted, piece.start)
                if not data:
                    raise OSError(errno.EIO, f"{piece.source} shrank while being sent")
            if len(data) >= piece.length:
                self._pieces.pop(0)
            else:
                self._pieces[0] = Piece(
                    piece.source, piece.start + len(data), piece.length - len(data)
                )
            self._sent += len(data)
            self._request.write(data)
        if not self._pieces and not self._done:
            self._close()
            self._request.unregisterProducer()
            self._request.finish()

    def _fail(self) -> None:
        self._close()
        self._request.unregisterProducer()
        if self._transport is not None:
            self._transport.loseConnection()

    def _close(self) -> None:
        if not self._done:
            self._done = True
            self._turns.active -= 1
            for fd in self._files.values():
                os.close(fd)
            if self._ended is not None:
                self._ended(self._sent, self._sent == self._length)
