"""
The HTTP site: request bodies are bounded, access is logged as structured events.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from pxepilot.logs import logger

log = logger(__name__)

MAX_BODY_BYTES = 1 << 20

# Long enough for a slow client's request line and headers, short enough that idle
# connections do not pile up. Twisted suspends it while a response is being written, so
# a long download is not cut off.
IDLE_TIMEOUT = 60


class BoundedRequest(Request):
    """
    A request whose body may not exceed L{MAX_BODY_BYTES}.

    An oversized body, announced by C{Content-Length} or found while reading a chunked
    one, is answered with 413 and the connection closed at once; the body is never
    buffered.
    """

    maxBodyBytes = MAX_BODY_BYTES
    _bodyBytes = 0
    _rejected = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.maxBodyBytes:
            self._reject()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._rejected:
            return
        self._bodyBytes += len(data)
        if self._bodyBytes > self.maxBodyBytes:
            self._reject()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._rejected:
            return
        super().requestReceived(command, path, version)

    def getRequestHostname(self) -> bytes:
        """
        The host the client named, or the address it connected to when the name could
        not be a host name: the router would otherwise fail every route with it.
        """
        name: bytes = super().getRequestHostname()
        if _plausible_host_name(name):
            return name
        return str(getattr(self.getHost(), "host", "localhost")).encode("ascii")

    def _reject(self) -> None:
        self._rejected = True
        self.content = BytesIO()
        body = json.dumps(
            {"error": f"request body is larger than {self.maxBodyBytes} bytes"}
        ).encode()
        channel = self.channel
        transport = channel.transport if channel is not None else None
        if transport is None:
            return
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        transport.loseConnection()
        peer = transport.getPeer()
        log.info(
            "{method} {path} from {client}: 413, request body too large",
            method=_text(getattr(channel, "_command", b"?")),
            path=_text(getattr(channel, "_path", b"?")),
            client=getattr(peer, "host", "?"),
        )


class PxePilotSite(Site):
    """
    The site pxe-pilot listens with: bounded request bodies, no form parsing, an idle
    timeout, and one structured debug event per request instead of a text access log.
    """

    requestFactory = BoundedRequest
    noisy = False

    def __init__(self, resource: IResource, **kwargs: Any) -> None:
        super().__init__(resource, parsePOSTFormSubmission=False, timeout=IDLE_TIMEOUT, **kwargs)

    def log(self, request: http.Request) -> None:
        log.debug(
            "{method} {path} from {client}: {code} ({length} bytes)",
            method=_text(request.method),
            path=_text(request.uri),
            client=getattr(request.getClientAddress(), "host", "?"),
            code=request.code,
            length=getattr(request, "sentLength", 0),
            user_agent=_text(request.getHeader(b"user-agent") or b""),
        )


def _plausible_host_name(name: bytes) -> bool:
    """
    Whether a host name or address literal can be a real one (ASCII, labels of 1-63
    characters, 253 at most in all).
    """
    if name.startswith(b"[") and name.endswith(b"]"):
        return all(c in b"0123456789abcdefABCDEF:." for c in name[1:-1])
    if not name or len(name) > 253 or not name.isascii():
        return False
    labels = name.rstrip(b".").split(b".")
    return all(0 < len(label) <= 63 for label in labels)


def _text(value: bytes) -> str:
    return value.decode("latin-1")[:200]
