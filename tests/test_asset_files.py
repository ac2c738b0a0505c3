"""
The assets directory over HTTP: what a static web server does, nothing outside the
directory, and the body sent by the kernel on a plain TCP socket or written in pieces on
any other transport.
"""

from __future__ import annotations

import email.utils
import gc
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
import treq
from attrs import frozen
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import IResource, Resource

from builder.publish import REPLACED_PREFIX, make_staging
from pxepilot import Config, PxePilot
from pxepilot.hosts.ledger import run_here
from pxepilot.http.files import AssetFiles
from pxepilot.http.sending import Turns
from pxepilot.http.site import PxePilotSite
from tests.conftest import clock_at_now

SECRET = b"outside the assets directory"
TEXT = b"0123456789"


@frozen
class Reply:
    """
    A response as it went over the wire.
    """

    code: int
    headers: dict[str, str]
    body: bytes


def parse(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return Reply(int(status.split()[1]), headers, body)


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]


class PausingTransport(StringTransport):
    """
    A transport without a socket (as under TLS) whose buffer fills after every write
    of a body: the producer is paused until the test resumes it.
    """

    def write(self, data: bytes) -> None:
        super().write(data)
        if data and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        """
        Take what the producer has to send until it sends no more.
        """
        while self.producer is not None and not self.disconnecting:
            before = len(self.value())
            self.producer.resumeProducing()
            if len(self.value()) == before:
                return


def connect(resource: IResource, transport: StringTransport | None = None) -> Any:
    """
    An HTTP connection to C{resource} over an in-memory transport.
    """
    site = PxePilotSite(resource, reactor=Clock())
    site.timeOut = None
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 0))
    assert channel is not None
    channel.makeConnection(transport if transport is not None else StringTransport())
    return channel


def exchange(
    resource: IResource,
    path: bytes,
    method: bytes = b"GET",
    headers: dict[str, bytes] | None = None,
    transport: StringTransport | None = None,
) -> Reply:
    """
    Send one request, written exactly as given, and read what comes back.
    """
    transport = transport if transport is not None else StringTransport()
    channel = connect(resource, transport)
    lines = [method + b" " + path + b" HTTP/1.1"]
    sent = {"Host": b"pxe.test", **(headers or {})}
    lines += [name.encode() + b": " + value for name, value in sent.items()]
    channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n")
    return parse(transport.value())


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    root = tmp_path / "assets"
    version = root / "proxmox-ve" / "9.1-1"
    version.mkdir(parents=True)
    (version / "vmlinuz").write_bytes(b"kernel " * 100)
    (root / "hello.txt").write_bytes(TEXT)
    (root / "empty").write_bytes(b"")
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "answers").mkdir()
    return root


@pytest.fixture
def resource(assets: Path) -> IResource:
    """
    pxe-pilot's whole resource tree: the assets are under C{/assets/}.
    """
    config = Config(
        answers_dir=assets.parent / "answers",
        assets_dir=assets,
        state_dir=assets.parent / "state",
    )
    return PxePilot(config, clock_at_now(), run_blocking=run_here).resource


def get(resource: IResource, name: str, **headers: bytes) -> Reply:
    return exchange(
        resource,
        f"/assets/{name}".encode(),
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


# What a static file server sends.


def test_whole_file(resource: IResource, assets: Path) -> None:
    """
    A file comes whole, with its length, type, validators and the offer of ranges.
    """
    reply = get(resource, "hello.txt")
    status = (assets / "hello.txt").stat()
    assert (reply.code, reply.body) == (200, TEXT)
    assert reply.headers["content-length"] == "10"
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["accept-ranges"] == "bytes"
    assert reply.headers["last-modified"] == email.utils.formatdate(status.st_mtime, usegmt=True)
    etag = reply.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2


def test_nested_file(resource: IResource) -> None:
    """
    Files in a version's directory are served by their path.
    """
    reply = get(resource, "proxmox-ve/9.1-1/vmlinuz")
    assert (reply.code, reply.body) == (200, b"kernel " * 100)
    assert reply.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("asset.json", "application/json"),
        ("boot.ipxe", "text/plain; charset=utf-8"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("answer.toml", "application/toml; charset=utf-8"),
        ("proxmox.iso", "application/x-iso9660-image"),
        ("ipxe.efi", "application/efi"),
        ("index.html", "text/html; charset=utf-8"),
        ("UPPER.JSON", "application/json"),
        ("vmlinuz", "application/octet-stream"),
        ("initrd.img", "application/octet-stream"),
        ("archive.tar.gz", "application/octet-stream"),
    ],
)
def test_content_types(resource: IResource, assets: Path, name: str, content_type: str) -> None:
    """
    The type follows the extension, in any letter case; anything else is bytes.
    """
    (assets / name).write_bytes(b"x")
    assert get(resource, name).headers["content-type"] == content_type


