"""
The HTTP site on an in-memory transport: bounded bodies and structured access events.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel
from twisted.web.resource import IResource, Resource

from pxepilot import Config, PxePilot
from pxepilot.hosts.ledger import run_here
from pxepilot.http.site import MAX_BODY_BYTES, PxePilotSite
from tests.conftest import AnswersDir, clock_at_now, fixture_bytes

PEER = IPv4Address("TCP", "192.0.2.50", 40000)


@pytest.fixture
def resource(answers_dir: AnswersDir, tmp_path: Path) -> IResource:
    answers_dir.write("default.toml")
    (tmp_path / "assets").mkdir()
    config = Config(
        answers_dir=answers_dir.root,
        assets_dir=tmp_path / "assets",
        state_dir=tmp_path / "state",
        answer_check="warn",
    )
    return PxePilot(config, clock_at_now(), run_blocking=run_here).resource


def connect(resource: IResource) -> tuple[StringTransport, object]:
    site = PxePilotSite(resource)
    protocol = site.buildProtocol(PEER)
    assert protocol is not None
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    return transport, protocol


def post(length_header: bytes, body: bytes = b"") -> bytes:
    return b"POST /answer HTTP/1.1\r\nHost: pxe\r\n" + length_header + b"\r\n\r\n" + body


def test_declared_oversized_body_is_refused_at_once(resource: IResource) -> None:
    """
    A C{Content-Length} over 1 MiB gets 413 and the connection is closed before any of
    the body is read.
    """
    transport, protocol = connect(resource)
    protocol.dataReceived(post(b"Content-Length: %d" % (MAX_BODY_BYTES + 1)))  # type: ignore[attr-defined]
    assert transport.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert b'"error": "request body is larger than 1048576 bytes"' in transport.value()
    assert transport.disconnecting


def test_chunked_oversized_body_is_refused(resource: IResource) -> None:
    """
    A chunked body is counted as it arrives and refused once it passes 1 MiB; the rest
    is not buffered.
    """
    transport, protocol = connect(resource)
    protocol.dataReceived(post(b"Transfer-Encoding: chunked"))  # type: ignore[attr-defined]
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    for _ in range(16):
        protocol.dataReceived(chunk)  # type: ignore[attr-defined]
    assert transport.value() == b""
    protocol.dataReceived(chunk)  # type: ignore[attr-defined]
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert transport.disconnecting
    protocol.dataReceived(chunk + b"0\r\n\r\n")  # type: ignore[attr-defined]
    assert transport.value().count(b"HTTP/1.1") == 1


def test_body_at_the_limit_is_processed(resource: IResource) -> None:
    """
    A body of exactly 1 MiB is read and answered normally (here: 400, it is not JSON).
    """
    transport, protocol = connect(resource)
    protocol.dataReceived(  # type: ignore[attr-defined]
        post(b"Content-Length: %d" % MAX_BODY_BYTES, b"x" * MAX_BODY_BYTES)
    )
    assert transport.value().startswith(b"HTTP/1.1 400 ")


@pytest.mark.usefixtures("debug_logging")
def test_answer_over_the_site(resource: IResource, events: list[LogEvent]) -> None:
    """
    A real installer request through the site is answered, and the access event is a
    debug event with method, path, client and status.
    """
    transport, protocol = connect(resource)
    body = fixture_bytes("installer-post-8.2.json")
    protocol.dataReceived(  # type: ignore[attr-defined]
        post(
            b"Content-type: application/json; charset=utf-\r\nContent-Length: %d" % len(body), body
        )
    )
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    [access] = [e for e in events if e.get("method") == "POST" and "code" in e]
    assert access["log_level"] == LogLevel.debug
    assert (access["path"], access["client"], access["code"]) == ("/answer", "192.0.2.50", 200)


@pytest.mark.parametrize(
    "host",
    [b"a" * 70 + b".example", b"x" * 300, b"pxe..example", "b\xc3\xb6se.example".encode()],
)
def test_impossible_host_names_do_not_break_routes(
    resource: IResource, host: bytes, events: list[LogEvent]
) -> None:
    """
    A Host header that cannot be a host name (a label over 63 characters, too long,
    an empty label, not ASCII) does not fail the request: the routes work with the
    address the client connected to.
    """
    transport, protocol = connect(resource)
    protocol.dataReceived(  # type: ignore[attr-defined]
        b"GET /boot.ipxe HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    )
    response = transport.value()
    assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response[:200]
    assert b"chain --autofree http://" in response
    assert not [e for e in events if e.get("log_failure") is not None]


def test_urgent_work_goes_before_each_request() -> None:
    """
    The site does its urgent work (the TFTP transfers' waiting blocks) before each
    request is answered, one call per request, even for requests pipelined together.
    """
    happened: list[str] = []

    class Recording(Resource):
        isLeaf = True

        def render_GET(self, request: object) -> bytes:
            happened.append("answered")
            return b"ok"

    site = PxePilotSite(Recording(), urgent=lambda: happened.append("urgent"))
    protocol = site.buildProtocol(PEER)
    assert protocol is not None
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    request = b"GET /a HTTP/1.1\r\nHost: pxe\r\n\r\n"
    protocol.dataReceived(request * 3)
    assert transport.value().count(b"HTTP/1.1 200 OK") == 3
    assert happened == ["urgent", "answered"] * 3
