"""
IPv6 only, in QEMU: a network with no IPv4 at all, router advertisements and DHCPv6 by
docs/dhcp.md (its dnsmasq file, or its Kea classes), pxe-pilot listening on its IPv6
address. OVMF's own PXE client loads iPXE over TFTP, iPXE fetches the menu and the
installer over HTTP, and the installer gets its answer and reports its installation, all
over IPv6.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.e2e import lab, recipes
from tests.e2e.test_boot_chain import BOOT_TIMEOUT, WEBHOOK_URL, Guest

pytestmark = pytest.mark.e2e

HTTP_URL = f"http://[{lab.IPV6_ADDRESS}]:8080/"
ANSWER_URL = f"{HTTP_URL}answer"
TFTP_BOOT_FILE_URL = f"tftp://[{lab.IPV6_ADDRESS}]/ipxe.efi"
BOOT_SCRIPT_URL = f"{HTTP_URL}boot.ipxe"
# OVMF tries PXE over IPv4 before IPv6 and waits about 65 s for an IPv4 offer that never
# comes on this network; without its IPv4 PXE entry it starts with IPv6 at once.
NO_IPV4_PXE = ("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n")
# Any IPv4 address, as pxe-pilot logs a client's.
IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
# A client's global address on the lab's prefix, as pxe-pilot logs it.
IPV6_CLIENT = r"fd00:77::[0-9a-f:]+"


def guest(name: str, mac: str) -> Guest:
    return Guest(name, "uefi", mac, reports=True)


DOCUMENTED = guest("ipv6", "52:54:00:00:06:e1")
UNGUARDED = guest("ipv6-chain", "52:54:00:00:06:e2")
KEA = guest("ipv6-kea", "52:54:00:00:06:e3")


def answer_of(guest: Guest) -> str:
    """
    The guest's answer file, reporting its installation to pxe-pilot over IPv6.
    """
    return guest.answer.replace(WEBHOOK_URL, f"{HTTP_URL}webhook")


def localize(text: str) -> str:
    """
    The documentation's IPv6 example network (RFC 3849's 2001:db8::/32, pxe-pilot at
    2001:db8::10) turned into the lab's.
    """
    text = recipes.localize(text)
    text = text.replace("2001:db8::100,2001:db8::1ff", "fd00:77::100,fd00:77::1ff")
    return text.replace("2001:db8::10", lab.IPV6_ADDRESS)


def without_user_class_guard(config: str) -> str:
    """
    A dnsmasq file without its user-class rules: every client, iPXE too, gets the TFTP
    URL of the iPXE binary.
    """
    kept = [
        line.replace("tag:!ipxe,", "")
        for line in config.splitlines()
        if "ipxe,iPXE" not in line and "tag:ipxe," not in line
    ]
    return "\n".join(kept) + "\n"


@attrs.frozen
class IPv6Lab:
    directory: Path
    pilot: lab.Process


@pytest.fixture(scope="module")
def ipv6_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IPv6Lab]:
    lab.require()
    directory = tmp_path_factory.mktemp("ipv6-lab")
    iso = directory / "proxmox-ve.iso"
    lab.synthetic_iso(iso)
    assets = lab.built_assets(iso, directory / "assets", ANSWER_URL)
    lab.host_answers(
        directory, {each.mac: answer_of(each) for each in (DOCUMENTED, UNGUARDED, KEA)}
    )
    with lab.network(f"{lab.IPV6_ADDRESS}/64"):
        pilot = lab.pxe_pilot(
            directory, directory / "answers", assets, "--interface", lab.IPV6_ADDRESS
        )
        try:
            yield IPv6Lab(directory, pilot)
        finally:
            pilot.stop()


def dnsmasq(directory: Path, name: str, config: str) -> lab.Process:
    path = directory / f"{name}.conf"
    path.write_text(config)
    return lab.Process(
        name,
        lab.netns("dnsmasq", "--no-daemon", f"--conf-file={path}", "--pid-file=", "--log-dhcp"),
        directory,
    )


def boot(ipv6_lab: IPv6Lab, guest: Guest) -> str:
    """
    Boot the guest until it has reported its installation; its console output.
    """
    with lab.tap(f"tap-{guest.name}"[:15]) as tap:
        started = time.monotonic()
        vm = lab.qemu(
            ipv6_lab.directory, f"vm-{guest.name}", "uefi", guest.mac, tap, extra=NO_IPV4_PXE
        )
        try:
            vm.wait_for(lab.ANSWER_END, BOOT_TIMEOUT)
            print(f"{guest.name}: the answer {time.monotonic() - started:.0f} s after QEMU starts")
            vm.wait_for(lab.WEBHOOK_SENT, 60)
            return vm.text
        finally:
            vm.stop()


def host_state(mac: str) -> str:
    """
    The host's state in pxe-pilot's ledger, as the operator's C{pxe-pilot status}
    reads it over IPv6.
    """
    shown = subprocess.run(
        lab.netns(str(lab.VENV_BIN / "pxe-pilot"), "--url", HTTP_URL, "status", mac),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    return first.split(": ", 1)[1].split(" since ")[0]


def assert_installed_over_ipv6(guest: Guest, console: str, log: str) -> None:
    """
    The guest got its own answer and is installed in the ledger, and pxe-pilot's C{log}
    of its boot shows its firmware's TFTP transfer, its menu request and its installer's
    answer request from its IPv6 addresses, and no IPv4 address at all.
    """
    assert lab.answer_of(console) == answer_of(guest)
    assert re.search(rf"TFTP {IPV6_CLIENT} ipxe\.efi: complete \(options blksize=1228", log), log
    # The firmware's transfer is in the host's timeline: its IPv6 neighbour named its MAC.
    assert f"host {guest.mac}: TFTP ipxe.efi: complete" in log
    assert re.search(rf"menu for {guest.mac} at {IPV6_CLIENT} \(efi", log), log
    installer = re.search(r"fake installer: IPv6 address (fd00:77::[0-9a-f:]+)/64", console)
    assert installer, console
    answered = rf"answer request from {re.escape(installer[1])} .*: served hosts/"
    assert re.search(answered + guest.mac.replace(":", "-"), log), log
    assert not [line for line in log.splitlines() if IPV4.search(line)]
    assert host_state(guest.mac) == "installed"


@pytest.mark.parametrize(
    ("guest", "guarded"), [(DOCUMENTED, True), (UNGUARDED, False)], ids=["documented", "chain"]
)
def test_dnsmasq_ipv6_only_boot_reaches_the_answer(
    ipv6_lab: IPv6Lab, guest: Guest, guarded: bool
) -> None:
    """
    docs/dhcp.md's dnsmasq file on a network with no IPv4: OVMF gets an address and
    the iPXE binary's TFTP URL from DHCPv6 and loads it from pxe-pilot; iPXE gets the
    URL of boot.ipxe from DHCPv6 (the user-class rule) or, without the rule, asks
    pxe-pilot's TFTP server for the binary again and gets the chain script. The
    installer, with an address from the router advertisement, posts to the answer URL
    in brackets, gets its own answer and reports its installation.
    """
    config = localize(recipes.text_of("ipv6-dhcp"))
    if not guarded:
        config = without_user_class_guard(config)
    dhcp = dnsmasq(ipv6_lab.directory, f"dnsmasq-{guest.name}", config)
    earlier = len(ipv6_lab.pilot.text)
    try:
        console = boot(ipv6_lab, guest)
    finally:
        dhcp.stop()
    log = ipv6_lab.pilot.text[earlier:]
    assert_installed_over_ipv6(guest, console, log)
    assert f"option: 59 bootfile-url  {TFTP_BOOT_FILE_URL}" in dhcp.text
    chained = rf"TFTP {IPV6_CLIENT}: iPXE asked for ipxe\.efi; it gets the chain script"
    if guarded:
        assert f"option: 59 bootfile-url  {BOOT_SCRIPT_URL}" in dhcp.text
        assert not re.search(chained, log)
    else:
        assert re.search(chained, log), log


def test_kea_ipv6_only_boot_reaches_the_answer(ipv6_lab: IPv6Lab) -> None:
    """
    docs/dhcp.md's Kea classes, Kea on another host, and a router that advertises the
    prefix with the managed flag: the firmware gets the TFTP URL by its vendor class,
    iPXE the URL of boot.ipxe by its user class, and the guest installs over IPv6.
    """
    if shutil.which("kea-dhcp6") is None:
        pytest.skip("the Kea test needs kea-dhcp6 (.ci/run installs kea-dhcp6-server)")
    settings = json.loads("{" + localize(recipes.text_of("ipv6-kea")) + "}")["Dhcp6"]
    # The router: advertisements with the managed flag (and the prefix for SLAAC), and no
    # DHCPv6 answers of its own (every client ignored).
    router = dnsmasq(
        ipv6_lab.directory,
        "router-advertisements",
        "interface=br0\nbind-interfaces\nport=0\nenable-ra\n"
        "dhcp-range=fd00:77::100,fd00:77::1ff,slaac,64,12h\ndhcp-ignore=tag:!known\n",
    )
    earlier = len(ipv6_lab.pilot.text)
    try:
        with lab.kea_server(ipv6_lab.directory, settings) as kea:
            console = boot(ipv6_lab, KEA)
    finally:
        router.stop()
    assert_installed_over_ipv6(KEA, console, ipv6_lab.pilot.text[earlier:])
    assert "DHCP6_LEASE_ALLOC" in kea.text
    # iPXE was given the boot script's URL, not the binary's.
    assert f"Filename: {BOOT_SCRIPT_URL}" in console
    assert f"Filename: {TFTP_BOOT_FILE_URL}" not in console