def test_empty_file(resource: IResource) -> None:
    """
    An empty file is an empty 200, not an error.
    """
    reply = get(resource, "empty")
    assert (reply.code, reply.body, reply.headers["content-length"]) == (200, b"", "0")


def test_head(resource: IResource) -> None:
    """
    HEAD gives the headers GET would, the real length included, and no body.
    """
    got = get(resource, "hello.txt")
    head = exchange(resource, b"/assets/hello.txt", method=b"HEAD")
    assert (head.code, head.body) == (200, b"")
    for name in ("content-length", "content-type", "etag", "last-modified", "accept-ranges"):
        assert head.headers[name] == got.headers[name]


def test_other_methods_refused(resource: IResource) -> None:
    """
    Only GET and HEAD are answered.
    """
    reply = exchange(resource, b"/assets/hello.txt", method=b"DELETE")
    assert reply.code == 405
    assert reply.headers["allow"] == "GET, HEAD"


# Ranges.


@pytest.mark.parametrize(
    ("header", "content_range", "body"),
    [
        (b"bytes=2-4", "bytes 2-4/10", b"234"),
        (b"bytes=0-0", "bytes 0-0/10", b"0"),
        (b"bytes=5-", "bytes 5-9/10", b"56789"),
        (b"bytes=-3", "bytes 7-9/10", b"789"),
        (b"bytes=5-100", "bytes 5-9/10", b"56789"),
        (b"bytes=-100", "bytes 0-9/10", TEXT),
        (b"bytes=9-9", "bytes 9-9/10", b"9"),
        # Range units are case-insensitive (RFC 9110 section 14.1).
        (b"Bytes=2-4", "bytes 2-4/10", b"234"),
        (b"bytes = 2 - 4", "bytes 2-4/10", b"234"),
    ],
)
def test_one_range(resource: IResource, header: bytes, content_range: str, body: bytes) -> None:
    """
    One byte range, first-last, open-ended or a suffix, is sent as 206 with its place
    in the file; a range past the end is clamped to it.
    """
    reply = get(resource, "hello.txt", range=header)
    assert (reply.code, reply.body) == (206, body)
    assert reply.headers["content-range"] == content_range
    assert reply.headers["content-length"] == str(len(body))


@pytest.mark.parametrize(
    ("name", "header", "size"),
    [
        ("hello.txt", b"bytes=10-", 10),
        ("hello.txt", b"bytes=10-20", 10),
        ("hello.txt", b"bytes=1000-", 10),
        ("hello.txt", b"bytes=-0", 10),
        ("empty", b"bytes=0-", 0),
        ("empty", b"bytes=-5", 0),
    ],
)
def test_unsatisfiable_range(resource: IResource, name: str, header: bytes, size: int) -> None:
    """
    A range wholly past the end is 416, saying how long the file is.
    """
    reply = get(resource, name, range=header)
    assert (reply.code, reply.body) == (416, b"")
    assert reply.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    "header",
    [
        b"bytes=0-1,3-4",
        b"bytes=0-1, 5-",
        b"bytes=x-y",
        b"bytes=-",
        b"bytes=5-2",
        b"bytes=1.5-3",
        b"items=0-1",
        b"0-1",
        b"bytes=" + b"9" * 5000 + b"-",
        b"bytes=0-" + b"9" * 5000,
    ],
)
def test_ignored_range(resource: IResource, header: bytes) -> None:
    """
    Several ranges, other units and malformed ranges (absurdly long numbers too) are
    ignored: the whole file is sent.
    """
    reply = get(resource, "hello.txt", range=header)
    assert (reply.code, reply.body) == (200, TEXT)
    assert "content-range" not in reply.headers


