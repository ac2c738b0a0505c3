"""
Serving the assets directory: what a static web server does (Content-Length, HEAD, one
byte range, ETag and Last-Modified with conditional requests, content types, no listings,
nothing outside the directory, no hidden files), with the body sent by the kernel
(C{sendfile}) so that a boot storm of 1.5 GB initrds costs neither memory nor much CPU.
One name more is served, in directories C{prepare-iso --pxe} made: their combined initrd
(L{pxepilot.http.composed}).
"""

from __future__ import annotations

import email.utils
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from pxepilot.boot.catalogue import METADATA
from pxepilot.boot.pxedir import COMBINED, INITRD, Piece, iso_name
from pxepilot.http.composed import ComposedBody
from pxepilot.http.sending import ASSET, BodyEnded, BodySender, Turns

CONTENT_TYPES = {
    ".json": "application/json",
    ".ipxe": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".toml": "application/toml; charset=utf-8",
    ".iso": "application/x-iso9660-image",
    ".efi": "application/efi",
    ".html": "text/html; charset=utf-8",
}
DEFAULT_TYPE = "application/octet-stream"

_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)
_MAX_DIGITS = 1000


def _content_type(name: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), DEFAULT_TYPE)


def _etag(status: os.stat_result) -> str:
    return f'"{status.st_ino:x}-{status.st_size:x}-{status.st_mtime_ns:x}"'


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """
    The one byte range a C{Range} header asks for, as (first, last inclusive).

    @return: the range; L{None} when the header is to be ignored (malformed, several
        ranges, other units: the whole file is sent); C{False} when it cannot be
        satisfied (416).
    """
    found = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if found is None:
        return None
    first_text, last_text = found.groups()
    if not first_text and not last_text:
        return None
    if len(first_text) > _MAX_DIGITS or len(last_text) > _MAX_DIGITS:
        return None  # int() refuses more than 4300 digits: malformed all the same
    if not first_text:
        suffix = int(last_text)
        if suffix == 0:
            return False
        return (max(0, size - suffix), size - 1) if size else False
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        return False
    return first, min(last, size - 1)


# Told when a body starts (the request, the file's path below the root, the bytes to
# send); returns what to tell when it ends (the bytes sent, whether that was all).
DownloadWatcher = Callable[[IRequest, str, int], BodyEnded]


