"""
Where the ISO comes from: a local file, or a URL downloaded with treq, resumed with a
Range request when the connection drops, and checked against the C{SHA256SUMS} file
published next to it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperlink import DecodedURL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
    TimeoutError,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss

from builder.pipeline import BuildError, Pipeline

CHUNK = 4 << 20
HEADERS_TIMEOUT = 60
STALL_TIMEOUT = 60

_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(.+?)\s*$")


class DownloadInterrupted(Exception):
    """
    The connection ended before the whole body arrived; a retry may resume.
    """


def read_local(path: Path, pipeline: Pipeline, progress: Callable[[int], None]) -> None:
    """
    Feed a local ISO through the pipeline (run in a thread when the pipeline is).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise BuildError(f"cannot read {path}: {e.strerror}") from None
    try:
        while True:
            data = os.read(fd, CHUNK)
            if not data:
                return
            pipeline.wait_for_room()
            pipeline.feed(data)
            progress(len(data))
    finally:
        os.close(fd)


def sums_url(iso_url: str) -> str:
    """
    The URL of the C{SHA256SUMS} next to C{iso_url}.
    """
    url = DecodedURL.from_text(iso_url)
    return str(url.sibling("SHA256SUMS").to_text())


def expected_digest(sums: str, iso_url: str) -> str | None:
    """
    The SHA-256 that a C{SHA256SUMS} text lists for the ISO's file name.
    """
    name = DecodedURL.from_text(iso_url).path[-1]
    for line in sums.splitlines():
        found = _SUMS_LINE.match(line.strip())
        if found and found.group(2).split("/")[-1] == name:
            return found.group(1).lower()
    return None


async def fetch_expected_digest(reactor: Any, client: Any, iso_url: str) -> str | None:
    """
    The published SHA-256 of the ISO, or L{None} when there is no C{SHA256SUMS}.

    @raise BuildError: when C{SHA256SUMS} exists but does not list the ISO.
    """
    url = sums_url(iso_url)
    # It is the ISO the user asked for: name it, not only the file fetched first.
    what = f"{url} (the checksums of {iso_url})"
    try:
        response = await client.get(url, timeout=HEADERS_TIMEOUT, reactor=reactor)
        body = await response.content()
    except Exception as e:
        raise BuildError(f"cannot fetch {what}: {_describe(e)}") from None
    if response.code == 404:
        return None
    if response.code != 200:
        raise BuildError(f"cannot fetch {what}: HTTP {response.code}")
    digest = expected_digest(body.decode("utf-8", "replace"), iso_url)
    if digest is None:
        raise BuildError(f"{url} has no entry for {DecodedURL.from_text(iso_url).path[-1]}")
    return digest


class _Body(Protocol):
    """
    Delivers a response body into the pipeline, pausing the connection while the
    pipeline's queues are full, and aborting it when it stalls.
    """

    def __init__(
        self,
        reactor: Any,
        pipeline: Pipeline,
        progress: Callable[[int], None],
        done: Deferred[None],
    ) -> None:
        self._reactor = reactor
        self._pipeline = pipeline
        self._progress = progress
        self._done = done
        self._watchdog: IDelayedCall | None = None
        self._stalled = False
        self._failed = False

    def connectionMade(self) -> None:
        self._arm()

    def _arm(self) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.reset(STALL_TIMEOUT)
        else:
            self._watchdog = self._reactor.callLater(STALL_TIMEOUT, self._stall)

    def _stall(self) -> None:
        self._stalled = True
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._failed:
            return
        try:
            self._pipeline.feed(data)
            self._progress(len(data))
        except BaseException as e:
            self._failed = True
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            self._finish(Failure(e))
            return
        self._arm()
        if not self._pipeline.has_room():
            transport: Any = self.transport
            transport.pauseProducing()
            self._pipeline.when_room(lambda: self._reactor.callFromThread(self._resume, transport))

    def _resume(self, transport: Any) -> None:
        if not self._failed:
            transport.resumeProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        if self._failed:
            return
        if reason.check(ResponseDone):
            self._finish(None)
        elif self._stalled:
            self._finish(Failure(DownloadInterrupted(f"no data for {STALL_TIMEOUT} s")))
        elif reason.check(PotentialDataLoss, ResponseFailed):
            self._finish(
                Failure(
                    DownloadInterrupted(
                        _describe(reason.value) if reason.value else "connection lost"
                    )
                )
            )
        else:
            self._finish(reason)

    def _finish(self, result: Failure | None) -> None:
        if self._done.called:
            return
        if result is None:
            self._done.callback(None)
        else:
            self._done.errback(result)