def test_head_with_range(resource: IResource) -> None:
    """
    HEAD with a range says what GET would send, without sending it.
    """
    reply = exchange(
        resource, b"/assets/hello.txt", method=b"HEAD", headers={"Range": b"bytes=-3"}
    )
    assert (reply.code, reply.body) == (206, b"")
    assert reply.headers["content-range"] == "bytes 7-9/10"
    assert reply.headers["content-length"] == "3"


# Conditional requests.


@pytest.fixture
def validators(resource: IResource) -> tuple[str, str]:
    reply = get(resource, "hello.txt")
    return reply.headers["etag"], reply.headers["last-modified"]


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"other", {etag}', "*"],
)
def test_if_none_match(
    resource: IResource, validators: tuple[str, str], if_none_match: str
) -> None:
    """
    A client whose copy is current gets 304 without a body; the length, if given,
    is the file's own.
    """
    etag, modified = validators
    header = if_none_match.format(etag=etag).encode()
    reply = get(resource, "hello.txt", if_none_match=header)
    assert (reply.code, reply.body) == (304, b"")
    assert reply.headers["etag"] == etag
    assert reply.headers["last-modified"] == modified
    assert reply.headers.get("content-length", "10") == "10"


def test_conditional_head(resource: IResource, validators: tuple[str, str]) -> None:
    """
    HEAD is conditional too.
    """
    etag, _ = validators
    reply = exchange(
        resource, b"/assets/hello.txt", method=b"HEAD", headers={"If-None-Match": etag.encode()}
    )
    assert (reply.code, reply.body) == (304, b"")
    assert reply.headers.get("content-length", "10") == "10"


def test_if_none_match_other_tag(resource: IResource) -> None:
    """
    A tag that is not the file's gets the file.
    """
    reply = get(resource, "hello.txt", if_none_match=b'"something-else"')
    assert (reply.code, reply.body) == (200, TEXT)


def test_if_modified_since(resource: IResource, assets: Path, validators: tuple[str, str]) -> None:
    """
    Unchanged since the given date: 304. Changed after it, or a date that is not a date:
    the file.
    """
    _, modified = validators
    assert get(resource, "hello.txt", if_modified_since=modified.encode()).code == 304
    mtime = (assets / "hello.txt").stat().st_mtime
    earlier = email.utils.formatdate(mtime - 3600, usegmt=True).encode()
    assert get(resource, "hello.txt", if_modified_since=earlier).code == 200
    assert get(resource, "hello.txt", if_modified_since=b"yesterday").code == 200


def test_if_none_match_wins_over_if_modified_since(
    resource: IResource, validators: tuple[str, str]
) -> None:
    """
    When both are sent, the entity tag decides (RFC 9110, 13.1.3).
    """
    _, modified = validators
    reply = get(
        resource,
        "hello.txt",
        if_none_match=b'"stale"',
        if_modified_since=modified.encode(),
    )
    assert (reply.code, reply.body) == (200, TEXT)


def test_changed_file_has_a_new_etag(
    resource: IResource, assets: Path, validators: tuple[str, str]
) -> None:
    """
    After the file changes, the old tag no longer matches and the new content comes.
    """
    etag, _ = validators
    (assets / "hello.txt").write_bytes(b"new content")
    reply = get(resource, "hello.txt", if_none_match=etag.encode())
    assert (reply.code, reply.body) == (200, b"new content")
    assert reply.headers["etag"] != etag


def test_if_range_matching(resource: IResource, validators: tuple[str, str]) -> None:
    """
    A range under a validator that still holds (tag or date) is sent as a range.
    """
    etag, modified = validators
    for validator in (etag, modified):
        reply = get(resource, "hello.txt", range=b"bytes=2-4", if_range=validator.encode())
        assert (reply.code, reply.body) == (206, b"234")