class AssetFiles(Resource):
    """
    The files under C{root}, looked up anew on each request.

    @param turns: Shared by every request of one server, so that all bodies being sent
        share the reactor fairly.
    """

    isLeaf = True

    def __init__(
        self, root: Path, turns: Turns | None = None, watcher: DownloadWatcher | None = None
    ) -> None:
        super().__init__()
        self._root = root
        self._turns = turns if turns is not None else Turns()
        self._watcher = watcher

    def _resolve(self, segments: list[bytes]) -> str | None:
        """
        The path below the root that C{segments} name, when they may be served.
        """
        names = []
        for segment in segments:
            try:
                name = segment.decode("utf-8")
            except UnicodeDecodeError:
                return None
            if not name or name.startswith(".") or "\0" in name or "/" in name:
                return None
            names.append(name)
        if not names:
            return None
        root = os.path.realpath(self._root)
        path = os.path.realpath(os.path.join(root, *names))
        if os.path.commonpath([root, path]) != root:
            return None
        # A link may not lead into what is hidden either (the builder's work directories).
        if any(part.startswith(".") for part in Path(os.path.relpath(path, root)).parts):
            return None
        return path

    def _open(self, segments: list[bytes]) -> tuple[int, os.stat_result, str] | None:
        path = self._resolve(segments)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            return None
        return fd, status, segments[-1].decode("utf-8")

    def _composed(self, segments: list[bytes]) -> ComposedBody | None:
        """
        The combined initrd of a C{prepare-iso --pxe} directory, composed from its two
        files, each opened as any file here would be.
        """
        if len(segments) < 2 or segments[-1] != COMBINED.encode():
            return None
        parent = segments[:-1]
        directory = self._resolve(parent)
        if directory is None or os.path.exists(os.path.join(directory, METADATA)):
            return None
        iso = iso_name(Path(directory))
        if iso is None:
            return None
        initrd = self._open([*parent, INITRD.encode()])
        if initrd is None:
            return None
        image = self._open([*parent, iso.encode()])
        if image is None:
            os.close(initrd[0])
            return None
        try:
            return ComposedBody(initrd[0], initrd[1], image[0], image[1])
        except ValueError:
            os.close(initrd[0])
            os.close(image[0])
            return None

    def render_HEAD(self, request: IRequest) -> Any:
        return self.render_GET(request)

    def render_GET(self, request: IRequest) -> Any:
        postpath: list[bytes] = getattr(request, "postpath", [])
        opened = self._open(postpath)
        body: FileBody | ComposedBody | None
        body = FileBody(*opened) if opened is not None else self._composed(postpath)
        if body is None:
            request.setResponseCode(http.NOT_FOUND)
            request.setHeader(b"content-type", b"application/json")
            return b'{"error": "not found"}\n'
        etag = body.etag
        modified = email.utils.formatdate(body.mtime, usegmt=True)
        request.setHeader(b"content-type", _content_type(body.name).encode())
        request.setHeader(b"etag", etag.encode())
        request.setHeader(b"last-modified", modified.encode())
        request.setHeader(b"accept-ranges", b"bytes")
        if _not_modified(request, etag, body.mtime):
            body.close()
            request.setResponseCode(http.NOT_MODIFIED)
            # A 304 may only announce the file's own length (RFC 9110, 8.6); returning
            # an empty body would make Twisted announce 0.
            request.setHeader(b"content-length", str(body.size).encode())
            request.write(b"")
            request.finish()
            return NOT_DONE_YET
        size = body.size
        first, length = 0, size
        range_header = request.getHeader(b"range")
        if_range = request.getHeader(b"if-range")
        if range_header is not None and (
            if_range is None or if_range.decode("latin-1") in (etag, modified)
        ):
            wanted = parse_range(range_header.decode("latin-1"), size)
            if wanted is False:
                body.close()
                request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
                request.setHeader(b"content-range", f"bytes */{size}".encode())
                return b""
            if isinstance(wanted, tuple):
                first, last = wanted
                length = last - first + 1
                request.setResponseCode(http.PARTIAL_CONTENT)
                request.setHeader(b"content-range", f"bytes {first}-{last}/{size}".encode())
        request.setHeader(b"content-length", str(length).encode())
        if request.method == b"HEAD" or length == 0:
            body.close()
            return b""
        ended = None
        if self._watcher is not None:
            path = "/".join(segment.decode("utf-8") for segment in postpath)
            ended = self._watcher(request, path, length)
        body.send(cast(Request, request), first, length, self._turns, ended)
        return NOT_DONE_YET


class FileBody:
    """
    A regular file as a response body.
    """

    def __init__(self, fd: int, status: os.stat_result, name: str) -> None:
        self._fd = fd
        self.name = name
        self.size = status.st_size
        self.mtime = status.st_mtime
        self.etag = _etag(status)

    def close(self) -> None:
        os.close(self._fd)

    def send(
        self,
        request: Request,
        first: int,
        length: int,
        turns: Turns,
        ended: BodyEnded | None,
    ) -> None:
        BodySender(request, {ASSET: self._fd}, [Piece(ASSET, first, length)], turns, ended).start()


def _not_modified(request: IRequest, etag: str, mtime: float) -> bool:
    none_match = request.getHeader(b"if-none-match")
    if none_match is not None:
        tags = [t.strip() for t in none_match.decode("latin-1").split(",")]
        return "*" in tags or etag in tags or f"W/{etag}" in tags
    since = request.getHeader(b"if-modified-since")
    if since is not None:
        try:
            parsed = email.utils.parsedate_to_datetime(since.decode("latin-1"))
        except (TypeError, ValueError):
            return False
        return int(mtime) <= parsed.timestamp()
    return False
