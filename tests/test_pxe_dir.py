"""
A directory made by C{proxmox-auto-install-assistant prepare-iso --pxe} in the assets
directory: found by the catalogue from its ISO's C{/.cd-info}, booted by the menu with
the named ISO on BIOS and with one composed initrd on UEFI, which is served like a file
(ranges, HEAD, validators) without the ISO being copied or read whole.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
import treq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionLost
from twisted.logger import LogEvent
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource

from builder import cpio
from builder.testing import cd_info, prepare_iso_pxe, proxmox_files
from pxepilot import Config, PxePilot
from pxepilot.boot.catalogue import Initrd, scan
from pxepilot.boot.ipxe import Choice, Machine, menu_script
from pxepilot.boot.pxedir import COMBINED, combined_layout, pieces_in, size_of
from pxepilot.hosts.ledger import run_here
from pxepilot.http.site import PxePilotSite
from tests.conftest import clock_at_now
from tests.test_asset_files import PausingTransport, body_of, connect, exchange

INITRD = gzip.compress(b"the installer's initramfs " * 3001)
ANSWER_URL = "http://192.0.2.10:8080/answer"


def stand_in(directory: Path, release: str = "9.1", iso_release: str = "1") -> Path:
    files = proxmox_files(info=cd_info(release=release, iso_release=iso_release), initrd=INITRD)
    return prepare_iso_pxe(directory, files, ANSWER_URL, f"proxmox-ve_{release}-{iso_release}")


def unpack_newc(data: bytes) -> list[tuple[str, bytes]]:
    """
    The members of a newc archive, read as the kernel reads it, up to its trailer.
    """
    members: list[tuple[str, bytes]] = []
    offset = 0
    while True:
        assert data[offset : offset + 6] == cpio.MAGIC, offset
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        size, name_size = fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + name_size - 1].decode()
        data_start = cpio.align4(name_start + name_size)
        if name == cpio.TRAILER_NAME:
            assert data_start == len(data)
            return members
        members.append((name, data[data_start : data_start + size]))
        offset = cpio.align4(data_start + size)


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    root = tmp_path / "assets"
    root.mkdir()
    (tmp_path / "answers").mkdir()
    return root


@pytest.fixture
def resource(assets: Path) -> IResource:
    config = Config(
        answers_dir=assets.parent / "answers",
        assets_dir=assets,
        state_dir=assets.parent / "state",
    )
    return PxePilot(config, clock_at_now(), run_blocking=run_here).resource


# The catalogue and the menu


@pytest.mark.parametrize("where", ["pve-9.1", "proxmox-ve/9.1-1"])
def test_found_by_the_catalogue(assets: Path, where: str) -> None:
    """
    Directly in the assets directory or where the builder publishes, the directory is
    a version: product and release from the ISO's /.cd-info, the assistant's command
    line, the initrd and the ISO named proxmox.iso, and the composed initrd for UEFI.
    """
    iso = stand_in(assets / where)
    catalogue = scan(assets)
    assert catalogue.problems == ()
    [asset] = catalogue.assets
    assert (asset.directory, asset.product, asset.product_name, asset.version) == (
        where,
        "pve",
        "Proxmox VE",
        "9.1-1",
    )
    assert asset.initrds == (Initrd("initrd.img"), Initrd(iso.name, "proxmox.iso"))
    assert asset.initrds_for(efi=True) == (Initrd(COMBINED),)
    assert asset.kernel_cmdline.endswith("splash=silent proxmox-start-auto-installer")
    assert asset.answer_url == ANSWER_URL


def test_newest_first_beside_the_builders_versions(assets: Path) -> None:
    """
    Several such directories of one product are ordered by their releases.
    """
    stand_in(assets / "proxmox-ve" / "a", "9.0", "2")
    stand_in(assets / "proxmox-ve" / "b", "9.1", "1")
    assert [a.version for a in scan(assets).assets] == ["9.1-1", "9.0-2"]


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda d: (d / "x.iso").write_bytes(b"not an ISO" * 5000), "2 .iso files"),
        (
            lambda d: next(d.glob("*.iso")).write_bytes(b"\0" * 40000),
            "not an ISO 9660 image",
        ),
    ],
    ids=["two ISOs", "not an ISO"],
)
def test_what_cannot_be_read_is_a_problem(assets: Path, spoil: object, reason: str) -> None:
    stand_in(assets / "proxmox-ve" / "9.1-1")
    spoil(assets / "proxmox-ve" / "9.1-1")  # type: ignore[operator]
    catalogue = scan(assets)
    assert catalogue.assets == ()
    [(where, why)] = catalogue.problems
    assert where == "proxmox-ve/9.1-1" and reason in why


def test_an_iso_of_another_kind_is_a_problem(assets: Path) -> None:
    files = proxmox_files(info=b"PRODUCT='debian'\n", initrd=INITRD)
    prepare_iso_pxe(assets / "proxmox-ve" / "9.1-1", files)
    [(_, why)] = scan(assets).problems
    assert "not a Proxmox ISO" in why


def menu_for(assets: Path, platform: str) -> str:
    catalogue = scan(assets)
    [asset] = catalogue.assets
    return menu_script(
        catalogue.assets,
        "http://pxe.test/assets/",
        "http://pxe.test/menu.ipxe",
        Machine(platform=platform),
        Choice(asset.key, 5, "test"),
    )


def test_bios_menu_loads_the_iso_as_a_named_initrd(assets: Path) -> None:
    iso = stand_in(assets / "pve")
    script = menu_for(assets, "pcbios")
    base = "http://pxe.test/assets/pve/"
    assert (
        f"kernel {base}vmlinuz ramdisk_size=16777216 rw quiet splash=silent "
        "proxmox-start-auto-installer || goto failed\n"
        f"initrd {base}initrd.img || goto failed\n"
        f"initrd {base}{iso.name} proxmox.iso || goto failed\n"
    ) in script
    assert COMBINED not in script


def test_uefi_menu_loads_one_composed_initrd(assets: Path) -> None:
    """
    Debian's ipxe.efi would hand the ISO to the kernel unwrapped: UEFI machines load
    the composed initrd, named on the command line as that build needs.
    """
    iso = stand_in(assets / "pve")
    script = menu_for(assets, "efi")
    base = "http://pxe.test/assets/pve/"
    assert (
        "proxmox-start-auto-installer initrd=combined.img || goto failed\n"
        f"initrd {base}combined.img || goto failed\n"
        "boot || goto failed"
    ) in script
    assert iso.name not in script


# The composed initrd over HTTP


def get(resource: IResource, path: str, method: bytes = b"GET", **headers: bytes) -> object:
    return exchange(
        resource,
        f"/assets/{path}".encode(),
        method=method,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


def test_combined_initrd_is_the_initrd_then_a_newc_archive_holding_the_iso(
    resource: IResource, assets: Path
) -> None:
    """
    The gzip initrd, zeros to a 4-byte boundary, then an uncompressed newc archive
    whose one member, proxmox.iso, is the ISO, and its trailer: what the kernel unpacks
    into /proxmox.iso.
    """
    iso = stand_in(assets / "pve")
    reply = exchange(resource, b"/assets/pve/combined.img")
    assert reply.code == 200
    body = reply.body
    assert int(reply.headers["content-length"]) == len(body)
    assert reply.headers["content-type"] == "application/octet-stream"
    assert body.startswith(INITRD)
    start = cpio.align4(len(INITRD))
    assert body[len(INITRD) : start] == b"\0" * (start - len(INITRD))
    assert gzip.decompress(body[: len(INITRD)]).startswith(b"the installer's")
    assert unpack_newc(body[start:]) == [("proxmox.iso", iso.read_bytes())]


def test_ranges_anywhere_give_the_bytes_of_the_whole(resource: IResource, assets: Path) -> None:
    stand_in(assets / "pve")
    whole = exchange(resource, b"/assets/pve/combined.img").body
    size = len(whole)
    start = cpio.align4(len(INITRD))
    for first, last in [
        (0, 0),
        (len(INITRD) - 3, start + 120),  # the end of the initrd, the padding, the header
        (start + 100, start + 5000),  # the header's end and the ISO's start
        (size - 600, size - 1),  # the ISO's end, its padding and the trailer
        (7, size - 8),
    ]:
        reply = exchange(
            resource,
            b"/assets/pve/combined.img",
            headers={"Range": f"bytes={first}-{last}".encode()},
        )
        assert reply.code == 206
        assert reply.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert reply.body == whole[first : last + 1]
    suffix = exchange(resource, b"/assets/pve/combined.img", headers={"Range": b"bytes=-10"})
    assert suffix.body == whole[-10:]
    beyond = exchange(
        resource, b"/assets/pve/combined.img", headers={"Range": f"bytes={size}-".encode()}
    )
    assert (beyond.code, beyond.headers["content-range"]) == (416, f"bytes */{size}")


def test_head_and_validators(resource: IResource, assets: Path) -> None:
    """
    HEAD announces the length GET sends; the tag holds until either file changes, and a
    request that has it gets 304.
    """
    iso = stand_in(assets / "pve")
    full = exchange(resource, b"/assets/pve/combined.img")
    head = exchange(resource, b"/assets/pve/combined.img", method=b"HEAD")
    assert head.body == b""
    for name in ("content-length", "etag", "last-modified", "accept-ranges"):
        assert head.headers[name] == full.headers[name]
    etag = full.headers["etag"].encode()
    same = exchange(resource, b"/assets/pve/combined.img", headers={"If-None-Match": etag})
    assert same.code == 304
    ranged = exchange(
        resource,
        b"/assets/pve/combined.img",
        headers={"Range": b"bytes=0-9", "If-Range": etag},
    )
    assert ranged.code == 206
    time.sleep(0.01)
    os.utime(iso)
    changed = exchange(resource, b"/assets/pve/combined.img", headers={"If-None-Match": etag})
    assert changed.code == 200 and changed.headers["etag"] != full.headers["etag"]
    stale = exchange(
        resource,
        b"/assets/pve/combined.img",
        headers={"Range": b"bytes=0-9", "If-Range": etag},
    )
    assert stale.code == 200


def test_only_in_such_a_directory(resource: IResource, assets: Path) -> None:
    """
    Nowhere else is there a combined.img: not in a builder's version (with its
    asset.json), not in a directory of another shape, not in a hidden one.
    """
    stand_in(assets / "proxmox-ve" / "9.1-1")
    (assets / "proxmox-ve" / "9.1-1" / "asset.json").write_text("{}")
    (assets / "other").mkdir()
    (assets / "other" / "vmlinuz").write_bytes(b"kernel")
    stand_in(assets / ".hidden")
    for path in [
        b"/assets/proxmox-ve/9.1-1/combined.img",
        b"/assets/other/combined.img",
        b"/assets/.hidden/combined.img",
        b"/assets/combined.img",
        b"/assets/../combined.img",
    ]:
        assert exchange(resource, path).code == 404, path


def test_sent_as_the_transport_takes_it(resource: IResource, assets: Path) -> None:
    """
    A paused transport stops the reading; resumed, the rest follows in order.
    """
    stand_in(assets / "pve")
    whole = exchange(resource, b"/assets/pve/combined.img").body
    transport = PausingTransport()
    channel = connect(resource, transport)
    channel.dataReceived(b"GET /assets/pve/combined.img HTTP/1.1\r\nHost: x\r\n\r\n")
    first = body_of(transport)
    assert 0 < len(first) < len(whole)
    transport.drain()
    assert body_of(transport) == whole
    assert not transport.disconnecting


def test_a_large_iso_is_never_read_whole(resource: IResource, assets: Path) -> None:
    """
    The end of a 3 GiB ISO (a sparse file) comes at once: only the range is read.
    """
    directory = assets / "pve"
    stand_in(directory)
    iso = next(directory.glob("*.iso"))
    with open(iso, "r+b") as f:
        f.truncate(3 << 30)
    began = time.monotonic()
    reply = exchange(resource, b"/assets/pve/combined.img", headers={"Range": b"bytes=-2048"})
    assert time.monotonic() - began < 5
    assert reply.code == 206
    assert reply.body.endswith(cpio.trailer())
    assert reply.headers["content-range"].endswith(
        f"/{size_of(combined_layout(len(INITRD), 3 << 30))}"
    )


def test_layout_pieces_cover_every_range() -> None:
    layout = combined_layout(10, 7)
    size = size_of(layout)
    whole = b"".join(
        p.source if isinstance(p.source, bytes) else p.source[:1].encode() * p.length
        for p in layout
    )
    assert len(whole) == size
    for first in range(size):
        for length in range(1, size - first + 1):
            pieces = pieces_in(layout, first, length)
            assert sum(p.length for p in pieces) == length
            got = b"".join(
                p.source if isinstance(p.source, bytes) else p.source[:1].encode() * p.length
                for p in pieces
            )
            assert got == whole[first : first + length]


def test_an_iso_too_large_for_cpio() -> None:
    with pytest.raises(ValueError, match="4 GiB"):
        combined_layout(10, 1 << 32)


def test_an_iso_too_large_for_cpio_is_loaded_named_on_uefi_too(
    resource: IResource, assets: Path
) -> None:
    directory = assets / "pve"
    stand_in(directory)
    iso = next(directory.glob("*.iso"))
    with open(iso, "r+b") as f:
        f.truncate(5 << 30)
    [asset] = scan(assets).assets
    assert asset.initrds_for(efi=True) == asset.initrds
    assert exchange(resource, b"/assets/pve/combined.img").code == 404


def test_a_download_broken_off_closes_both_files(resource: IResource, assets: Path) -> None:
    """
    A machine that goes away mid-download leaves no file open behind it.
    """
    stand_in(assets / "pve")
    before = len(os.listdir("/proc/self/fd"))
    channel = connect(resource, PausingTransport())
    channel.dataReceived(b"GET /assets/pve/combined.img HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(os.listdir("/proc/self/fd")) == before + 2
    channel.connectionLost(Failure(ConnectionLost("the machine went away")))
    assert len(os.listdir("/proc/self/fd")) == before


# Over a socket: the kernel sends the files' stretches, as it does any asset's


@pytest_twisted.async_yield_fixture
async def base_url(resource: IResource) -> AsyncIterator[str]:
    """
    The site listening on 127.0.0.1 on a free port.
    """
    from twisted.internet import reactor

    port = reactor.listenTCP(0, cast(Any, PxePilotSite(resource)), interface="127.0.0.1")
    yield f"http://127.0.0.1:{cast(IPv4Address, port.getHost()).port}"
    await maybeDeferred(port.stopListening)


@pytest_twisted.ensureDeferred
async def test_combined_initrd_over_a_socket(
    resource: IResource, assets: Path, base_url: str, sendfile_calls: list[int]
) -> None:
    """
    Over TCP the combined initrd is the same bytes, whole or in ranges across its
    pieces, with the initrd's and the ISO's stretches sent by the kernel.
    """
    iso = stand_in(assets / "pve")
    with open(iso, "ab") as f:
        # Larger than a socket's buffers, so the kernel sends it in several calls.
        f.write(os.urandom(12 << 20))
    whole = exchange(resource, b"/assets/pve/combined.img").body
    url = f"{base_url}/assets/pve/combined.img"
    response = await treq.get(url, persistent=False)
    assert await response.content() == whole
    assert sum(sendfile_calls) == len(INITRD) + iso.stat().st_size
    assert len([sent for sent in sendfile_calls if sent]) > 2
    start = cpio.align4(len(INITRD))
    for first, last in [(len(INITRD) - 3, start + 120), (start + 100, len(whole) - 1)]:
        ranged = await treq.get(
            url, headers=Headers({"Range": [f"bytes={first}-{last}"]}), persistent=False
        )
        assert ranged.code == 206
        assert await ranged.content() == whole[first : last + 1]


@pytest_twisted.ensureDeferred
async def test_iso_truncated_during_a_socket_download(
    assets: Path, base_url: str, events: list[LogEvent]
) -> None:
    """
    An ISO cut short in place while the kernel sends the combined initrd ends the
    connection early: the client sees a failed download, not a short one.
    """
    iso = stand_in(assets / "pve")
    with open(iso, "r+b") as f:
        f.truncate(256 << 20)  # far more than the socket buffers hold
    response = await treq.get(f"{base_url}/assets/pve/combined.img", persistent=False)
    received = [0]

    def receive(chunk: bytes) -> None:
        if not received[0]:
            os.truncate(iso, 1 << 20)
        received[0] += len(chunk)

    with pytest.raises(ResponseFailed):
        await treq.collect(response, receive)
    assert 0 < received[0] < response.length
    [failed] = [e for e in events if "sending an asset failed" in e.get("log_format", "")]
    assert "shrank" in failed["error"]