# What a retry may cure: the connection, not the data.
_TRANSIENT = (
    DownloadInterrupted,
    ResponseFailed,
    ResponseNeverReceived,
    ConnectionLost,
    ConnectionRefusedError,
    TCPTimedOutError,
    TimeoutError,
    CancelledError,
)


def _describe(error: BaseException) -> str:
    if isinstance(error, ResponseFailed):
        reasons = [r.value for r in error.reasons]
        return "; ".join(_describe(r) for r in reasons) or "connection lost"
    if isinstance(error, TimeoutError | CancelledError | ConnectingCancelledError):
        return "timed out"
    if isinstance(error, ConnectError) and isinstance(error.osError, int):
        # Twisted's own text repeats itself ("Connection was refused by other side: 111:
        # Connection refused."); the system's is the part that says something.
        return os.strerror(error.osError)
    if isinstance(error, TCPTimedOutError):
        return "connection timed out"
    text = str(error).strip().rstrip(".")
    return text or type(error).__name__


def _total_size(response: Any, offset: int) -> int | None:
    if response.code == 206:
        content_range = response.headers.getRawHeaders(b"content-range", [b""])[0].decode()
        found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
        if not found or int(found.group(1)) != offset:
            raise DownloadInterrupted(f"unexpected Content-Range {content_range!r}")
        return None if found.group(3) == "*" else int(found.group(3))
    length = response.length
    return length if isinstance(length, int) else None


async def download(
    reactor: Any,
    client: Any,
    url: str,
    make_pipeline: Callable[[int | None], Pipeline],
    progress: Callable[[int], None],
    on_size: Callable[[int | None], None],
    retries: int = 5,
    notice: Callable[[str], None] | None = None,
) -> Pipeline:
    """
    Download C{url} into a pipeline, resuming with a Range request after a dropped
    connection, at most C{retries} times in a row without progress.

    @param make_pipeline: Makes the pipeline once the size is known (or again, from
        the start, when a server ignores the Range request).
    @param notice: Told, in a line, of each retry and why.
    @raise BuildError: for HTTP and connection errors, and when the retries are used up;
        the message names C{url}.
    """
    pipeline: Pipeline | None = None
    failures = 0
    while True:
        offset = pipeline.fed if pipeline is not None else 0
        headers = {"Range": [f"bytes={offset}-"]} if offset else {}
        try:
            response = await client.get(
                url, headers=headers, unbuffered=True, timeout=HEADERS_TIMEOUT
            )
            if response.code not in (200, 206):
                if response.code == 416 and pipeline is not None:
                    raise DownloadInterrupted("the server no longer has the bytes asked for")
                raise BuildError(f"cannot download {url}: HTTP {response.code}")
            if offset and response.code == 200:
                # The server ignored the Range request: start over.
                assert pipeline is not None
                pipeline.abort()
                pipeline = None
                offset = 0
            size = _total_size(response, offset)
            if pipeline is None:
                on_size(size)
                pipeline = make_pipeline(size)
            done: Deferred[None] = Deferred()
            response.deliverBody(_Body(reactor, pipeline, progress, done))
            await done
            if pipeline.source_size is not None and pipeline.fed < pipeline.source_size:
                raise DownloadInterrupted("the connection closed early")
            return pipeline
        except _TRANSIENT as e:
            progressed = pipeline is not None and pipeline.fed > offset
            failures = 0 if progressed else failures + 1
            if failures > retries:
                if pipeline is not None:
                    pipeline.abort()
                raise BuildError(
                    f"download of {url} failed {failures} times in a row: {_describe(e)}"
                ) from None
            delay = min(2**failures, 30) if failures else 0.5
            if notice is not None:
                notice(f"download of {url} interrupted: {_describe(e)}; retrying in {delay:g} s")
            await deferLater(reactor, delay, lambda: None)
        except (ConnectError, DNSLookupError) as e:
            if pipeline is not None:
                pipeline.abort()
            raise BuildError(f"cannot download {url}: {_describe(e)}") from None
        except BaseException:
            if pipeline is not None:
                pipeline.abort()
            raise
