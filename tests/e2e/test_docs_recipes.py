"""
The documentation, followed literally in the PXE lab: the quickstart from ISO to an
installed node, and the tested recipe of each deployment page (pxe-pilot alone, behind
an iPXE menu such as netboot.xyz's, HTTP only behind another TFTP server).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest

from tests.e2e import lab, recipes
from tests.e2e.test_boot_chain import BOOT_TIMEOUT, Guest

pytestmark = pytest.mark.e2e

ISO_PORT = 8090


@attrs.frozen
class Built:
    """
    The lab's synthetic ISO, and assets built from it with the project's builder.
    """

    directory: Path
    iso: Path
    assets: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    lab.require()
    directory = tmp_path_factory.mktemp("recipes")
    iso_dir = directory / "iso"
    iso_dir.mkdir()
    iso = iso_dir / "proxmox-ve_9.1-1.iso"
    lab.synthetic_iso(iso)
    # As Proxmox publishes them: the builder verifies the download against it.
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    (iso_dir / "SHA256SUMS").write_text(f"{digest}  {iso.name}\n")
    assets = lab.built_assets(iso, directory / "assets")
    return Built(directory, iso, assets)


def boot_until_reported(directory: Path, guest: Guest) -> str:
    with lab.tap(f"tap-{guest.name}"[:15]) as tap:
        vm = lab.qemu(directory, f"vm-{guest.name}", guest.firmware, guest.mac, tap)
        try:
            vm.wait_for(lab.WEBHOOK_SENT, BOOT_TIMEOUT)
            return vm.text
        finally:
            vm.stop()


def pxe_directory(built: Built, name: str) -> Path:
    """
    A C{$PXE} as the quickstart leaves it: the project's virtualenv, the assets, and an
    answer file that reports the installation.
    """
    pxe = built.directory / name
    (pxe / "answers").mkdir(parents=True)
    (pxe / "venv").symlink_to(lab.VENV_BIN.parent)
    shutil.copytree(built.assets, pxe / "assets", symlinks=True)
    guest = Guest(name, "bios", "52:54:00:00:00:00", reports=True)
    (pxe / "answers" / "default.toml").write_text(guest.answer)
    return pxe


def run(script: str, pxe: Path, in_lab: bool = True) -> str:
    done = recipes.run_block(script, {"PXE": str(pxe)}, in_lab)
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def network() -> Iterator[None]:
    lab.require()
    with lab.network():
        yield


def hosts_row(mac: str) -> str:
    listing = lab.pxe_pilot_command("hosts")
    assert listing.returncode == 0, listing.stderr
    return next(line for line in listing.stdout.splitlines() if line.startswith(mac))


def iso_server(directory: Path, logs: Path) -> lab.Process:
    """
    The ISO's "download site", on the lab network.
    """
    return lab.Process(
        "iso-server",
        lab.netns(
            "python3",
            "-m",
            "http.server",
            "--bind",
            lab.BRIDGE_ADDRESS,
            "--directory",
            str(directory),
            str(ISO_PORT),
        ),
        logs,
    )


def test_quickstart(built: Built, network: None) -> None:
    """
    docs/quickstart.md block by block, with step 1's values for the lab: a fresh
    virtualenv from this checkout, assets from the ISO's URL (verified against its
    SHA256SUMS), the answer file, pxe-pilot and dnsmasq as daemons; then a machine
    boots, installs, reports, and C{pxe-pilot hosts} shows it installed.
    """
    pxe = built.directory / "quickstart"
    settings = {
        "SERVER": lab.BRIDGE_ADDRESS,
        "IFACE": "br0",
        "DHCP_RANGE": recipes.DHCP_RANGE,
        "ISO_URL": f"http://{lab.BRIDGE_ADDRESS}:{ISO_PORT}/{built.iso.name}",
        "PXE_PILOT_SRC": str(lab.ROOT),
        "PXE": str(pxe),
    }
    assert recipes.settings_names("quickstart-settings") == list(settings)
    site = iso_server(built.iso.parent, built.directory)
    try:
        for block in recipes.blocks_of("quickstart"):
            # Installing software needs the package registries, which only the host
            # reaches; everything else runs on the lab's network.
            on_host = "apt-get" in block or "pip" in block
            done = recipes.run_block(block, settings, in_lab=not on_host, timeout=900)
            assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"
            if "pxe-pilot-builder" in block:
                assert "verified against SHA256SUMS" in done.stdout + done.stderr
            if 'pxe-pilot" check' in block:
                assert "all accepted" in done.stdout
        guest = Guest("quickstart", "bios", "52:54:00:00:00:a1")
        console = boot_until_reported(built.directory, guest)
        assert 'url = "http://10.99.0.1:8080/webhook"' in lab.answer_of(console)
        watched = recipes.run_block(recipes.text_of("quickstart-watch"), settings, in_lab=True)
        assert watched.returncode == 0, watched.stderr
        row = next(line for line in watched.stdout.splitlines() if line.startswith(guest.mac))
        assert row.split()[1] == "installed"
        assert "pve.example.com" in row
    finally:
        site.stop()
        recipes.stop_daemon(pxe / "pxe-pilot.pid")
        recipes.stop_daemon(pxe / "dnsmasq.pid")


def dhcp_server(directory: Path, name: str, config: str) -> lab.Process:
    path = directory / f"{name}.conf"
    path.write_text(config)
    return lab.Process(
        f"dnsmasq-{name}",
        lab.netns("dnsmasq", "--no-daemon", f"--conf-file={path}", "--pid-file=", "--log-dhcp"),
        directory,
    )


def start_pxe_pilot(recipe: str, pxe: Path) -> None:
    script = recipes.localize(recipes.text_of(recipe))
    run(script, pxe)
    run(
        f"curl --silent --fail --retry 10 --retry-connrefused "
        f"http://{lab.BRIDGE_ADDRESS}:8080/health",
        pxe,
    )


@contextmanager
def deployed(built: Built, page: str, dhcp_config: str) -> Iterator[tuple[Path, lab.Process]]:
    """
    A deployment page's recipe running in the lab: pxe-pilot started by the page's
    block, and the network's DHCP (and TFTP) server with C{dhcp_config}; both stopped
    afterwards.
    """
    pxe = pxe_directory(built, page)
    dhcp = dhcp_server(built.directory, page, dhcp_config)
    try:
        start_pxe_pilot(page, pxe)
        yield pxe, dhcp
    finally:
        recipes.stop_daemon(pxe / "pxe-pilot.pid")
        dhcp.stop()


def installs(built: Built, guest: Guest) -> None:
    """
    The guest network-boots, installs and reports; pxe-pilot shows it installed.
    """
    boot_until_reported(built.directory, guest)
    assert hosts_row(guest.mac).split()[1] == "installed"


def test_bare_bones(built: Built, network: None) -> None:
    """
    docs/deployment/bare-bones.md: pxe-pilot with its TFTP server, and the page's
    dnsmasq file as the network's DHCP server; a UEFI machine installs.
    """
    config = recipes.localize(recipes.text_of("bare-bones-dhcp"))
    with deployed(built, "bare-bones", config) as (pxe, _dhcp):
        installs(built, Guest("bare-bones", "uefi", "52:54:00:00:00:a2"))
        log = (pxe / "pxe-pilot.log").read_text()
        assert "snponly.efi" in log  # the firmware's boot file came from pxe-pilot's TFTP


def test_with_netboot(built: Built, network: None) -> None:
    """
    docs/deployment/with-netboot.md: pxe-pilot over HTTP only, and the page's menu
    entry as the boot script another server hands out (as netboot.xyz's custom menu
    would); a BIOS machine chains to pxe-pilot and installs.
    """
    menus = built.directory / "netboot-menus"
    menus.mkdir()
    (menus / "custom.ipxe").write_text(recipes.localize(recipes.text_of("with-netboot-menu")))
    # The stand-in for netboot.xyz: DHCP and TFTP, handing out the menu.
    config = recipes.localize(
        "interface=eth0\nbind-interfaces\nport=0\n"
        "dhcp-range=192.0.2.100,192.0.2.200,12h\n"
        f"enable-tftp\ntftp-root={menus}\ndhcp-boot=custom.ipxe\n"
    )
    with deployed(built, "with-netboot", config) as (pxe, _dhcp):
        installs(built, Guest("with-netboot", "bios", "52:54:00:00:00:a3"))
        assert "TFTP listening" not in (pxe / "pxe-pilot.log").read_text()


def test_http_only(built: Built, network: None) -> None:
    """
    docs/deployment/http-only.md: pxe-pilot over HTTP only, and the page's dnsmasq
    file serving iPXE over its own TFTP and the boot script's URL to iPXE; a UEFI
    machine installs.
    """
    config = recipes.localize(recipes.text_of("http-only-dhcp"))
    with deployed(built, "http-only", config) as (_pxe, dhcp):
        installs(built, Guest("http-only", "uefi", "52:54:00:00:00:a4"))
        assert "sent /usr/lib/ipxe/snponly.efi" in dhcp.text