@pytest.mark.parametrize(
    "if_range",
    [b'"stale"', b"Thu, 01 Jan 1970 00:00:00 GMT", b'"\xff\xfe"', b"W/{etag}"],
)
def test_if_range_mismatch(
    resource: IResource, validators: tuple[str, str], if_range: bytes
) -> None:
    """
    A range under a validator that no longer holds (or is weak, or is not text) gets
    the whole file, so a resumed download never splices two versions.
    """
    etag, _ = validators
    header = if_range.replace(b"{etag}", etag.encode())
    reply = get(resource, "hello.txt", range=b"bytes=2-4", if_range=header)
    assert (reply.code, reply.body) == (200, TEXT)


# What is not served.


@pytest.mark.parametrize(
    "path",
    [
        b"/assets/",
        b"/assets/proxmox-ve",
        b"/assets/proxmox-ve/",
        b"/assets/proxmox-ve/9.1-1",
        b"/assets/proxmox-ve/9.1-1/",
        b"/assets/hello.txt/",
        b"/assets/missing",
        b"/assets/proxmox-ve/9.1-1/missing",
    ],
)
def test_directories_and_missing_files(resource: IResource, path: bytes) -> None:
    """
    Directories, the root included, are never listed; they are not found, like files
    that do not exist.
    """
    reply = exchange(resource, path)
    assert reply.code == 404
    assert reply.headers["content-type"] == "application/json"
    assert b"vmlinuz" not in reply.body
    assert b"9.1-1" not in reply.body


@pytest.mark.parametrize(
    ("path", "location"),
    [
        (b"/assets", "/assets/"),
        (b"/assets//proxmox-ve/9.1-1/vmlinuz", "/assets/proxmox-ve/9.1-1/vmlinuz"),
        (b"/assets/%2fetc%2fpasswd", "/assets/etc/passwd"),
        (b"//assets//hello.txt", "/assets/hello.txt"),
    ],
)
def test_router_redirects(resource: IResource, path: bytes, location: str) -> None:
    """
    A missing trailing slash and doubled slashes are redirected within the site, by
    path: never an error, never to another host.
    """
    reply = exchange(resource, path, headers={"Host": b"attacker.test"})
    assert reply.code == 308
    assert reply.headers["location"] == location


def test_redirect_keeps_the_mount_prefix(resource: IResource) -> None:
    """
    Mounted under a prefix, the redirect stays under it.
    """
    root = Resource()
    root.putChild(b"pxe", resource)
    reply = exchange(root, b"/pxe/assets")
    assert (reply.code, reply.headers["location"]) == (308, "/pxe/assets/")


def test_hidden_files(resource: IResource, assets: Path) -> None:
    """
    Hidden files and directories, at any depth, are not served, however the name is
    spelled.
    """
    (assets / ".hidden").write_bytes(SECRET)
    (assets / "proxmox-ve" / ".notes").write_bytes(SECRET)
    for path in (
        b"/assets/.hidden",
        b"/assets/%2ehidden",
        b"/assets/%2Ehidden",
        b"/assets/proxmox-ve/.notes",
    ):
        reply = exchange(resource, path)
        assert reply.code == 404, path
        assert SECRET not in reply.body


def test_builds_in_progress_and_replaced_versions(resource: IResource, assets: Path) -> None:
    """
    The builder's staging directory (a version being built) and a version moved aside
    while it is replaced are invisible.
    """
    staging = make_staging(assets)
    (staging / "vmlinuz").write_bytes(b"half-built")
    replaced = assets / "proxmox-ve" / f"{REPLACED_PREFIX}9.0-1-0123abcd"
    replaced.mkdir()
    (replaced / "vmlinuz").write_bytes(b"old")
    assert staging.name.startswith(".build-")
    for relative in (staging.relative_to(assets), replaced.relative_to(assets)):
        reply = get(resource, f"{relative}/vmlinuz")
        assert reply.code == 404
        assert reply.body not in (b"half-built", b"old")


