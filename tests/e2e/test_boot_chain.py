"""
From power-on to the installer's answer with no keystroke, in QEMU: DHCP with options
66/67 only, pxe-pilot's TFTP and HTTP, assets made by pxe-pilot-builder from a
synthetic Proxmox ISO whose kernel is Debian's and whose initrd acts like the installer.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.e2e import lab

pytestmark = pytest.mark.e2e

ANSWER_URL = f"http://{lab.BRIDGE_ADDRESS}:8080/answer"
# Software emulation of a whole boot (firmware, iPXE, a 60 MB initrd, the kernel) takes
# under a minute here; the bound only keeps a hung guest from hanging the run.
BOOT_TIMEOUT = 600


@attrs.frozen
class Lab:
    directory: Path
    pilot: lab.Process


@attrs.frozen
class Guest:
    name: str
    firmware: str
    mac: str

    @property
    def answer(self) -> str:
        return f'[global]\nkeyboard = "en-us"\n# answer for {self.name} ({self.mac})\n'


BIOS = Guest("bios", "bios", "52:54:00:00:00:b1")
UEFI = Guest("uefi", "uefi", "52:54:00:00:00:e1")
UEFI_SNPONLY = Guest("uefi-snponly", "uefi", "52:54:00:00:00:e2")
UNKNOWN = Guest("unknown", "bios", "52:54:00:00:00:f1")


@pytest.fixture(scope="module")
def pxe_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab.require()
    directory = tmp_path_factory.mktemp("lab")
    iso = directory / "proxmox-ve.iso"
    lab.synthetic_iso(iso)
    assets = directory / "assets"
    built = subprocess.run(
        [
            str(lab.VENV_BIN / "pxe-pilot-builder"),
            "--iso",
            str(iso),
            "--answer-url",
            ANSWER_URL,
            "--output",
            str(assets),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    hosts = directory / "answers" / "hosts"
    hosts.mkdir(parents=True)
    for guest in (BIOS, UEFI, UEFI_SNPONLY):
        (hosts / f"{guest.mac.replace(':', '-')}.toml").write_text(guest.answer)
    with lab.network():
        dhcp = lab.dnsmasq(directory, snponly=(UEFI_SNPONLY.mac,))
        try:
            pilot = lab.pxe_pilot(directory, directory / "answers", assets)
            try:
                yield Lab(directory, pilot)
            finally:
                pilot.stop()
        finally:
            dhcp.stop()


def boot(pxe_lab: Lab, guest: Guest, until: str) -> str:
    """
    Boot the guest until its console shows C{until}; its console output.
    """
    with lab.tap(f"tap-{guest.name}"[:15]) as tap:
        vm = lab.qemu(pxe_lab.directory, f"vm-{guest.name}", guest.firmware, guest.mac, tap)
        try:
            vm.wait_for(until, BOOT_TIMEOUT)
            return vm.text
        finally:
            vm.stop()


@pytest.mark.parametrize("guest", [BIOS, UEFI, UEFI_SNPONLY], ids=lambda g: g.name)
def test_boot_reaches_the_answer(pxe_lab: Lab, guest: Guest) -> None:
    """
    SeaBIOS with QEMU's iPXE ROM (e1000), and OVMF's own PXE client (virtio-net, no
    option ROM) loading the distribution's ipxe.efi or snponly.efi over pxe-pilot's TFTP:
    each reaches the menu without a DHCP loop, takes the default (install the newest
    Proxmox VE, as the host has an answer), boots the installer with the ISO in its
    initrd, and the installer prints the answer file of its own MAC.
    """
    console = boot(pxe_lab, guest, lab.ANSWER_END)
    assert lab.answer_of(console) == guest.answer
    log = pxe_lab.pilot.text
    platform = "pcbios" if guest.firmware == "bios" else "efi"
    # The distribution's iPXE has no ${memsize}: the memory comes from SMBIOS.
    menu = f"menu for {guest.mac} at 10.99.0.[0-9]+ \\({platform}, {lab.GUEST_MEMORY_MIB} MiB\\)"
    assert re.search(menu, log), log
    assert f"WARNING: {lab.GUEST_MEMORY_MIB} MiB of memory" in console
    assert f"MACs {guest.mac}): served hosts/{guest.mac.replace(':', '-')}.toml" in log


def test_host_without_answer_boots_from_local_disk(pxe_lab: Lab) -> None:
    """
    A machine no answer file covers is not installed: the menu's default boots the
    local disk, and the installer is never loaded.
    """
    console = boot(pxe_lab, UNKNOWN, "Booting from the local disk")
    assert lab.ANSWER_BEGIN not in console
    assert "Loading Proxmox" not in console
    assert f"menu for {UNKNOWN.mac}" in pxe_lab.pilot.text
