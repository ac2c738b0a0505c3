"""
The combined initrd of a C{prepare-iso --pxe} directory as a response body: the
stretches of L{pxepilot.boot.pxedir.combined_layout} that a request's range covers,
sent from C{initrd.img} and the ISO as the client takes them (by the kernel over plain
TCP, as any asset), never copied to disk or held in memory whole.
"""

from __future__ import annotations

import os

from twisted.web.server import Request

from pxepilot.boot.pxedir import COMBINED, INITRD, ISO_MEMBER, combined_layout, pieces_in
from pxepilot.http.sending import BodyEnded, BodySender, Turns


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
        turns: Turns,
        ended: BodyEnded | None,
    ) -> None:
        BodySender(
            request, self._files, pieces_in(self._layout, first, length), turns, ended
        ).start()