@pytest.mark.parametrize(
    "path",
    [
        b"/assets/../secret",
        b"/assets/%2e%2e/secret",
        b"/assets/%2E%2E%2Fsecret",
        b"/assets/..%2fsecret",
        b"/assets/..%5csecret",
        b"/assets/..\\secret",
        b"/assets/proxmox-ve/../../secret",
        b"/assets/./../secret",
        b"/assets/proxmox-ve/%2e%2e/%2e%2e/secret",
        b"/assets/proxmox-ve%2f..%2f..%2fsecret",
        b"/assets/%00",
        b"/assets/hello.txt%00.json",
    ],
)
def test_traversal(resource: IResource, path: bytes) -> None:
    """
    No spelling of a path out of the directory serves what is outside it.
    """
    reply = exchange(resource, path)
    assert reply.code == 404
    assert SECRET not in reply.body


@pytest.mark.parametrize("path", [b"/assets//etc/passwd", b"/assets/%2fetc%2fpasswd"])
def test_absolute_paths(resource: IResource, path: bytes) -> None:
    """
    An absolute path is taken as a name inside the directory: the redirect stays there,
    and following it finds nothing.
    """
    reply = exchange(resource, path)
    assert reply.code == 308
    assert b"root:" not in reply.body
    followed = exchange(resource, reply.headers["location"].encode())
    assert followed.code == 404
    assert b"root:" not in followed.body


def test_symbolic_links(resource: IResource, assets: Path) -> None:
    """
    A link to a file or directory outside is not followed; a link that stays inside
    is served like its target.
    """
    outside = assets.parent
    (assets / "escape").symlink_to(outside / "secret")
    (assets / "escape-dir").symlink_to(outside)
    (assets / "proxmox-ve" / "up").symlink_to("../..")
    (assets / "latest").symlink_to("proxmox-ve/9.1-1")
    for name in ("escape", "escape-dir/secret", "proxmox-ve/up/secret"):
        reply = get(resource, name)
        assert reply.code == 404, name
        assert SECRET not in reply.body
    reply = get(resource, "latest/vmlinuz")
    assert (reply.code, reply.body) == (200, b"kernel " * 100)


def test_links_into_hidden_directories(resource: IResource, assets: Path) -> None:
    """
    A link does not lead into what is hidden: a version the builder is still writing
    stays out of reach through a link to it, as by its own name.
    """
    staging = assets / ".build-1234-abcd"
    staging.mkdir()
    (staging / "initrd").write_bytes(b"half-written")
    (assets / "next").symlink_to(".build-1234-abcd")
    (assets / "next-initrd").symlink_to(".build-1234-abcd/initrd")
    for name in ("next/initrd", "next-initrd", ".build-1234-abcd/initrd"):
        reply = get(resource, name)
        assert reply.code == 404, name
        assert b"half-written" not in reply.body


def test_special_files(resource: IResource, assets: Path) -> None:
    """
    A named pipe is not a file to serve, and opening it does not block.
    """
    os.mkfifo(assets / "pipe")
    assert get(resource, "pipe").code == 404


# Files that come and go.


def test_new_files_are_served(resource: IResource, assets: Path) -> None:
    """
    A file or version that appears after start-up is served at once.
    """
    assert get(resource, "proxmox-ve/9.2-1/vmlinuz").code == 404
    (assets / "proxmox-ve" / "9.2-1").mkdir()
    (assets / "proxmox-ve" / "9.2-1" / "vmlinuz").write_bytes(b"newer kernel")
    reply = get(resource, "proxmox-ve/9.2-1/vmlinuz")
    assert (reply.code, reply.body) == (200, b"newer kernel")


def test_replaced_and_removed_files(resource: IResource, assets: Path) -> None:
    """
    Between requests, a file replaced by rename is served with its new content and
    validators; a removed one is not found.
    """
    before = get(resource, "hello.txt")
    (assets / "hello.new").write_bytes(b"replaced")
    os.replace(assets / "hello.new", assets / "hello.txt")
    after = get(resource, "hello.txt")
    assert (after.code, after.body) == (200, b"replaced")
    assert after.headers["etag"] != before.headers["etag"]
    (assets / "hello.txt").unlink()
    assert get(resource, "hello.txt").code == 404


