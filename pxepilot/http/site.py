"""
The HTTP site: request bodies are bounded, requests and responses have deadlines (see
L{pxepilot.http.limits}), access is logged as structured events with secrets left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any
from urllib.parse import unquote_plus

from attrs import frozen
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from pxepilot.address import plain_address, url_host
from pxepilot.config import IPNetwork
from pxepilot.http.limits import (
    BODY_TIMED_OUT,
    HEAD_TIMED_OUT,
    WRITE_TIMED_OUT,
    ConnectionGate,
    HTTPLimits,
)
from pxepilot.http.tcp_access import drop_now, unsent_bytes
from pxepilot.logs import logger

log = logger(__name__)

MAX_BODY_BYTES = 1 << 20

# How long a kept-alive connection may sit idle between two requests, and the time a
# client has to begin one. Any byte resets it, so it is no deadline: the head and body
# deadlines are. Twisted suspends it while a response is being written, so a long
# download is not cut off.
IDLE_TIMEOUT = 60
# After a 408, how long the connection may take to send it before it is dropped.
ABORT_GRACE = 5.0

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


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
        local = plain_address(str(getattr(self.getHost(), "host", "localhost")))
        return url_host(local).encode("ascii")

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
            path=_text(redact_query(getattr(channel, "_path", b"?"))),
            client=plain_address(str(getattr(peer, "host", "?"))),
        )


@frozen
class _Progress:
    """
    What a response's connection looked like at one check of the write timeout.
    """

    waiting: bool
    resumes: int
    written: int
    unsent: int | None


class LimitedChannel(http.HTTPChannel):
    """
    An HTTP connection held to its site's L{HTTPLimits} and admitted by its site's
    L{ConnectionGate}.

    A request's line and headers must arrive within C{head_timeout} of the connection
    (or of the first byte after the previous response), its body within its body
    deadline: bytes trickled in do not extend either, as they do the idle timeout.
    Either missed gets a 408 and the connection closed. While a response is sent, a
    client that takes none of what waits for it for C{write_timeout} (checked once a
    period) has its connection dropped; one that reads, however slowly, keeps it.
    """

    site: PxePilotSite
    _admitted = False
    _closing = False
    _answering = False
    _deadline: IDelayedCall | None = None
    _watchdog: IDelayedCall | None = None
    _abort: IDelayedCall | None = None
    _progress: _Progress | None = None
    _resumes = 0
    _written = 0
    _paused_by_transport = False
    _producing = False
    _host = "?"
    _local: IAddress | None = None

    @property
    def _connection(self) -> Any:
        # ITransport lacks abortConnection, which every stream transport has.
        return self.transport

    def connectionMade(self) -> None:
        self._gate = self.site.gate
        self._limits = self._gate.limits
        self._clock = self.site.reactor
        self._host = plain_address(str(getattr(self._connection.getPeer(), "host", "?")))
        if not self._gate.enter(self, self._host):
            # Before reading anything: the request is never parsed.
            self._closing = True
            drop_now(self._connection)
            return
        self._admitted = True
        super().connectionMade()
        self._arm(self._limits.head_timeout, HEAD_TIMED_OUT)

    def getHost(self) -> IAddress:
        # Twisted's Request asks for it once per request, and each time the socket is
        # asked again (a system call): a connection's own address does not change.
        if self._local is None:
            self._local = super().getHost()
        return self._local

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._answering and not self._closing:
            # The first byte of the next request on a kept-alive connection.
            self._arm(self._limits.head_timeout, HEAD_TIMED_OUT)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._disarm()
        super().allHeadersReceived()
        if self.length != 0 and not self._closing:
            largest = getattr(self.requestFactory, "maxBodyBytes", MAX_BODY_BYTES)
            self._arm(self._limits.body_deadline(self.length, largest), BODY_TIMED_OUT)

    def allContentReceived(self) -> None:
        self._disarm()
        self._answering = True
        self._gate.answering(self)
        self._watch_writing()
        urgent = getattr(self.site, "urgent", None)
        if urgent is not None:
            urgent()
        super().allContentReceived()

    def requestDone(self, request: http.Request) -> None:
        # Before Twisted goes on to a pipelined request, which may be answered at once.
        self._answering = False
        self._stop_watching()
        if self.persistent and not self._closing:
            self._gate.waiting(self)
        super().requestDone(request)

    def write(self, data: bytes) -> None:
        self._written += len(data)
        super().write(data)

    def writeSequence(self, iovec: Sequence[bytes]) -> None:
        self._written += sum(len(data) for data in iovec)
        super().writeSequence(iovec)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._producing = True
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._producing = False
        super().unregisterProducer()

    def pauseProducing(self) -> None:
        self._paused_by_transport = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        # The transport sent all it held, or the socket can take more: the client read.
        self._paused_by_transport = False
        self._resumes += 1
        super().resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._disarm()
        self._stop_watching()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        if self._admitted:
            self._admitted = False
            self._gate.leave(self)
        super().connectionLost(reason)

    def evict(self) -> None:
        """
        Dropped to make room for a new connection near the descriptor limit.
        """
        log.debug("closing an idle connection from {client} to make room", client=self._host)
        self._close_now()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = self._clock.callLater(seconds, self._timed_out, reason)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _timed_out(self, reason: str) -> None:
        self._deadline = None
        if self._closing:
            return
        self._gate.counts[reason] += 1
        log.debug(
            "{client} did not send its request in time ({reason}): closing",
            client=self._host,
            reason=reason,
        )
        self._closing = True
        # Unless a response (a 413) is already on its way out and closing the connection.
        if not getattr(self._connection, "disconnecting", False):
            self._connection.write(_TIMED_OUT)
            self.loseConnection()
        # A client that does not read could keep even the 408 from leaving.
        self._abort = self._clock.callLater(ABORT_GRACE, drop_now, self._connection)

    def _watch_writing(self) -> None:
        self._progress = self._snapshot()
        self._watchdog = self._clock.callLater(self._limits.write_timeout, self._check_writing)

    def _stop_watching(self) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        self._progress = None

    def _snapshot(self) -> _Progress:
        unsent = unsent_bytes(self.transport)
        if unsent is not None:
            waiting = unsent > 0
        else:
            # No way to see the bytes waiting: a paused transport, or a body sent
            # behind the transport's back (the kernel's sendfile), waits on the client.
            waiting = self._paused_by_transport or self._producing
        return _Progress(waiting, self._resumes, self._written, unsent)

    def _check_writing(self) -> None:
        self._watchdog = None
        before, now = self._progress, self._snapshot()
        assert before is not None
        taken = now.resumes != before.resumes or (
            now.unsent is not None
            and before.unsent is not None
            and now.unsent < before.unsent + now.written - before.written
        )
        if before.waiting and now.waiting and not taken:
            self._gate.counts[WRITE_TIMED_OUT] += 1
            log.info(
                "{client} took nothing of its response for {seconds:.0f} s: closing",
                client=self._host,
                seconds=self._limits.write_timeout,
            )
            self._close_now()
            return
        self._progress = now
        self._watchdog = self._clock.callLater(self._limits.write_timeout, self._check_writing)

    def _close_now(self) -> None:
        self._closing = True
        self._disarm()
        self._stop_watching()
        drop_now(self._connection)


class PxePilotSite(Site):
    """
    The site pxe-pilot listens with: bounded request bodies, no form parsing, an idle
    timeout, request and response deadlines and connection limits (L{HTTPLimits}), and
    one structured debug event per request instead of a text access log.

    @param limits: What each client may hold.
    @param trusted_proxies: Peers exempt from the per-address connection limit.
    @param gate: Shared by every listener of this site; built from C{limits} when not
        given.
    @param urgent: Done before each request is answered: what must not wait for a
        batch of requests (the blocks of lock-step TFTP transfers, each waiting for the
        one before it).
    @param kwargs: For L{Site}; its C{reactor} also runs the deadlines.
    """

    requestFactory = BoundedRequest
    # Site declares its own private channel wrapper (there for HTTP/2, which pxe-pilot
    # does not offer) as the only kind of protocol.
    protocol = LimitedChannel  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        resource: IResource,
        limits: HTTPLimits | None = None,
        trusted_proxies: Sequence[IPNetwork] = (),
        gate: ConnectionGate | None = None,
        urgent: Callable[[], object] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, parsePOSTFormSubmission=False, timeout=IDLE_TIMEOUT, **kwargs)
        if gate is None:
            gate = ConnectionGate(limits or HTTPLimits(), self.reactor, trusted_proxies)
        self.gate = gate
        self.urgent = urgent

    def log(self, request: http.Request) -> None:
        log.debug(
            "{method} {path} from {client}: {code} ({length} bytes)",
            method=_text(request.method),
            path=_text(redact_query(request.uri)),
            client=plain_address(str(getattr(request.getClientAddress(), "host", "?"))),
            code=request.code,
            length=getattr(request, "sentLength", 0),
            user_agent=_text(request.getHeader(b"user-agent") or b""),
        )


# Query parameters whose values are never logged: a name is secret when one of its
# words is one of these, or it ends in one of the longer ones (accessToken, apikey).
_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "pass",
        "key",
        "apikey",
        "sig",
        "signature",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "session",
        "sid",
        "jwt",
    }
)
_SECRET_ENDINGS = ("token", "secret", "password", "passwd", "key")
_WORD = re.compile(r"[a-z0-9]+")
REDACTED = "<redacted>"


def is_secret_name(name: str) -> bool:
    """
    Whether a query parameter called C{name} carries a secret (C{token},
    C{answer_token}, C{access_token}, C{X-Amz-Signature}, C{apiKey}, ...).
    """
    lowered = name.lower()
    words = _WORD.findall(lowered)
    return any(word in _SECRET_WORDS or word.endswith(_SECRET_ENDINGS) for word in words)


def redact_query(uri: bytes) -> bytes:
    """
    C{uri} with the value of every secret query parameter replaced by C{<redacted>}:
    C{/answer?token=abc&mac=x} becomes C{/answer?token=<redacted>&mac=x}.
    """
    path, mark, query = uri.partition(b"?")
    if not mark:
        return uri
    parts = []
    for part in query.split(b"&"):
        name, equals, _ = part.partition(b"=")
        if equals and is_secret_name(unquote_plus(name.decode("latin-1"))):
            part = name + b"=" + REDACTED.encode()
        parts.append(part)
    return path + b"?" + b"&".join(parts)


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
