"""
Secure Boot left on, in QEMU: OVMF's Secure Boot build with Microsoft's keys enrolled
runs only signed code. The DHCP server hands the machine chosen for Secure Boot
C{shimx64.efi} from pxe-pilot (Debian's signed shim, from C{--secure-boot-dir}); shim
loads Debian's signed network GRUB from beside it; GRUB reads its menu from pxe-pilot
over TFTP and loads the lab's signed Debian kernel and the fake installer's initrd over
pxe-pilot's TFTP; the kernel reports Secure Boot on, and the installer gets its answer.
The same firmware handed Debian's unsigned iPXE refuses to run it.

Both with a DHCP server that hands out the boot file (dnsmasq), and with pxe-pilot's
proxyDHCP choosing by the hosts' boot settings beside a DHCP server (Kea) that names
pxe-pilot as next server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest

from tests.e2e import lab, secure_boot_lab
from tests.e2e.test_boot_chain import BOOT_TIMEOUT, Guest

pytestmark = pytest.mark.e2e

SIGNED = Guest("sb-signed", "uefi", "52:54:00:00:05:e1")
UNSIGNED = Guest("sb-unsigned", "uefi", "52:54:00:00:05:e2")
# No boot setting: --secure-boot auto decides from what its first boot showed.
AUTO = Guest("sb-auto", "uefi", "52:54:00:00:05:e3")
# What the firmware says when the image it loaded is not signed by a key it trusts.
REFUSED = "Access Denied"


@attrs.frozen
class SecureBootLab:
    directory: Path
    pilot: lab.Process
    setup: str


@contextmanager
def dhcp_server(directory: Path, setup: str) -> Iterator[list[str]]:
    """
    The network's DHCP server for C{setup}, and the options pxe-pilot needs with it.

    C{dhcp-server}: dnsmasq hands out the boot file, C{shimx64.efi} for the machine
    chosen for Secure Boot. C{proxy-dhcp}: Kea hands out addresses and names pxe-pilot
    as next server (GRUB asks that server for its menu), and pxe-pilot's proxyDHCP
    sends shim to the host whose boot settings say C{secure-boot = "always"}.
    """
    if setup == "dhcp-server":
        dhcp = secure_boot_lab.dnsmasq(directory, shim=(SIGNED.mac,))
        try:
            yield []
        finally:
            dhcp.stop()
        return
    answers = directory / "answers" / "hosts"
    for guest, choice in ((SIGNED, "always"), (UNSIGNED, "never")):
        name = f"{guest.mac.replace(':', '-')}.boot.toml"
        (answers / name).write_text(f'secure-boot = "{choice}"\n')
    with lab.kea_server(directory, {"next-server": lab.BRIDGE_ADDRESS}, version=4):
        yield ["--proxy-dhcp"]


@pytest.fixture(scope="module", params=["dhcp-server", "proxy-dhcp"])
def secure_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureBootLab]:
    secure_boot_lab.require()
    directory = tmp_path_factory.mktemp(f"secure-boot-{request.param}")
    iso = directory / "proxmox-ve.iso"
    lab.synthetic_iso(iso)
    assets = lab.built_assets(iso, directory / "assets")
    lab.host_answers(directory, {guest.mac: guest.answer for guest in (SIGNED, UNSIGNED, AUTO)})
    pieces = secure_boot_lab.signed_pieces(directory)
    with lab.network(), dhcp_server(directory, request.param) as options:
        pilot = lab.pxe_pilot(
            directory,
            directory / "answers",
            assets,
            "--secure-boot-dir",
            str(pieces),
            # The kernel's notices, past the asset's "quiet": Secure Boot and lockdown.
            "--kernel-args",
            "console=ttyS0,115200 loglevel=7",
            *options,
        )
        try:
            yield SecureBootLab(directory, pilot, request.param)
        finally:
            pilot.stop()


def boot(secure_lab: SecureBootLab, guest: Guest, until: str) -> str:
    with lab.tap(f"tap-{guest.name}"[:15]) as tap:
        vm = secure_boot_lab.secure_qemu(secure_lab.directory, f"vm-{guest.name}", guest.mac, tap)
        try:
            vm.wait_for(until, BOOT_TIMEOUT)
            return vm.text
        finally:
            vm.stop()


def test_signed_chain_reaches_the_answer_with_secure_boot_enforced(
    secure_lab: SecureBootLab,
) -> None:
    """
    The firmware loads shim, shim GRUB, GRUB its menu, then the kernel and initrd, all
    from pxe-pilot; the kernel says Secure Boot is on; the fake installer prints the
    answer of its own MAC; the host's record says it booted through the signed chain.
    """
    console = boot(secure_lab, SIGNED, lab.ANSWER_END)
    assert lab.answer_of(console) == SIGNED.answer
    # The kernel's own words: booted with Secure Boot enforced by the firmware.
    assert re.search(r"secureboot: Secure boot enabled", console), console[-6000:]
    log = secure_lab.pilot.text
    if secure_lab.setup == "proxy-dhcp":
        offered = rf"proxyDHCP acked to {SIGNED.mac} on port 4011: UEFI x86-64, Secure Boot: shim"
        assert re.search(offered, log), log
    assert re.search(
        rf"GRUB menu for {SIGNED.mac} at 10\.99\.0\.\d+ \({lab.GUEST_MEMORY_MIB}", log
    )
    # The memory warning, from the sizes GRUB read from SMBIOS.
    assert f"WARNING: {lab.GUEST_MEMORY_MIB} MiB of memory" in console
    shown = lab.run(
        *lab.netns("curl", "-sf", f"http://{lab.BRIDGE_ADDRESS}:8080/hosts/{SIGNED.mac}/status")
    )
    host = json.loads(shown.stdout)
    assert host["secure_boot_at"] is not None, host
    files = [e["detail"].get("file") for e in host["timeline"] if e["kind"] == "tftp"]
    assert {"shimx64.efi", "grubx64.efi"} <= set(files), files
    assert any(f and f.startswith("grub/menu-01-") for f in files), files


def test_unsigned_ipxe_is_refused_by_the_firmware(secure_lab: SecureBootLab) -> None:
    """
    The same firmware, handed Debian's unsigned ipxe.efi, downloads it from pxe-pilot
    and refuses to run it: enforcement is on.
    """
    console = boot(secure_lab, UNSIGNED, REFUSED)
    log = secure_lab.pilot.text
    assert re.search(r"TFTP 10\.99\.0\.\d+ ipxe.efi: complete", log), log
    if secure_lab.setup == "proxy-dhcp":
        offered = rf"proxyDHCP acked to {UNSIGNED.mac} on port 4011: UEFI x86-64: ipxe.efi"
        assert re.search(offered, log), log
    assert "iPXE" not in console
    assert f"menu for {UNSIGNED.mac}" not in log


@pytest.mark.parametrize("secure_lab", ["proxy-dhcp"], indirect=True)
def test_auto_sends_shim_after_the_firmware_refused_ipxe(secure_lab: SecureBootLab) -> None:
    """
    With C{--secure-boot auto} and no boot setting, a machine first gets iPXE over
    proxyDHCP, as any UEFI machine; its firmware refuses it. On its next network boot
    pxe-pilot, having seen iPXE loaded and never run, sends shim, and the machine
    reaches its answer through the signed chain.
    """
    console = boot(secure_lab, AUTO, REFUSED)
    assert "iPXE" not in console
    log = secure_lab.pilot.text
    offered = rf"proxyDHCP acked to {AUTO.mac} on port 4011: UEFI x86-64: ipxe.efi"
    assert re.search(offered, log), log
    console = boot(secure_lab, AUTO, lab.ANSWER_END)
    assert lab.answer_of(console) == AUTO.answer
    assert re.search(r"secureboot: Secure boot enabled", console), console[-6000:]
    log = secure_lab.pilot.text
    assert f"{AUTO.mac} is sent shim: iPXE was loaded but never asked" in log, log