# The body on a transport without a socket: read and written in pieces.


@pytest.fixture
def large(assets: Path) -> tuple[Path, bytes]:
    data = os.urandom(3 * 1024 * 1024 + 123)
    path = assets / "proxmox-ve" / "9.1-1" / "initrd"
    path.write_bytes(data)
    return path, data


def test_large_file_without_a_socket(
    resource: IResource, large: tuple[Path, bytes], sendfile_calls: list[int]
) -> None:
    """
    Without a socket (TLS, memory) the file is read and written piece by piece, whole.
    """
    _, data = large
    reply = get(resource, "proxmox-ve/9.1-1/initrd")
    assert (reply.code, len(reply.body)) == (200, len(data))
    assert hashlib.sha256(reply.body).digest() == hashlib.sha256(data).digest()
    assert sendfile_calls == []


def start_paused(resource: IResource) -> PausingTransport:
    transport = PausingTransport()
    channel = connect(resource, transport)
    channel.dataReceived(b"GET /assets/proxmox-ve/9.1-1/initrd HTTP/1.1\r\nHost: x\r\n\r\n")
    return transport


def body_of(transport: StringTransport) -> bytes:
    raw: bytes = transport.value()
    return raw.partition(b"\r\n\r\n")[2]


def test_download_broken_off_is_no_error(
    resource: IResource, large: tuple[Path, bytes], events: list[LogEvent]
) -> None:
    """
    A machine that drops its connection mid-download (powered off, rebooted) is
    counted and forgotten: no unhandled error is logged for it.
    """
    channel = connect(resource, PausingTransport())
    channel.dataReceived(b"GET /assets/proxmox-ve/9.1-1/initrd HTTP/1.1\r\nHost: x\r\n\r\n")
    channel.connectionLost(Failure(ConnectionLost("the machine went away")))
    gc.collect()
    critical = [e for e in events if e.get("log_level") == LogLevel.critical]
    assert critical == []
    # The request was still counted, by route and the status it was answered with.
    metrics = exchange(resource, b"/metrics").body.decode()
    assert 'pxepilot_http_requests_total{route="assets",status="200"} 1.0' in metrics


def test_written_as_the_transport_takes_it(resource: IResource, large: tuple[Path, bytes]) -> None:
    """
    A paused transport stops the reading; resumed, the rest follows, in order.
    """
    _, data = large
    transport = start_paused(resource)
    first = body_of(transport)
    assert 0 < len(first) < len(data)
    assert data.startswith(first)
    transport.drain()
    assert body_of(transport) == data
    assert not transport.disconnecting


@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_file_replaced_or_removed_while_sent(
    resource: IResource, large: tuple[Path, bytes], change: str
) -> None:
    """
    A download that started goes on with the file it started with, whether the file
    is replaced by rename (as the builder publishes) or removed meanwhile.
    """
    path, data = large
    transport = start_paused(resource)
    if change == "replaced":
        path.with_name("initrd.new").write_bytes(b"another version")
        os.replace(path.with_name("initrd.new"), path)
    else:
        path.unlink()
    transport.drain()
    assert body_of(transport) == data


def test_file_truncated_while_sent(
    resource: IResource, large: tuple[Path, bytes], events: list[LogEvent]
) -> None:
    """
    A file cut short in place cannot be sent whole: the connection is closed rather
    than the body padded or the client left waiting.
    """
    path, data = large
    transport = start_paused(resource)
    os.truncate(path, 1000)
    transport.drain()
    assert transport.disconnecting
    body = body_of(transport)
    assert len(body) < len(data)
    assert data.startswith(body)
    assert [e for e in events if "sending an asset failed" in e.get("log_format", "")]


# The body on a real socket: sent by the kernel.


class CountingSite(PxePilotSite):
    """
    A site that counts its connections and keeps their protocols.
    """

    connections = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocols: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        protocol = super().buildProtocol(addr)
        self.protocols.append(protocol)
        return protocol


