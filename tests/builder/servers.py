"""
An HTTP server of ISOs for builder tests: Range requests, SHA256SUMS, and connections
that drop part-way.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request


class IsoServer(Resource):
    """
    Serves C{files} by name. Records every request's Range header; the first
    C{drops} responses of a file stop after C{drop_after} bytes and lose the connection.

    @ivar ignore_range: Answer Range requests with the whole file (200), as some
        servers do.
    """

    isLeaf = True

    def __init__(
        self,
        files: dict[str, bytes],
        drops: int = 0,
        drop_after: int = 0,
        ignore_range: bool = False,
        status: int = 200,
    ) -> None:
        super().__init__()
        self.files = files
        self.drops = drops
        self.drop_after = drop_after
        self.ignore_range = ignore_range
        self.status = status
        self.ranges: list[str | None] = []

    def render_GET(self, request: Request) -> Any:
        name = request.path.decode().rsplit("/", 1)[-1]
        data = self.files.get(name)
        if data is None:
            request.setResponseCode(404)
            return b"not found"
        if self.status != 200 and name != "SHA256SUMS":
            request.setResponseCode(self.status)
            return b"server error"
        header = request.getHeader(b"range")
        text = header.decode() if header is not None else None
        if name != "SHA256SUMS":
            self.ranges.append(text)
        start = 0
        found = re.fullmatch(r"bytes=(\d+)-", text or "")
        if found and not self.ignore_range:
            start = int(found.group(1))
            if start >= len(data):
                request.setResponseCode(416)
                return b""
            request.setResponseCode(206)
            request.setHeader(b"content-range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        request.setHeader(b"content-length", str(len(body)).encode())
        if name != "SHA256SUMS" and self.drops > 0 and self.drop_after < len(body):
            self.drops -= 1
            request.write(body[: self.drop_after])
            # Abort, not close: a closing channel waits for the response to end. What
            # was written goes out first.
            transport: Any = request.channel.transport
            transport.unregisterProducer()
            transport.loseConnection()
            return NOT_DONE_YET
        return body
