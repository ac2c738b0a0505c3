"""
proxyDHCP in QEMU: the network's DHCP server (on another host) hands out addresses and
nothing else; pxe-pilot with --proxy-dhcp gives PXE clients their boot file, and the
BIOS and UEFI guests of the boot chain tests reach their answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.e2e import lab
from tests.e2e.test_boot_chain import BOOT_TIMEOUT, Guest

pytestmark = pytest.mark.e2e

BIOS = Guest("proxy-bios", "bios", "52:54:00:00:01:b1", reports=True)
UEFI = Guest("proxy-uefi", "uefi", "52:54:00:00:01:e1", reports=True)


@attrs.frozen
class ProxyLab:
    directory: Path
    pilot: lab.Process
    dhcp: lab.Process


@pytest.fixture(scope="module")
def proxy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyLab]:
    lab.require()
    directory = tmp_path_factory.mktemp("proxy-lab")
    iso = directory / "proxmox-ve.iso"
    lab.synthetic_iso(iso)
    assets = lab.built_assets(iso, directory / "assets")
    lab.host_answers(directory, {guest.mac: guest.answer for guest in (BIOS, UEFI)})
    with lab.network(), lab.other_dhcp_server(directory) as dhcp:
        pilot = lab.pxe_pilot(directory, directory / "answers", assets, "--proxy-dhcp")
        try:
            pilot.wait_for(r"proxyDHCP listening on 0\.0\.0\.0:4011", 30)
            yield ProxyLab(directory, pilot, dhcp)
        finally:
            pilot.stop()


@pytest.mark.parametrize("guest", [BIOS, UEFI], ids=lambda g: g.firmware)
def test_proxy_dhcp_boot_reaches_the_answer(proxy_lab: ProxyLab, guest: Guest) -> None:
    """
    SeaBIOS with QEMU's iPXE ROM, and OVMF's own PXE client: the address comes from
    the network's DHCP server, the boot file from pxe-pilot's proxyDHCP (the firmware
    gets the iPXE binary, iPXE the URL of boot.ipxe), and the guest installs with its
    own answer. The DHCP server was never asked for a boot file and gave none.
    """
    with lab.tap(f"tap-{guest.name}"[:15]) as tap:
        vm = lab.qemu(proxy_lab.directory, f"vm-{guest.name}", guest.firmware, guest.mac, tap)
        try:
            vm.wait_for(lab.WEBHOOK_SENT, BOOT_TIMEOUT)
            console = vm.text
        finally:
            vm.stop()
    assert lab.answer_of(console) == guest.answer
    log = proxy_lab.pilot.text
    assert re.search(rf"proxyDHCP (offered|acked) to {guest.mac} on port \d+: iPXE: ", log), log
    if guest.firmware == "uefi":
        # The firmware itself was sent to pxe-pilot's TFTP server for ipxe.efi.
        assert re.search(rf"proxyDHCP \w+ to {guest.mac} on port \d+: UEFI x86-64: ipxe.efi", log)
    offers = proxy_lab.dhcp.text
    assert guest.mac in offers.lower()
    assert (
        "boot"
        not in " ".join(
            line for line in offers.splitlines() if "DHCPOFFER" in line and guest.mac in line
        ).lower()
    )