@pytest.fixture
def big(assets: Path) -> tuple[Path, bytes]:
    """
    A file larger than one turn of the reactor sends.
    """
    data = os.urandom(20 * 1024 * 1024 + 7)
    path = assets / "proxmox-ve" / "9.1-1" / "proxmox.iso"
    path.write_bytes(data)
    return path, data


@pytest_twisted.async_yield_fixture
async def served(resource: IResource) -> AsyncIterator[tuple[CountingSite, str]]:
    """
    The site listening on 127.0.0.1 on a free port, and its base URL.
    """
    from twisted.internet import reactor

    site = CountingSite(resource)
    port = reactor.listenTCP(0, cast(Any, site), interface="127.0.0.1")
    yield site, f"http://127.0.0.1:{cast(IPv4Address, port.getHost()).port}"
    await maybeDeferred(port.stopListening)


@pytest_twisted.ensureDeferred
async def test_download_over_a_socket(
    served: tuple[CountingSite, str],
    big: tuple[Path, bytes],
    sendfile_calls: list[int],
    debug_logging: None,
    events: list[LogEvent],
) -> None:
    """
    A multi-megabyte file arrives whole over TCP, sent by the kernel in several turns;
    the access log counts the bytes the kernel sent.
    """
    _, data = big
    _, base = served
    response = await treq.get(f"{base}/assets/proxmox-ve/9.1-1/proxmox.iso", persistent=False)
    body = await response.content()
    assert (response.code, response.length) == (200, len(data))
    assert response.headers.getRawHeaders("content-type") == ["application/x-iso9660-image"]
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert sum(sendfile_calls) == len(data)
    assert len([sent for sent in sendfile_calls if sent]) > 1
    [logged] = [e for e in events if e.get("path") == "/assets/proxmox-ve/9.1-1/proxmox.iso"]
    assert (logged["code"], logged["length"]) == (200, len(data))


@pytest_twisted.ensureDeferred
async def test_urgent_work_goes_before_every_turn(
    assets: Path, big: tuple[Path, bytes], sendfile_calls: list[int]
) -> None:
    """
    Before each turn of a body's C{sendfile} calls, the work that cannot wait for a
    whole round (waiting TFTP blocks) is done: never more than a turn's bytes go first.
    """
    from twisted.internet import reactor

    _, data = big
    # The bytes of each sendfile call, and None for each call of the urgent work.
    happened = cast(list[int | None], sendfile_calls)
    share = 1 << 20
    turns = Turns(round_bytes=share, min_share=share)
    turns.urgent = lambda: happened.append(None)
    site = PxePilotSite(AssetFiles(assets, turns))
    port = reactor.listenTCP(0, cast(Any, site), interface="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{cast(IPv4Address, port.getHost()).port}"
        response = await treq.get(f"{base}/proxmox-ve/9.1-1/proxmox.iso", persistent=False)
        assert await response.content() == data
    finally:
        await maybeDeferred(port.stopListening)
    assert happened[0] is None
    turns_taken: list[int] = []
    for sent in happened:
        if sent is None:
            turns_taken.append(0)
        else:
            turns_taken[-1] += sent
    assert sum(turns_taken) == len(data)
    # A turn stops once it has sent its share; its last call asks for a share at most.
    assert max(turns_taken) < 2 * share
    assert len([sent for sent in turns_taken if sent]) >= len(data) // (2 * share)


@pytest_twisted.ensureDeferred
async def test_range_over_a_socket(
    served: tuple[CountingSite, str],
    big: tuple[Path, bytes],
    sendfile_calls: list[int],
) -> None:
    """
    A range of a large file is sent from its offset by the kernel, exactly.
    """
    _, data = big
    _, base = served
    url = f"{base}/assets/proxmox-ve/9.1-1/proxmox.iso"
    first, last = 3_000_001, 12_500_000
    response = await treq.get(
        url, headers=Headers({"Range": [f"bytes={first}-{last}"]}), persistent=False
    )
    body = await response.content()
    assert response.code == 206
    assert response.headers.getRawHeaders("content-range") == [f"bytes {first}-{last}/{len(data)}"]
    assert body == data[first : last + 1]
    response = await treq.get(url, headers=Headers({"Range": ["bytes=-1000"]}), persistent=False)
    assert await response.content() == data[-1000:]
    assert sum(sendfile_calls) == last - first + 1 + 1000


@pytest_twisted.ensureDeferred
async def test_connection_kept_alive_between_downloads(
    served: tuple[CountingSite, str], big: tuple[Path, bytes]
) -> None:
    """
    After a body sent by the kernel, the same connection carries the next request.
    """
    from twisted.internet import reactor

    _, data = big
    site, base = served
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 1
    client = HTTPClient(Agent(reactor, pool=pool))
    try:
        for url, expected in [
            (f"{base}/assets/proxmox-ve/9.1-1/proxmox.iso", data),
            (f"{base}/assets/hello.txt", TEXT),
            (f"{base}/assets/proxmox-ve/9.1-1/proxmox.iso", data),
        ]:
            response: IResponse = await client.get(url)
            assert await treq.content(response) == expected
        assert site.connections == 1
    finally:
        await pool.closeCachedConnections()


def cork_state(fd: int) -> int:
    probe = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
    try:
        return probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)
    finally:
        probe.close()


