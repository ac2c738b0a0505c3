"""
The iPXE scripts pxe-pilot generates, as pure functions: the chain script (what iPXE
gets instead of a boot binary), the boot script that fetches the menu, and the menu.

Nothing from a request or the file system reaches a script unchecked: names in URLs are
checked by the catalogue, host names and URLs by the HTTP side, and display text loses
anything iPXE would expand or split on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from attrs import frozen

from pxepilot.boot.catalogue import Asset
from pxepilot.macs import MacAddress

# What the installer needs, in MiB (a Proxmox ISO is loaded into memory whole).
# iPXE reports a little less than the nominal size: 6 GiB machines show about 6100.
MIN_MEMORY_MIB = 6000

LOCAL = "local"
SHELL = "shell"

# The settings iPXE fills in for the menu request: the booting NIC's MAC, the firmware
# (efi or pcbios), the architecture, the memory in MiB (only builds with memory-map
# settings know it; Debian's do not) and the sizes of the SMBIOS memory devices that
# the boot script gathers, for the builds without.
# The machine's SMBIOS identity goes too, so the menu finds the answer file the
# installer will be served by UUID, serial or model. Serials and product names may hold
# spaces and ampersands: iPXE's uristring type escapes them for the URL.
MENU_QUERY = (
    "mac=${netX/mac}&platform=${platform}&buildarch=${buildarch}&memsize=${memsize}"
    "&memdevs=${memdevs}&uuid=${uuid}&serial=${serial:uristring}"
    "&product=${product:uristring}"
)

# SMBIOS structures an iPXE script can walk: instances are numbered from 0 to 255.
_MAX_MEMORY_DEVICES = 256

# Each SMBIOS memory device (type 17) with a size other than "no module installed", as
# "<size word>-<extended size dword>." in hex, both little-endian as in the table; the
# extended size exists from SMBIOS 2.7 and is empty before. iPXE expands the innermost
# ${...} first, so the instance number can be part of a setting's name.
_SIZE = "${smbios/${memslot}.17.12.2:hexraw}"
_EXTENDED_SIZE = "${smbios/${memslot}.17.28.4:hexraw}"
_GATHER_MEMORY = (
    "set memdevs\n"
    "set memslot:int32 0\n"
    ":memory\n"
    f"isset {_SIZE} || goto memory_done\n"
    f"iseq {_SIZE} 0000 || set memdevs ${{memdevs}}{_SIZE}-{_EXTENDED_SIZE}.\n"
    "inc memslot\n"
    f"iseq ${{memslot}} {_MAX_MEMORY_DEVICES} || goto memory\n"
    ":memory_done\n"
)


# Words iPXE's command line takes, wherever they stand, as the end of a command.
_COMMAND_SEPARATORS = ("||", "&&", ";")


def display(text: str, limit: int = 70) -> str:
    """
    Text safe to show in a menu line: no control characters, nothing iPXE expands,
    and no word iPXE would take as the end of a command (C{||}, C{&&}, C{;}) or the
    start of a comment (a leading C{#}).
    """
    cleaned = "".join((c if c.isprintable() else " ") for c in text if c not in "${}\\\"'")
    words = (word.lstrip("#") for word in " ".join(cleaned.split())[:limit].split())
    return " ".join(word for word in words if word and word not in _COMMAND_SEPARATORS)


# Run DHCP only when iPXE has no address yet: an IPv4 one (${ip}), or a routable IPv6 one
# from DHCPv6 (netX.dhcpv6/ip6) or from a router's advertised prefix (netX.ndp.0/ip6).
# ${ip6} alone is no sign, as iPXE always sets it to the link-local address. Run again on
# an IPv6-only network, "dhcp" would wait for IPv4's DHCP to time out first.
_HAS_ADDRESS = ("${ip}", "${netX.dhcpv6/ip6}", "${netX.ndp.0/ip6}")
_CONFIGURE_NETWORK = "".join(f"isset {setting} || " for setting in _HAS_ADDRESS) + "dhcp\n"


def chain_script(boot_url: str) -> str:
    """
    What an iPXE that asks for a boot binary over TFTP gets instead: it already runs,
    so it is sent on to pxe-pilot's boot script over HTTP rather than loading itself
    again (the DHCP boot loop).
    """
    return (
        "#!ipxe\n"
        "# pxe-pilot: this machine runs iPXE already; on to the boot script over HTTP.\n"
        f"{_CONFIGURE_NETWORK}"
        f"chain --autofree {boot_url} || goto failed\n"
        ":failed\n"
        f"echo pxe-pilot: cannot load {boot_url} (${{errno}}); trying again in 10 seconds\n"
        "sleep 10\n"
        f"chain --autofree {boot_url} || goto failed\n"
    )


def boot_script(menu_url: str) -> str:
    """
    C{/boot.ipxe}: fetch the menu, telling the server which machine asks.
    """
    url = f"{menu_url}?{MENU_QUERY}"
    return (
        "#!ipxe\n"
        "# pxe-pilot boot script\n"
        f"{_CONFIGURE_NETWORK}"
        f"{_GATHER_MEMORY}"
        ":menu\n"
        f"chain --autofree {url} || goto failed\n"
        ":failed\n"
        "echo pxe-pilot: cannot load the menu (${errno}); trying again in 10 seconds\n"
        "sleep 10\n"
        "goto menu\n"
    )


def smbios_memory_mib(devices: str) -> int | None:
    """
    The machine's memory in MiB from the memory devices the boot script gathered, or
    None when there is nothing to go by.

    A device's size word (SMBIOS 2.3+) counts MiB, or KiB when bit 15 is set; C{0x7fff}
    means the extended size (SMBIOS 2.7+, MiB in bits 0-30) holds it, and C{0xffff}
    means unknown.
    """
    total = 0
    for device in devices.split(".")[:_MAX_MEMORY_DEVICES]:
        size_text, _, extended_text = device.partition("-")
        try:
            size = int.from_bytes(bytes.fromhex(size_text), "little")
            extended = int.from_bytes(bytes.fromhex(extended_text), "little")
        except ValueError:
            continue
        if len(size_text) != 4 or size in (0, 0xFFFF):
            continue
        if size == 0x7FFF and len(extended_text) != 8:
            continue
        total += device_mib(size, extended)
    return total or None


def device_mib(size: int, extended: int) -> int:
    """
    One SMBIOS memory device's size in MiB, from its size word and extended size.
    """
    if size == 0x7FFF:
        return extended & 0x7FFFFFFF
    if size & 0x8000:
        return (size & 0x7FFF) // 1024
    return size


@frozen
class Machine:
    """
    What the menu knows about the machine asking for it.

    @ivar mac: The booting NIC's MAC address.
    @ivar platform: C{efi} or C{pcbios}.
    @ivar memory_mib: Memory in MiB, as iPXE reports it.
    """

    mac: MacAddress | None = None
    platform: str | None = None
    memory_mib: int | None = None

    @property
    def efi(self) -> bool:
        return self.platform == "efi"


@frozen
class Choice:
    """
    The default entry and how long the menu waits for a person before taking it.

    @ivar default: An asset's key, L{LOCAL} or L{SHELL}.
    @ivar timeout: Seconds; 0 waits for a person.
    @ivar reason: Why, for the script's comment and the log.
    """

    default: str
    timeout: int
    reason: str


@frozen
class Refusal:
    """
    Why an installer booted from an asset would not get its answer: the machine has no
    answer file, or one that installer would refuse (C{POST /answer} answers 404 or
    422 after the whole download).

    @ivar reason: A sentence for the log, the host's timeline and the script's comment.
    @ivar short: The same in a few words, for the menu line under the entry.
    """

    reason: str
    short: str


def _label(index: int) -> str:
    return f"install-{index}"


def kernel_arguments(asset: Asset, machine: Machine, extra: str) -> str:
    """
    The kernel command line for an asset on a machine.

    Debian's iPXE (2019) hands initrds to the kernel's EFI stub by name on UEFI, so
    there the command line must name the initrd image (C{initrd=initrd}); the Proxmox
    installer copies that argument into the installed system's command line, where it
    is inert (boot loaders hand over the initrd themselves, and the kernel's EFI stub
    prefers theirs). On BIOS nothing is added.
    """
    arguments = [asset.kernel_cmdline, extra.strip()]
    initrds = asset.initrds_for(machine.efi)
    if machine.efi and len(initrds) == 1 and initrds[0].name is None:
        arguments.append(f"initrd={initrds[0].file}")
    return " ".join(a for a in arguments if a)


def menu_script(
    assets: Sequence[Asset],
    asset_url: str,
    menu_url: str,
    machine: Machine,
    choice: Choice,
    extra_arguments: str = "",
    refused: Mapping[str, Refusal] | None = None,
) -> str:
    """
    The menu: one entry per version (newest first within each product), local disk and
    the iPXE shell; a default taken after the timeout; a failed download comes back to
    the menu with a message instead of ending in a dead end.

    @param asset_url: Base URL of the assets directory, ending in C{/}.
    @param menu_url: This menu's URL with its query, to come back to.
    @param refused: The versions whose installer would not get this machine's answer,
        by key: their entry says so and why, before anyone downloads them.
    """
    refused = refused or {}
    labels = {asset.key: _label(i) for i, asset in enumerate(assets)}
    default = labels.get(
        choice.default, choice.default if choice.default in (LOCAL, SHELL) else LOCAL
    )
    who = str(machine.mac) if machine.mac else "this machine"
    low_memory = machine.memory_mib is not None and 0 < machine.memory_mib < MIN_MEMORY_MIB
    lines = [
        "#!ipxe",
        f"# pxe-pilot menu for {who}: {display(choice.reason, 200)}",
        ":menu",
        "menu pxe-pilot: Proxmox installation",
        f"item --gap -- Machine {who}"
        + (f", {machine.memory_mib} MiB of memory" if machine.memory_mib else ""),
    ]
    if low_memory:
        lines.append(
            f"item --gap -- WARNING: the installer needs at least {MIN_MEMORY_MIB} MiB of memory"
        )
    product = None
    for asset in assets:
        if asset.product_name != product:
            product = asset.product_name
            lines.append(f"item --gap -- {display(product)}")
        refusal = refused.get(asset.key)
        lines.append(
            f"item {labels[asset.key]} Install {display(asset.product_name)} "
            f"{display(asset.version)}" + (" (answer would be refused)" if refusal else "")
        )
        if refusal is not None:
            # iPXE shows a line's words joined by single spaces: a dash, not an
            # indent, ties the reason to the entry above it.
            lines.append(f"item --gap -- - {display(refusal.short)}")
    if not assets:
        lines.append("item --gap -- No boot assets found: run pxe-pilot-builder")
    lines += [
        "item --gap --",
        f"item {LOCAL} Boot from the local disk",
        f"item {SHELL} iPXE shell",
    ]
    timeout = f" --timeout {choice.timeout * 1000}" if choice.timeout > 0 else ""
    lines += [
        f"choose --default {default}{timeout} target || goto {LOCAL}",
        "goto ${target}",
        "",
    ]
    for asset in assets:
        base = f"{asset_url}{asset.directory}/"
        lines += [f":{labels[asset.key]}"]
        if low_memory:
            lines.append(
                f"echo WARNING: {machine.memory_mib} MiB of memory; the installer "
                f"needs at least {MIN_MEMORY_MIB} MiB."
            )
        lines += [
            f"echo Loading {display(asset.product_name)} {display(asset.version)} ...",
            f"kernel {base}{asset.kernel} {kernel_arguments(asset, machine, extra_arguments)}"
            " || goto failed",
        ]
        for initrd in asset.initrds_for(machine.efi):
            name = f" {initrd.name}" if initrd.name else ""
            lines.append(f"initrd {base}{initrd.file}{name} || goto failed")
        lines += ["boot || goto failed", ""]
    lines += [
        f":{LOCAL}",
        "echo Booting from the local disk ...",
        "exit",
        "",
        f":{SHELL}",
        "echo Type exit to come back to the menu.",
        "shell",
        "goto menu",
        "",
        ":failed",
        "echo Loading failed (${errno}): back to the menu in 10 seconds.",
        "imgfree",
        "sleep 10",
        f"chain --autofree {menu_url} || goto menu",
        "",
    ]
    return "\n".join(lines)


_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))(?::([0-9]{1,5}))?")


def valid_host(host: str) -> bool:
    """
    Whether a Host header can go into a script's URL as it is.
    """
    found = _HOST.fullmatch(host)
    return found is not None and (found.group(2) is None or int(found.group(2)) <= 65535)
