"""
C{/ipxe/<name>}: the TFTP root's iPXE binaries over HTTP for UEFI HTTP Boot firmware,
plain names only, and the chain script for an iPXE that asks for itself again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogEvent
from twisted.web.resource import IResource
from zope.interface import implementer

from pxepilot import Config, PxePilot
from pxepilot.events import DownloadEnded, DownloadStarted, IEventObserver
from pxepilot.hosts.ledger import run_here
from tests.conftest import clock_at_now
from tests.test_asset_files import Reply, exchange

FIRMWARE = b"UefiHttpBoot/1.0"
IPXE = b"iPXE/1.21.1+ (g36a4)"
# Enough of a PE image that names iPXE in its data, as iPXE's EFI images do.
IPXE_EFI = b"MZ" + bytes(200) + b"iPXE - Open Source Network Boot Firmware" + bytes(5000)
OTHER_EFI = b"MZ" + bytes(200) + b"GNU GRUB" + bytes(5000)
SECRET = b"outside the TFTP root"
# The peer of Twisted's in-memory transport.
PEER = "192.168.1.1"


@pytest.fixture
def tftp_root(tmp_path: Path) -> Path:
    root = tmp_path / "ipxe"
    (root / "qemu").mkdir(parents=True)
    (root / "snponly.efi").write_bytes(IPXE_EFI)
    (root / "custom.efi").write_bytes(IPXE_EFI)
    (root / "grubx64.efi").write_bytes(OTHER_EFI)
    (root / ".hidden").write_bytes(SECRET)
    (root / "qemu" / "pxe-virtio.rom").write_bytes(SECRET)
    # As Debian's ipxe package has it: the root's ipxe.efi is a link to /boot.
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "ipxe.efi").write_bytes(IPXE_EFI)
    (root / "ipxe.efi").symlink_to(tmp_path / "boot" / "ipxe.efi")
    (tmp_path / "secret").write_bytes(SECRET)
    return root


@implementer(IEventObserver)
class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def observe(self, event: object) -> None:
        self.events.append(event)


def pilot(tmp_path: Path, tftp_root: Path, **config: Any) -> PxePilot:
    (tmp_path / "answers").mkdir(exist_ok=True)
    settings = Config(
        answers_dir=tmp_path / "answers",
        assets_dir=tmp_path / "assets",
        state_dir=tmp_path / "state",
        tftp_root=tftp_root,
        **config,
    )
    return PxePilot(settings, clock_at_now(), run_blocking=run_here)


@pytest.fixture
def resource(tmp_path: Path, tftp_root: Path) -> IResource:
    return pilot(tmp_path, tftp_root).resource


def fetch(
    resource: IResource, path: str, agent: bytes | None = FIRMWARE, method: bytes = b"GET"
) -> Reply:
    headers = {"User-Agent": agent} if agent is not None else {}
    return exchange(resource, path.encode(), method=method, headers=headers)


@pytest.mark.parametrize("name", ["ipxe.efi", "snponly.efi", "grubx64.efi"])
def test_firmware_gets_the_file(resource: IResource, tftp_root: Path, name: str) -> None:
    """
    HTTP Boot firmware gets the file as it is in the TFTP root (through a link that
    leads out of it, as Debian's C{ipxe.efi} does), with its length and a binary type.
    """
    reply = fetch(resource, f"/ipxe/{name}")
    data = (tftp_root / name).read_bytes()
    assert (reply.code, reply.body) == (200, data)
    assert reply.headers["content-length"] == str(len(data))
    assert reply.headers["content-type"] == "application/octet-stream"


def test_head_announces_the_file(resource: IResource, tftp_root: Path) -> None:
    """
    OVMF's HTTP Boot asks with HEAD first: the length of the file, and no body.
    """
    reply = fetch(resource, "/ipxe/ipxe.efi", method=b"HEAD")
    assert (reply.code, reply.body) == (200, b"")
    assert reply.headers["content-length"] == str(len(IPXE_EFI))
    assert reply.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("agent", [FIRMWARE, None, b"curl/8.5.0", b"ipxe", b"Mozilla/5.0 iPXE/"])
def test_anything_but_ipxe_gets_the_file(resource: IResource, agent: bytes | None) -> None:
    reply = fetch(resource, "/ipxe/ipxe.efi", agent=agent)
    assert (reply.code, reply.body) == (200, IPXE_EFI)


@pytest.mark.parametrize("name", ["ipxe.efi", "snponly.efi", "custom.efi"])
def test_ipxe_asking_for_ipxe_gets_the_chain_script(resource: IResource, name: str) -> None:
    """
    The DHCP loop over HTTP: an iPXE that asks for an iPXE binary (by its usual name,
    or a renamed one by its content) is sent on to the boot script.
    """
    reply = fetch(resource, f"/ipxe/{name}", agent=IPXE)
    assert reply.code == 200
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.body.startswith(b"#!ipxe\n")
    assert re.findall(rb"^chain --autofree (\S+)", reply.body, re.M)[0] == (
        b"http://pxe.test/boot.ipxe"
    )
    assert reply.headers["content-length"] == str(len(reply.body))
    head = fetch(resource, f"/ipxe/{name}", agent=IPXE, method=b"HEAD")
    assert (head.code, head.body) == (200, b"")
    assert head.headers["content-length"] == str(len(reply.body))


def test_ipxe_asking_for_another_program_gets_it(resource: IResource) -> None:
    reply = fetch(resource, "/ipxe/grubx64.efi", agent=IPXE)
    assert (reply.code, reply.body) == (200, OTHER_EFI)


def test_chain_script_names_the_public_url(tmp_path: Path, tftp_root: Path) -> None:
    resource = pilot(tmp_path, tftp_root, public_url="http://pxe.example:9000/").resource
    reply = fetch(resource, "/ipxe/ipxe.efi", agent=IPXE)
    assert b"chain --autofree http://pxe.example:9000/boot.ipxe " in reply.body


@pytest.mark.parametrize(
    "path",
    [
        "/ipxe/",
        "/ipxe/qemu",
        "/ipxe/qemu/pxe-virtio.rom",
        "/ipxe/qemu%2fpxe-virtio.rom",
        "/ipxe/.hidden",
        "/ipxe/..",
        "/ipxe/../secret",
        "/ipxe/..%2fsecret",
        "/ipxe/%2e%2e%2fsecret",
        "/ipxe/%2E%2E/secret",
        "/ipxe/%2fetc%2fpasswd",
        "/ipxe/ipxe.efi%00",
        "/ipxe/ipxe.efi/",
        "/ipxe/-rf",
        "/ipxe/%C3%A9.efi",
        "/ipxe/missing.efi",
        "/ipxe/" + "a" * 200,
    ],
)
def test_only_plain_names_in_the_root(resource: IResource, path: str) -> None:
    """
    Nothing below or outside the root, no hidden file, no listing: a short 404.
    """
    for agent in (FIRMWARE, IPXE):
        reply = fetch(resource, path, agent=agent)
        assert reply.code in (404, 308), path
        assert SECRET not in reply.body
        assert b"#!ipxe" not in reply.body
        if reply.code == 404:
            assert len(reply.body) < 100


def test_without_a_tftp_root(tmp_path: Path) -> None:
    """
    A TFTP root that is not there is named in the 404.
    """
    missing = tmp_path / "no-ipxe-here"
    reply = fetch(pilot(tmp_path, missing).resource, "/ipxe/ipxe.efi")
    assert reply.code == 404
    assert f"no TFTP root: {missing} is not a directory".encode() in reply.body


def test_download_is_an_event(tmp_path: Path, tftp_root: Path) -> None:
    """
    The firmware's download shows in the host's timeline as the assets' do; the HEAD
    before it and the chain script are not downloads.
    """
    served = pilot(tmp_path, tftp_root)
    recorder = Recorder()
    served.events.subscribe(recorder)
    fetch(served.resource, "/ipxe/ipxe.efi", method=b"HEAD")
    fetch(served.resource, "/ipxe/ipxe.efi", agent=IPXE)
    assert recorder.events == []
    fetch(served.resource, "/ipxe/ipxe.efi")
    started, ended = recorder.events
    assert started == DownloadStarted(PEER, "ipxe/ipxe.efi", len(IPXE_EFI))
    assert isinstance(ended, DownloadEnded)
    assert (ended.path, ended.sent, ended.complete) == ("ipxe/ipxe.efi", len(IPXE_EFI), True)


def test_fetches_are_logged(resource: IResource, events: list[LogEvent]) -> None:
    """
    Who fetched which binary is logged, the client's User-Agent made printable; the
    chain script too.
    """
    fetch(resource, "/ipxe/ipxe.efi", agent=b"UefiHttpBoot/1.0\x1b[2J")
    fetch(resource, "/ipxe/snponly.efi", agent=IPXE)
    logged = [
        e["log_format"].format(**e)
        for e in events
        if e.get("log_namespace", "").endswith("ipxe_files")
    ]
    assert logged == [
        f"HTTP {PEER}: UefiHttpBoot/1.0?[2J fetches ipxe/ipxe.efi",
        f"HTTP {PEER}: iPXE asked for ipxe/snponly.efi; it gets the chain script to the menu",
    ]