@pytest_twisted.ensureDeferred
async def test_socket_corked_only_while_the_kernel_sends(
    served: tuple[CountingSite, str], big: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The socket is corked while the kernel sends (only full segments go out), and
    uncorked once the body is complete, so that the rest leaves at once and a kept-alive
    connection's next response is not held back.
    """
    from twisted.internet import reactor

    corked_while_sending: list[int] = []
    real = os.sendfile

    def recording(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        corked_while_sending.append(cork_state(out_fd))
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", recording)
    _, data = big
    site, base = served
    pool = HTTPConnectionPool(reactor, persistent=True)
    client = HTTPClient(Agent(reactor, pool=pool))
    try:
        response: IResponse = await client.get(f"{base}/assets/proxmox-ve/9.1-1/proxmox.iso")
        assert await treq.content(response) == data
        assert corked_while_sending
        assert all(corked_while_sending)
        [protocol] = site.protocols
        # Twisted wraps the HTTP channel; the transport is the channel's.
        channel = getattr(protocol, "_channel", protocol)
        assert cork_state(channel.transport.socket.fileno()) == 0
    finally:
        await pool.closeCachedConnections()


@pytest.mark.parametrize("change", ["replaced", "removed"])
@pytest_twisted.ensureDeferred
async def test_file_changed_during_a_socket_download(
    served: tuple[CountingSite, str],
    big: tuple[Path, bytes],
    change: str,
) -> None:
    """
    Over TCP too, a download in progress finishes with the file it started with when
    the file is replaced by rename or removed.
    """
    path, data = big
    _, base = served
    response = await treq.get(f"{base}/assets/proxmox-ve/9.1-1/proxmox.iso", persistent=False)
    chunks: list[bytes] = []

    def receive(chunk: bytes) -> None:
        if not chunks:
            if change == "replaced":
                path.with_name("new.iso").write_bytes(b"another version")
                os.replace(path.with_name("new.iso"), path)
            else:
                path.unlink()
        chunks.append(chunk)

    await treq.collect(response, receive)
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(data).digest()


@pytest_twisted.ensureDeferred
async def test_file_truncated_during_a_socket_download(
    served: tuple[CountingSite, str], assets: Path, events: list[LogEvent]
) -> None:
    """
    A file cut short in place while the kernel sends it ends the connection early: the
    client sees a failed download, not a short one that looks complete.
    """
    path = assets / "sparse.iso"
    size = 256 * 1024 * 1024  # far more than the socket buffers hold
    with open(path, "wb") as f:
        f.truncate(size)
    _, base = served
    response = await treq.get(f"{base}/assets/sparse.iso", persistent=False)
    assert response.length == size
    received = [0]

    def receive(chunk: bytes) -> None:
        if not received[0]:
            os.truncate(path, 0)
        received[0] += len(chunk)

    with pytest.raises(ResponseFailed):
        await treq.collect(response, receive)
    assert 0 < received[0] < size
    assert [e for e in events if "sending an asset failed" in e.get("log_format", "")]
