"""
C{/ipxe/<name>}: the iPXE binaries of the TFTP root over HTTP, for UEFI HTTP Boot
firmware, which loads its boot file from a URL and never speaks TFTP.

The DHCP boot loop is broken here as the TFTP side breaks it (L{pxepilot.boot.tftp}):
iPXE, once loaded, asks DHCP again and gets the same URL; iPXE says who it is in its
C{User-Agent} (C{iPXE/1.21.1}), so an iPXE that asks for an iPXE binary (by its usual
name, or by its content when an operator renamed it) gets the chain script to
C{boot.ipxe} instead. A DHCP server may hand the same URL to the firmware and to iPXE,
with no user-class rules.

Only plain names directly in the TFTP root are served, each as TFTP would serve it (a
link in the root may lead elsewhere, as Debian's C{ipxe.efi} leads to C{/boot}); no
directories, no listings, no hidden files.
"""

from __future__ import annotations

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

from pxepilot.boot.ipxe import chain_script
from pxepilot.boot.tftp import IPXE_BINARIES, looks_like_ipxe
from pxepilot.http.files import DEFAULT_TYPE, DownloadWatcher, FileBody
from pxepilot.http.responses import header
from pxepilot.http.sending import Turns
from pxepilot.logs import logger
from pxepilot.tftp.files import FileReader

log = logger(__name__)

# The route's path below pxe-pilot's base URL, and the file UEFI HTTP Boot firmware is
# sent to: ipxe.efi carries iPXE's own drivers and falls back to the firmware's.
IPXE_PATH = "ipxe/"
HTTP_BOOT_FILE = f"{IPXE_PATH}ipxe.efi"
# File names as iPXE's and the distributions' binaries are named: no leading dot, no
# separator, nothing a URL or a shell would need to escape.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
IPXE_AGENT = "iPXE/"
SCRIPT_TYPE = b"text/plain; charset=utf-8"


def ipxe_binary(name: str, path: str) -> bool:
    """
    Whether the file at C{path}, asked for as C{name}, is an iPXE binary: by its usual
    name, else by its content.
    """
    if name in IPXE_BINARIES:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    reader = FileReader(fd, os.fstat(fd).st_size)
    try:
        return looks_like_ipxe(reader)
    except OSError:
        return False
    finally:
        reader.close()


class IpxeFiles(Resource):
    """
    The regular files directly in C{root}, and the chain script for iPXE.

    @param root: The TFTP root.
    @param boot_url: The URL of C{boot.ipxe} as the requesting machine must be told it.
    @param client_of: The client's address, as far as the request's proxies are believed.
    @param turns: Shared with the assets' downloads, so that all bodies being sent share
        the reactor fairly.
    @param watcher: Told when a body starts, with its path below the base URL.
    """

    isLeaf = True

    def __init__(
        self,
        root: Path,
        boot_url: Callable[[IRequest], str],
        client_of: Callable[[IRequest], str],
        turns: Turns,
        watcher: DownloadWatcher | None = None,
        pieces: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self._pieces = pieces
        self._root = root
        self._boot_url = boot_url
        self._client_of = client_of
        self._turns = turns
        self._watcher = watcher

    def render_HEAD(self, request: IRequest) -> Any:
        return self.render_GET(request)

    def render_GET(self, request: IRequest) -> Any:
        segments: list[bytes] = getattr(request, "postpath", [])
        name = _name(segments)
        if name is None:
            return _not_found(request, b"no such file\n")
        # The signed shim and GRUB of the Secure Boot chain, wherever they are kept.
        piece = self._pieces(name) if self._pieces is not None else None
        if piece is not None:
            return self._send(request, name, piece, header(request, b"user-agent") or "")
        if not os.path.isdir(self._root):
            return _not_found(request, f"no TFTP root: {self._root} is not a directory\n".encode())
        # One name, checked above: no separator, no dot first. A link may lead outside
        # the root, as TFTP allows it.
        path = os.path.join(os.path.realpath(self._root), name)
        agent = header(request, b"user-agent") or ""
        if agent.startswith(IPXE_AGENT) and ipxe_binary(name, path):
            return self._chain_script(request, name)
        return self._send(request, name, path, agent)

    def _send(self, request: IRequest, name: str, path: str, agent: str) -> Any:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return _not_found(request, b"no such file\n")
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            return _not_found(request, b"no such file\n")
        body = FileBody(fd, status, name)
        request.setHeader(b"content-type", DEFAULT_TYPE.encode())
        request.setHeader(b"content-length", str(body.size).encode())
        if request.method == b"HEAD" or body.size == 0:
            body.close()
            return b""
        log.info(
            "HTTP {client}: {agent} fetches {path}",
            client=self._client_of(request),
            # The client's words, shortened and printable: they go into the log.
            agent="".join(c if c.isprintable() else "?" for c in agent[:80])
            or "a client without a User-Agent",
            path=f"{IPXE_PATH}{name}",
        )
        ended = None
        if self._watcher is not None:
            ended = self._watcher(request, f"{IPXE_PATH}{name}", body.size)
        body.send(cast(Request, request), 0, body.size, self._turns, ended)
        return NOT_DONE_YET

    def _chain_script(self, request: IRequest, name: str) -> bytes:
        boot_url = self._boot_url(request)
        if request.method == b"GET":
            log.info(
                "HTTP {client}: iPXE asked for {path}; it gets the chain script to the menu",
                client=self._client_of(request),
                path=f"{IPXE_PATH}{name}",
            )
        script = chain_script(boot_url).encode()
        request.setHeader(b"content-type", SCRIPT_TYPE)
        request.setHeader(b"content-length", str(len(script)).encode())
        return b"" if request.method == b"HEAD" else script


def _name(segments: list[bytes]) -> str | None:
    """
    The one file name C{segments} name, when it is one that may be served.
    """
    if len(segments) != 1:
        return None
    try:
        name = segments[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    return name if NAME.fullmatch(name) else None


def _not_found(request: IRequest, text: bytes) -> bytes:
    request.setResponseCode(http.NOT_FOUND)
    request.setHeader(b"content-type", SCRIPT_TYPE)
    return text
