"""
GRUB's side of the Secure Boot chain: the names a network GRUB may ask for, the first
stage that reads the memory, and the menu decided as the iPXE menu is.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxepilot.boot import grub
from pxepilot.boot.catalogue import Asset, Initrd
from pxepilot.boot.ipxe import LOCAL, SHELL, Choice, Refusal
from pxepilot.macs import MacAddress

MAC = MacAddress.parse("52:54:00:00:05:e1")


def asset(directory: str, initrds: tuple[Initrd, ...] = (Initrd("initrd"),)) -> Asset:
    release, _, iso_release = directory.split("/")[1].partition("-")
    return Asset(
        directory=directory,
        product="pve",
        product_name="Proxmox VE",
        release=release,
        iso_release=iso_release,
        layout="combined",
        kernel="vmlinuz",
        initrds=initrds,
        kernel_cmdline="ro quiet proxmox-start-auto-installer",
        mtime=0.0,
    )


PVE = [asset("proxmox-ve/9.1-1"), asset("proxmox-ve/8.4-1")]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("grub.cfg", grub.FirstStage()),
        ("grub.cfg-01-52-54-00-00-05-e1", grub.FirstStage(mac=MAC)),
        ("grub.cfg-01-52:54:00:00:05:E1", grub.FirstStage(mac=MAC)),
        ("grub.cfg-0A63003C", grub.FirstStage(address="0A63003C")),
        ("grub.cfg-0a6", grub.FirstStage(address="0A6")),
        ("grub.cfg-0", grub.FirstStage(address="0")),
        ("menu-01-52:54:00:00:05:e1-m", grub.SecondStage(MAC, None)),
        ("menu-01-52-54-00-00-05-e1-m1024-0.", grub.SecondStage(MAC, 1024)),
        ("menu-01-52:54:00:00:05:e1-m4096-0.32767-8192.0-0.", grub.SecondStage(MAC, 12288)),
    ],
)
def test_names_grub_asks_for(name: str, expected: object) -> None:
    """
    Every name GRUB tries in turn under its prefix, and the second stage's name with
    the MAC address and the memory devices the first stage read.
    """
    assert grub.parse_name(name) == expected


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("grub.cfg-01-52-54-00-00-05", "does not name a MAC address"),
        ("grub.cfg-01-52-54:00-00-05-e1", "does not name a MAC address"),
        ("grub.cfg-01-zz-54-00-00-05-e1", "does not name a MAC address"),
        ("grub.cfg-01-", "does not name a MAC address"),
        ("grub.cfg-0A63003C0", "does not name an IPv4 address"),
        ("grub.cfg-10.99.0.60", "does not name an IPv4 address"),
        ("grub.cfg-XYZ", "does not name an IPv4 address"),
        ("grub.cfg-", "does not name an IPv4 address"),
        ("grub.cfg-fd00:77::1f2", "does not name an IPv4 address"),
        ("x86_64-efi/command.lst", "is not a configuration"),
        ("fonts/unicode.pf2", "is not a configuration"),
        ("../../etc/passwd", "is not a configuration"),
        ("menu-01-52:54:00:00:05-m", "is not a configuration"),
        ("menu-01-52:54:00:00:05:e1-m1024;reboot", "is not a configuration"),
        ("menu-01-52:54:00:00:05:e1", "is not a configuration"),
        ("grub.cfg.bak", "is not a configuration"),
    ],
)
def test_other_names_are_no_configuration(name: str, why: str) -> None:
    """
    A MAC or an IP address that does not parse, or any name pxe-pilot does not make:
    no configuration, and the message says why.
    """
    with pytest.raises(grub.NotAGrubConfig, match=why):
        grub.parse_name(name)


@given(st.text(max_size=80))
def test_any_name_parses_or_is_refused(name: str) -> None:
    """
    Whatever GRUB or anyone else asks for, the answer is a configuration or a refusal.
    """
    with contextlib.suppress(grub.NotAGrubConfig):
        grub.parse_name(name)


@pytest.mark.parametrize(
    ("devices", "mib"),
    [
        ("", None),
        ("0-0.", None),
        ("65535-0.", None),
        ("2048-0.2048-0.", 4096),
        # Bit 15: KiB.
        (f"{0x8000 | 512 * 1024 // 1024}-0.", None),
        (f"{0x8000 | 2048}-0.1024-0.", 1026),
        # 0x7fff: the extended size holds it, bit 31 reserved.
        (f"32767-{0x80000000 | 65536}.", 65536),
        ("garbage.1024-0.", 1024),
    ],
)
def test_memory_from_smbios_sizes(devices: str, mib: int | None) -> None:
    assert grub.memory_mib(devices) == mib


def test_first_stage_loads_the_menu_of_the_booting_nic() -> None:
    """
    The first stage reads each SMBIOS memory device's size and loads the second stage
    under the same prefix, named after the NIC GRUB boots from.
    """
    text = grub.first_stage()
    assert "smbios --type 17 --match $pxepilot_device --get-word 12" in text
    assert "--get-dword 28" in text
    assert text.rstrip().endswith("configfile $prefix/menu-01-$net_default_mac-m$pxepilot_memory")
    # What the first stage asks for is a name the server answers.
    assert isinstance(grub.parse_name("menu-01-52:54:00:00:05:e1-m1024-0."), grub.SecondStage)


def test_menu_defaults_to_the_chosen_version_over_tftp() -> None:
    """
    The menu lists every version, its default is the chosen one after the timeout,
    and without an HTTP asset URL kernel and initrd come over pxe-pilot's TFTP, with
    the asset's command line and the extra arguments.
    """
    choice = Choice("proxmox-ve/9.1-1", 5, "answer file present: newest Proxmox VE")
    text = grub.menu(
        PVE,
        "https://cdn.example/assets/",
        grub.SecondStage(MAC, 8192),
        choice,
        "console=ttyS0,115200",
    )
    assert "set default=install-0\n" in text
    assert "set timeout=5\n" in text
    assert "menuentry 'Install Proxmox VE 9.1-1' --id install-0 {" in text
    assert "menuentry 'Install Proxmox VE 8.4-1' --id install-1 {" in text
    assert (
        "  linux (tftp,$net_default_server)/assets/proxmox-ve/9.1-1/vmlinuz "
        "ro quiet proxmox-start-auto-installer console=ttyS0,115200\n"
    ) in text
    assert "  initrd (tftp,$net_default_server)/assets/proxmox-ve/9.1-1/initrd\n" in text
    assert "(http," not in text
    assert "WARNING" not in text
    assert f"--id {LOCAL} {{" in text


def test_menu_tries_http_before_tftp() -> None:
    """
    With a plain HTTP asset URL, a GRUB that has the http module loads over HTTP; one
    without fails the first command and loads over TFTP.
    """
    choice = Choice("proxmox-ve/9.1-1", 5, "why")
    text = grub.menu(PVE[:1], "http://10.99.0.1:8080/assets/", grub.SecondStage(MAC, None), choice)
    assert (
        "  if linux (http,10.99.0.1:8080)/assets/proxmox-ve/9.1-1/vmlinuz "
        "ro quiet proxmox-start-auto-installer; then\n"
        "    initrd (http,10.99.0.1:8080)/assets/proxmox-ve/9.1-1/initrd\n"
        "  else\n"
        "    linux (tftp,$net_default_server)/assets/proxmox-ve/9.1-1/vmlinuz "
        "ro quiet proxmox-start-auto-installer\n"
        "    initrd (tftp,$net_default_server)/assets/proxmox-ve/9.1-1/initrd\n"
        "  fi\n"
    ) in text
    port_80 = grub.menu(PVE[:1], "http://pxe.example/assets/", grub.SecondStage(MAC, None), choice)
    assert "(http,pxe.example)/assets/" in port_80


def test_named_initrd_is_wrapped_by_grub() -> None:
    """
    The ISO as the named initrd C{proxmox.iso} goes as GRUB's C{newc:} file, which
    GRUB wraps in a cpio member of that name, as iPXE does.
    """
    named = asset("proxmox-ve/9.1-1", (Initrd("initrd.img"), Initrd("pve.iso", "proxmox.iso")))
    text = grub.menu([named], "", grub.SecondStage(MAC, None), Choice(LOCAL, 3, "why"))
    assert (
        "  initrd (tftp,$net_default_server)/assets/proxmox-ve/9.1-1/initrd.img "
        "newc:proxmox.iso:(tftp,$net_default_server)/assets/proxmox-ve/9.1-1/pve.iso\n"
    ) in text


def test_local_disk_and_waiting() -> None:
    """
    A machine that boots its disk gets it by default; a timeout of 0 waits for a
    person (GRUB's -1), and so does the iPXE shell, which GRUB has no equivalent of.
    """
    local = grub.menu(PVE, "", grub.SecondStage(MAC, None), Choice(LOCAL, 0, "installed"))
    assert "set default=local\n" in local
    assert "set timeout=-1\n" in local
    shell = grub.menu(PVE, "", grub.SecondStage(MAC, None), Choice(SHELL, 4, "why"))
    assert "set default=local\n" in shell
    assert "set timeout=-1\n" in shell


def test_memory_warning() -> None:
    """
    Less memory than the installer needs: the menu says so, and each entry again.
    """
    choice = Choice("proxmox-ve/9.1-1", 5, "why")
    text = grub.menu(PVE, "", grub.SecondStage(MAC, 1024), choice)
    assert "echo 'WARNING: the installer needs at least 6000 MiB of memory'" in text
    assert text.count("WARNING: 1024 MiB of memory; the installer needs at least 6000") == 2
    assert "machine 52:54:00:00:05:e1, 1024 MiB of memory" in text


def test_refused_version_says_so_and_text_cannot_escape() -> None:
    """
    A version whose installer would be refused says so; names and reasons lose every
    character that could end GRUB's quoting or expand.
    """
    sneaky = Asset(
        directory="proxmox-ve/9.1-1",
        product="pve",
        product_name="Proxmox 'VE' $(reboot) ${x}",
        release="9.1",
        iso_release="1",
        layout="combined",
        kernel="vmlinuz",
        initrds=(Initrd("initrd"),),
        kernel_cmdline="quiet",
        mtime=0.0,
    )
    refusal = Refusal("long reason", "hosts/x.toml has 2 errors: 'see' $check")
    text = grub.menu(
        [sneaky],
        "",
        grub.SecondStage(MAC, None),
        Choice(LOCAL, 3, "r'e$a"),
        "",
        {sneaky.key: refusal},
    )
    entry = next(line for line in text.splitlines() if line.startswith("menuentry 'Install"))
    assert entry == (
        "menuentry 'Install Proxmox VE (reboot) x 9.1-1 (answer would be refused: "
        "hosts/x.toml has 2 errors: see check)' --id install-0 {"
    )
    assert "r'e" not in text and "$a" not in text
