"""
UEFI HTTP Boot in QEMU: OVMF with its PXE entries turned off loads ipxe.efi from
pxe-pilot's /ipxe/ over HTTP, with no TFTP at all, and reaches the answer; once with
pxe-pilot's proxyDHCP beside a DHCP server that gives addresses only, once with the
DHCP server's own HTTPClient options from docs/dhcp.md (dnsmasq's, and Kea's).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest

from tests.e2e import lab, recipes
from tests.e2e.test_boot_chain import BOOT_TIMEOUT, Guest

pytestmark = pytest.mark.e2e

PROXY = Guest("http-proxy", "uefi", "52:54:00:00:02:e1", reports=True)
SERVER = Guest("http-server", "uefi", "52:54:00:00:02:e2", reports=True)
KEA = Guest("http-kea", "uefi", "52:54:00:00:02:e3", reports=True)
# OVMF tries PXE over IPv4 and IPv6 before HTTP, each for about a minute when nothing
# answers: without its PXE entries, HTTP Boot over IPv4 comes first.
NO_PXE = [
    "-fw_cfg",
    "name=opt/org.tianocore/IPv4PXESupport,string=n",
    "-fw_cfg",
    "name=opt/org.tianocore/IPv6PXESupport,string=n",
]


@attrs.frozen
class Built:
    directory: Path
    assets: Path
    answers: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    lab.require()
    directory = tmp_path_factory.mktemp("http-boot")
    iso = directory / "proxmox-ve.iso"
    lab.synthetic_iso(iso)
    assets = lab.built_assets(iso, directory / "assets")
    lab.host_answers(directory, {guest.mac: guest.answer for guest in (PROXY, SERVER, KEA)})
    return Built(directory, assets, directory / "answers")


def server_options() -> list[str]:
    """
    The dnsmasq lines of docs/dhcp.md's UEFI HTTP Boot section, as dnsmasq arguments.
    """
    lines = recipes.localize(recipes.text_of("http-boot-dhcp")).splitlines()
    return [f"--{line}" for line in lines if line.strip() and not line.startswith("#")]


@contextmanager
def lab_with(
    built: Built, name: str, options: list[str], *pilot_args: str
) -> Iterator[lab.Process]:
    directory = built.directory / name
    directory.mkdir()
    with lab.network(), lab.other_dhcp_server(directory, options=[*options, "--no-ping"]):
        pilot = lab.pxe_pilot(directory, built.answers, built.assets, *pilot_args)
        try:
            yield pilot
        finally:
            pilot.stop()


def boot(directory: Path, guest: Guest) -> tuple[str, float]:
    """
    The guest's console once it reported its installation, and the seconds from QEMU's
    start to the answer.
    """
    with lab.tap(f"tap-{guest.name}"[:15]) as tap:
        started = time.monotonic()
        vm = lab.qemu(directory, f"vm-{guest.name}", guest.firmware, guest.mac, tap, NO_PXE)
        try:
            vm.wait_for(lab.ANSWER_END, BOOT_TIMEOUT)
            seconds = time.monotonic() - started
            vm.wait_for(lab.WEBHOOK_SENT, BOOT_TIMEOUT)
            return vm.text, seconds
        finally:
            vm.stop()


def assert_http_only(log: str) -> None:
    """
    The firmware fetched ipxe.efi over HTTP, and nothing else fetched a binary there
    (no loop); nothing went over TFTP; iPXE went on to the menu.
    """
    assert_firmware_fetched_over_http(log)
    assert not re.search(r"TFTP \d+\.\d+\.\d+\.\d+ ", log), log


def assert_firmware_fetched_over_http(log: str) -> None:
    """
    The firmware fetched ipxe.efi over HTTP, and nothing else fetched a binary there
    (no loop); iPXE went on to the menu.
    """
    fetched = re.findall(r"HTTP \S+: (.*) fetches ipxe/(\S+)", log)
    assert fetched == [("UefiHttpBoot/1.0", "ipxe.efi")], log
    assert re.search(r"boot\.ipxe fetched", log), log
    assert re.search(r"menu for 52:54:00:00:02:e\d at ", log), log


def timeline_of(guest: Guest) -> str:
    shown = lab.pxe_pilot_command("status", guest.mac)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def assert_on_the_timeline(timeline: str) -> None:
    """
    The firmware's download of ipxe.efi is on the host's timeline, as the assets' are.
    """
    assert "download of ipxe/ipxe.efi" in timeline, timeline


def test_http_boot_with_proxy_dhcp(built: Built) -> None:
    """
    The network's DHCP server gives the address; pxe-pilot's proxyDHCP answers the
    firmware's HTTPClient request with option 60 and the URL of ipxe.efi, and the iPXE
    it loads with the URL of boot.ipxe.
    """
    with lab_with(built, "proxy", [], "--proxy-dhcp") as pilot:
        pilot.wait_for(r"proxyDHCP listening on 0\.0\.0\.0:4011", 30)
        console, seconds = boot(pilot.log.parent, PROXY)
        log = pilot.text
        timeline = timeline_of(PROXY)
    print(f"UEFI HTTP Boot with proxyDHCP: the answer after {seconds:.1f} s")
    assert lab.answer_of(console) == PROXY.answer
    assert_http_only(log)
    assert_on_the_timeline(timeline)
    assert re.search(
        rf"proxyDHCP offered to {PROXY.mac} on port 67: UEFI x86-64 HTTP: "
        r"http://10\.99\.0\.1:8080/ipxe/ipxe\.efi",
        log,
    ), log
    assert re.search(rf"proxyDHCP \w+ to {PROXY.mac} on port \d+: iPXE: ", log), log


def test_http_boot_from_the_dhcp_server(built: Built) -> None:
    """
    The DHCP server's own HTTPClient options (docs/dhcp.md) and no proxyDHCP: the
    firmware and iPXE get the same URL, and iPXE gets the chain script there instead
    of the binary.
    """
    with lab_with(built, "server", server_options()) as pilot:
        console, seconds = boot(pilot.log.parent, SERVER)
        log = pilot.text
        timeline = timeline_of(SERVER)
    print(f"UEFI HTTP Boot from the DHCP server: the answer after {seconds:.1f} s")
    assert lab.answer_of(console) == SERVER.answer
    assert_http_only(log)
    assert_on_the_timeline(timeline)
    assert re.search(r"iPXE asked for ipxe/ipxe\.efi; it gets the chain script", log), log
    assert "proxyDHCP" not in log


def kea_settings() -> dict[str, object]:
    """
    docs/dhcp.md's Kea classes: UEFI HTTP Boot's, and those of its ISC Kea section,
    which give iPXE (a PXE client of architecture 7) snponly.efi over TFTP.
    """
    classes: list[object] = []
    for name in ("http-boot-kea", "kea"):
        settings = json.loads("{" + recipes.localize(recipes.text_of(name)) + "}")["Dhcp4"]
        classes += settings["client-classes"]
    return {"client-classes": classes}


def test_http_boot_from_kea(built: Built) -> None:
    """
    Kea with the documented classes, and no proxyDHCP: the firmware gets the URL by
    its HTTPClient vendor class, iPXE snponly.efi by its architecture, and pxe-pilot's
    TFTP server sends iPXE the chain script instead of the binary.
    """
    if shutil.which("kea-dhcp4") is None:
        pytest.skip("the Kea test needs kea-dhcp4 (.ci/run installs kea-dhcp4-server)")
    directory = built.directory / "kea"
    directory.mkdir()
    with lab.network(), lab.kea_server(directory, kea_settings(), version=4) as kea:
        pilot = lab.pxe_pilot(directory, built.answers, built.assets)
        try:
            console, seconds = boot(directory, KEA)
            log = pilot.text
            timeline = timeline_of(KEA)
        finally:
            pilot.stop()
    print(f"UEFI HTTP Boot from Kea: the answer after {seconds:.1f} s")
    assert lab.answer_of(console) == KEA.answer
    assert_firmware_fetched_over_http(log)
    assert_on_the_timeline(timeline)
    assert re.search(r"iPXE asked for snponly\.efi; it gets the chain script", log), log
    assert "DHCP4_LEASE_ALLOC" in kea.text
