"""
proxyDHCP on the DHCP server's own host: pxe-pilot shares UDP port 67 with a DHCP
server that allows it (dnsmasq with C{bind-interfaces}) by binding the broadcast
address, so that broadcasts reach both and what is sent to the host's address reaches
the server alone.

First on the kernel, without QEMU: a broadcast DISCOVER reaches both sockets and is
answered from the host's address and port 67, a relayed DISCOVER sent to the host
reaches the other socket only. Then in QEMU: dnsmasq with docs/dhcp.md's block gives
addresses and nothing else, in the same network namespace as pxe-pilot, and a BIOS and
a UEFI guest reach their answer.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.dhcp.packets import XID
from tests.e2e import lab, recipes
from tests.e2e.shared_port import RELAYED_XID, REQUEST_XID
from tests.e2e.test_boot_chain import BOOT_TIMEOUT, Guest

pytestmark = pytest.mark.e2e

BIOS = Guest("shared-bios", "bios", "52:54:00:00:03:b1", reports=True)
UEFI = Guest("shared-uefi", "uefi", "52:54:00:00:03:e1", reports=True)

HOST_NETNS = f"{lab.NETNS}-share-host"
CLIENT_NETNS = f"{lab.NETNS}-share-client"
HOST_ADDRESS = "10.98.0.1"
CLIENT_ADDRESS = "10.98.0.2"


@pytest.fixture
def two_hosts() -> Iterator[None]:
    """
    Two namespaces joined by a veth pair: the DHCP server's host and a client.
    """
    lab.require()
    for name in (HOST_NETNS, CLIENT_NETNS):
        lab.run("ip", "netns", "del", name, check=False)
        lab.run("ip", "netns", "add", name)
    try:
        host = ["ip", "-n", HOST_NETNS]
        client = ["ip", "-n", CLIENT_NETNS]
        lab.run(
            *host,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            CLIENT_NETNS,
        )
        for command, address in ((host, HOST_ADDRESS), (client, CLIENT_ADDRESS)):
            lab.run(*command, "addr", "add", f"{address}/24", "dev", "eth0")
            lab.run(*command, "link", "set", "eth0", "up")
            lab.run(*command, "link", "set", "lo", "up")
        yield
    finally:
        for name in (HOST_NETNS, CLIENT_NETNS):
            lab.run("ip", "netns", "del", name, check=False)


def in_namespace(name: str, *args: str) -> list[str]:
    return [
        "ip",
        "netns",
        "exec",
        name,
        str(lab.VENV_BIN / "python"),
        "-m",
        "tests.e2e.shared_port",
        *args,
    ]


def test_broadcasts_reach_both_and_unicast_only_the_server(two_hosts: None) -> None:
    """
    Beside a socket bound as dnsmasq binds it with C{bind-interfaces}, pxe-pilot's
    proxyDHCP binds C{255.255.255.255:67} and names the process it shares with. A
    client's broadcast DISCOVER reaches both; pxe-pilot's offer leaves from the host's
    address and port 67. The client's REQUEST, naming the host, reaches both, and only
    the DHCP server may answer it. A DISCOVER a relay sends to the host's address
    reaches the other socket only: pxe-pilot took nothing meant for the DHCP server.
    """
    host = subprocess.Popen(
        in_namespace(HOST_NETNS, "host"),
        cwd=lab.ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None and host.stdin is not None
        assert json.loads(host.stdout.readline()) == {"dhcp_port": "255.255.255.255"}
        client = subprocess.run(
            in_namespace(CLIENT_NETNS, "client", "eth0", CLIENT_ADDRESS, HOST_ADDRESS),
            cwd=lab.ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        host.stdin.write("done\n")
        host.stdin.flush()
        received = json.loads(host.stdout.readline())
    finally:
        host.kill()
        host.wait()
    offer = json.loads(client.stdout)["offer"]
    assert offer == {"from": [HOST_ADDRESS, 67], "file": "undionly.kpxe", "siaddr": HOST_ADDRESS}
    other = received["other"]
    assert [(item["to"], item["xid"]) for item in other] == [
        ("255.255.255.255", XID),
        ("255.255.255.255", REQUEST_XID),
        (HOST_ADDRESS, RELAYED_XID),
    ]
    # The offer; the REQUEST seen and left to the DHCP server; the relayed DISCOVER
    # never seen.
    assert received["pxe_pilot"] == {"offered": 1, "ignored": 1}
    assert re.fullmatch(
        r"shared with python3?[\w.]* \(pid \d+\), broadcasts only", received["health"]["port_67"]
    )


@attrs.frozen
class SharedLab:
    directory: Path
    pilot: lab.Process
    dhcp: lab.Process


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedLab]:
    lab.require()
    directory = tmp_path_factory.mktemp("shared-lab")
    iso = directory / "proxmox-ve.iso"
    lab.synthetic_iso(iso)
    assets = lab.built_assets(iso, directory / "assets")
    lab.host_answers(directory, {guest.mac: guest.answer for guest in (BIOS, UEFI)})
    config = directory / "dnsmasq-dhcp.conf"
    config.write_text(recipes.localize(recipes.text_of("shared-host-dhcp")))
    with lab.network():
        dhcp = lab.Process(
            "dnsmasq-shared",
            lab.netns(
                "dnsmasq", "--no-daemon", f"--conf-file={config}", "--pid-file=", "--log-dhcp"
            ),
            directory,
        )
        try:
            dhcp.wait_for(r"DHCP, IP range", 30)
            pilot = lab.pxe_pilot(directory, directory / "answers", assets, "--proxy-dhcp")
            try:
                pilot.wait_for(r"proxyDHCP listening on 0\.0\.0\.0:4011", 30)
                yield SharedLab(directory, pilot, dhcp)
            finally:
                pilot.stop()
        finally:
            dhcp.stop()


def test_pxe_pilot_says_it_shares_port_67(shared_lab: SharedLab) -> None:
    """
    Started after dnsmasq, pxe-pilot shares port 67 with it and says so once, naming
    it; it listens on the broadcast address, not on every address.
    """
    pid = shared_lab.dhcp.process.pid
    log = shared_lab.pilot.text
    assert (
        f"proxyDHCP shares UDP port 67 with dnsmasq (pid {pid}) and answers broadcasts only" in log
    ), log
    assert "proxyDHCP listening on 255.255.255.255:67" in log


@pytest.mark.parametrize("guest", [BIOS, UEFI], ids=lambda g: g.firmware)
def test_shared_port_boot_reaches_the_answer(shared_lab: SharedLab, guest: Guest) -> None:
    """
    The address comes from dnsmasq on the same host, the boot file from pxe-pilot's
    proxyDHCP beside it; the guest installs with its own answer. dnsmasq's offers
    carried no boot file.
    """
    started = time.monotonic()
    with lab.tap(f"tap-{guest.name}"[:15]) as tap:
        vm = lab.qemu(shared_lab.directory, f"vm-{guest.name}", guest.firmware, guest.mac, tap)
        try:
            vm.wait_for(lab.WEBHOOK_SENT, BOOT_TIMEOUT)
            console = vm.text
        finally:
            vm.stop()
    print(f"{guest.name}: the answer after {time.monotonic() - started:.0f} s")
    assert lab.answer_of(console) == guest.answer
    log = shared_lab.pilot.text
    assert re.search(rf"proxyDHCP offered to {guest.mac} on port 67: ", log), log
    assert re.search(rf"proxyDHCP (offered|acked) to {guest.mac} on port \d+: iPXE: ", log), log
    offers = [
        line
        for line in shared_lab.dhcp.text.splitlines()
        if guest.mac in line.lower() and re.search(r"DHCP(OFFER|ACK)", line)
    ]
    assert offers, shared_lab.dhcp.text
    # dnsmasq's --log-dhcp names a boot file ("bootfile name: ...") and every option it
    # sends: neither a boot file nor options 66/67 went out.
    assert not re.search(r"bootfile name|option: *6[67] ", shared_lab.dhcp.text)
