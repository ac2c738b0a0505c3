"""
The Secure Boot lab: OVMF built with Secure Boot and Microsoft's keys enrolled, and
Debian's signed shim and network GRUB for pxe-pilot to serve (C{--secure-boot-dir}).
The rest (namespace, DHCP server, pxe-pilot, the fake installer) is
L{tests.e2e.lab}'s.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.e2e import lab

# OVMF with Secure Boot (SMM-protected variables), and variables with Microsoft's
# keys enrolled and Secure Boot on.
SECURE_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
MICROSOFT_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
# Debian's shim, signed by Microsoft's UEFI CA, and Debian's GRUB with network
# support, signed by Debian's key that shim carries.
DEBIAN_SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
DEBIAN_GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")


def require() -> None:
    """
    Skip unless this machine can run the Secure Boot lab (CI can, and fails on a skip).
    """
    lab.require()
    for path in (SECURE_CODE, MICROSOFT_VARS, DEBIAN_SHIM, DEBIAN_GRUB):
        if not path.exists():
            pytest.skip(
                f"the Secure Boot lab needs {path} (.ci/run installs ovmf, shim-signed, "
                "grub-efi-amd64-signed)"
            )


def signed_pieces(directory: Path) -> Path:
    """
    A C{--secure-boot-dir}: Debian's signed shim and network GRUB under the names the
    firmware and shim ask for.
    """
    pieces = directory / "secure-boot"
    pieces.mkdir()
    shutil.copy(DEBIAN_SHIM, pieces / "shimx64.efi")
    shutil.copy(DEBIAN_GRUB, pieces / "grubx64.efi")
    return pieces


def secure_qemu(
    directory: Path, name: str, mac: str, tap_name: str, extra: Sequence[str] = ()
) -> lab.Process:
    """
    A UEFI guest with Secure Boot enforced: OVMF's Secure Boot build with Microsoft's
    keys, which runs only images signed by a key in its database, booting from the
    network with its own PXE client on virtio-net.
    """
    variables = directory / f"{name}-vars.fd"
    shutil.copy(MICROSOFT_VARS, variables)
    args = [
        "qemu-system-x86_64",
        "-machine",
        "q35,smm=on",
        # Only code in SMM may write the variables: Secure Boot cannot be turned off
        # from the operating system or the network boot program.
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-accel",
        "tcg",
        "-m",
        str(lab.GUEST_MEMORY_MIB),
        "-nographic",
        "-no-reboot",
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={SECURE_CODE}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={variables}",
        "-netdev",
        f"tap,id=n0,ifname={tap_name},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=n0,mac={mac},romfile=",
        *extra,
    ]
    return lab.Process(name, lab.netns(*args), directory)


def dnsmasq(directory: Path, shim: Sequence[str]) -> lab.Process:
    """
    A plain DHCP server, as an operator sets one up for Secure Boot: an address, the
    next server (option 66) and, for x86-64 UEFI, the boot file (option 67):
    C{shimx64.efi} for the MACs in C{shim}, C{ipxe.efi} for the others.
    """
    hosts = [f"--dhcp-host={mac},set:shim" for mac in shim]
    return lab.Process(
        "dnsmasq",
        lab.netns(
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=br0",
            "--bind-interfaces",
            "--dhcp-range=10.99.0.50,10.99.0.90,1h",
            "--dhcp-match=set:efi64,option:client-arch,7",
            "--dhcp-match=set:efi64,option:client-arch,9",
            *hosts,
            f"--dhcp-boot=tag:efi64,tag:shim,shimx64.efi,,{lab.BRIDGE_ADDRESS}",
            f"--dhcp-boot=tag:efi64,tag:!shim,ipxe.efi,,{lab.BRIDGE_ADDRESS}",
            "--log-dhcp",
            "--pid-file=",
        ),
        directory,
    )
