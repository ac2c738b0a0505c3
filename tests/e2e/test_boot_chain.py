"""
From power-on to the installer's answer with no keystroke, in QEMU: DHCP with options
66/67 only, pxe-pilot's TFTP and HTTP, assets made by pxe-pilot-builder from a
synthetic Proxmox ISO whose kernel is Debian's and whose initrd acts like the installer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.e2e import lab

pytestmark = pytest.mark.e2e

# Over HTTPS, as the builder pins it: the assets are built against the running server.
ANSWER_URL = lab.HTTPS_ANSWER_URL
WEBHOOK_URL = f"https://{lab.BRIDGE_ADDRESS}:8443/webhook"
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
    reports: bool = False

    @property
    def answer(self) -> str:
        # A whole answer that the 9.1 installer the fake one claims to be accepts:
        # pxe-pilot checks it before serving it.
        text = (
            f"# answer for {self.name} ({self.mac})\n"
            "[global]\n"
            'keyboard = "en-us"\n'
            'country = "us"\n'
            f'fqdn = "{self.name}.lab.test"\n'
            'mailto = "ops@lab.test"\n'
            'timezone = "UTC"\n'
            'root-password = "lab-password"\n'
            "\n[network]\n"
            'source = "from-dhcp"\n'
            "\n[disk-setup]\n"
            'filesystem = "ext4"\n'
            'disk-list = ["sda"]\n'
        )
        if self.reports:
            text += f'\n[post-installation-webhook]\nurl = "{WEBHOOK_URL}"\n'
        return text


BIOS = Guest("bios", "bios", "52:54:00:00:00:b1")
UEFI = Guest("uefi", "uefi", "52:54:00:00:00:e1")
UEFI_SNPONLY = Guest("uefi-snponly", "uefi", "52:54:00:00:00:e2")
UNKNOWN = Guest("unknown", "bios", "52:54:00:00:00:f1")
# Reports its installation, as an answer with [post-installation-webhook] makes it.
REPORTING = Guest("reporting", "bios", "52:54:00:00:00:b2", reports=True)


@pytest.fixture(scope="module")
def pxe_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab.require()
    directory = tmp_path_factory.mktemp("lab")
    iso = directory / "proxmox-ve.iso"
    lab.synthetic_iso(iso)
    assets = directory / "assets"
    assets.mkdir()
    lab.host_answers(
        directory, {guest.mac: guest.answer for guest in (BIOS, UEFI, UEFI_SNPONLY, REPORTING)}
    )
    with lab.network():
        dhcp = lab.dnsmasq(directory, snponly=(UEFI_SNPONLY.mac,))
        try:
            pilot = lab.pxe_pilot(directory, directory / "answers", assets)
            try:
                lab.built_assets(iso, assets, ANSWER_URL)
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


def test_assets_pin_the_running_servers_certificate(pxe_lab: Lab) -> None:
    """
    Built against the running pxe-pilot, the asset pins the certificate pxe-pilot logged
    at start-up, and /health finds no asset pinned to another.
    """
    logged = re.search(
        r"HTTPS certificate \(generated\) SHA-256 ([0-9A-F:]{95})", pxe_lab.pilot.text
    )
    assert logged, pxe_lab.pilot.text
    [metadata] = (pxe_lab.directory / "assets").glob("*/*/asset.json")
    answer = json.loads(metadata.read_text())["answer"]
    assert (answer["url"], answer["cert_fingerprint"]) == (ANSWER_URL, logged[1])
    health = json.loads(
        lab.run(*lab.netns("curl", "-sk", ANSWER_URL.replace("answer", "health"))).stdout
    )
    assert health["tls"]["fingerprint"] == logged[1]
    assert "pinned_to_another_certificate" not in health["assets"]


def test_host_without_answer_boots_from_local_disk(pxe_lab: Lab) -> None:
    """
    A machine no answer file covers is not installed: the menu's default boots the
    local disk, and the installer is never loaded.
    """
    console = boot(pxe_lab, UNKNOWN, "Booting from the local disk")
    assert lab.ANSWER_BEGIN not in console
    assert "Loading Proxmox" not in console
    assert f"menu for {UNKNOWN.mac}" in pxe_lab.pilot.text


def state_of(guest: Guest) -> dict[str, object]:
    shown = lab.pxe_pilot_command("status", guest.mac)
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    return {"state": first.split(": ", 1)[1].split(" since ")[0], "text": shown.stdout}


def test_installed_host_boots_locally_until_reinstalled(pxe_lab: Lab) -> None:
    """
    Install once: the guest installs and reports through the webhook; pxe-pilot shows
    it installed; its next network boot takes the local disk with no keystroke; after
    C{pxe-pilot reinstall} the boot after that installs again.
    """
    console = boot(pxe_lab, REPORTING, lab.WEBHOOK_SENT)
    assert lab.answer_of(console) == REPORTING.answer
    assert f'{lab.WEBHOOK_SENT} {{"mac":"{REPORTING.mac}","state":"installed"}}' in console
    installed = state_of(REPORTING)
    assert installed["state"] == "installed", installed["text"]
    fqdn = f"{REPORTING.name}.lab.test"  # from its answer, as the installer reports it
    listing = lab.pxe_pilot_command("hosts")
    row = next(line for line in listing.stdout.splitlines() if line.startswith(REPORTING.mac))
    assert fqdn in row and "10.99.0." in row, listing.stdout

    console = boot(pxe_lab, REPORTING, "Booting from the local disk")
    assert lab.ANSWER_BEGIN not in console
    assert "Loading Proxmox" not in console
    assert state_of(REPORTING)["state"] == "local-boot"

    rearmed = lab.pxe_pilot_command("reinstall", REPORTING.mac)
    assert rearmed.returncode == 0, rearmed.stderr
    console = boot(pxe_lab, REPORTING, lab.WEBHOOK_SENT)
    assert lab.answer_of(console) == REPORTING.answer
    timeline = state_of(REPORTING)["text"]
    assert isinstance(timeline, str)
    # TFTP, the scripts and the downloads were all placed on this host's timeline.
    for kind in ("tftp", "script", "download-ended", "answer-served", "installed", "rearmed"):
        assert f" {kind} " in timeline, timeline
