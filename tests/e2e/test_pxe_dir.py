"""
A directory as C{proxmox-auto-install-assistant prepare-iso --pxe} makes it, put in the
assets directory as it is, boots like a builder's asset: on BIOS with the ISO as a named
initrd, on UEFI (Debian's ipxe.efi, which would not wrap it) with the initrd pxe-pilot
composes from the two files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from builder.testing import prepare_iso_pxe, proxmox_files
from tests.e2e import lab
from tests.e2e.test_boot_chain import Guest, Lab, boot

pytestmark = pytest.mark.e2e

BIOS = Guest("pxedir-bios", "bios", "52:54:00:00:01:b1")
UEFI = Guest("pxedir-uefi", "uefi", "52:54:00:00:01:e1")
# Boots the version pxe-pilot-builder --from-pxe-dir imported from the same directory.
IMPORTED = Guest("pxedir-imported", "uefi", "52:54:00:00:01:e2")
DIRECTORY = "pve-9.1"
ISO = "proxmox-ve_9.1-1-auto-from-http.iso"


@pytest.fixture(scope="module")
def pxe_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab.require()
    directory = tmp_path_factory.mktemp("lab")
    kernel = lab.kernel_tree()
    vmlinuz = next((kernel / "boot").glob("vmlinuz-*")).read_bytes()
    files = proxmox_files(kernel=vmlinuz, initrd=lab.installer_initrd(kernel))
    assets = directory / "assets"
    iso = prepare_iso_pxe(assets / DIRECTORY, files, lab.ANSWER_URL)
    assert iso.name == ISO
    hosts = lab.host_answers(
        directory, {guest.mac: guest.answer for guest in (BIOS, UEFI, IMPORTED)}
    )
    (hosts / f"{IMPORTED.mac.replace(':', '-')}.boot.toml").write_text(
        'default = "proxmox-ve/9.1-1"\n'
    )
    with lab.network():
        dhcp = lab.dnsmasq(directory)
        try:
            pilot = lab.pxe_pilot(directory, directory / "answers", assets)
            try:
                yield Lab(directory, pilot)
            finally:
                pilot.stop()
        finally:
            dhcp.stop()


def test_bios_loads_the_iso_as_a_named_initrd(pxe_lab: Lab) -> None:
    console = boot(pxe_lab, BIOS, lab.ANSWER_END)
    assert lab.answer_of(console) == BIOS.answer
    assert f"{DIRECTORY}/{ISO}" in console
    assert "combined.img" not in console


def test_uefi_loads_the_composed_initrd(pxe_lab: Lab) -> None:
    console = boot(pxe_lab, UEFI, lab.ANSWER_END)
    assert lab.answer_of(console) == UEFI.answer
    assert f"{DIRECTORY}/combined.img" in console
    assert ISO not in console


def test_imported_by_the_builder(pxe_lab: Lab) -> None:
    """
    pxe-pilot-builder --from-pxe-dir makes a version of the builder's own (combined)
    layout from the directory, which boots on UEFI.
    """
    assets = pxe_lab.directory / "assets"
    done = subprocess.run(
        [
            str(lab.VENV_BIN / "pxe-pilot-builder"),
            "--from-pxe-dir",
            str(assets / DIRECTORY),
            "--output",
            str(assets),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    console = boot(pxe_lab, IMPORTED, lab.ANSWER_END)
    assert lab.answer_of(console) == IMPORTED.answer
    assert "proxmox-ve/9.1-1/initrd" in console
