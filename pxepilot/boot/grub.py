"""
The GRUB side of the Secure Boot chain, as pure functions: which names a network GRUB
may ask pxe-pilot for, and the configuration it gets.

A network GRUB (Debian's signed C{grubnetx64}, Proxmox's signed GRUB) reads its
configuration over TFTP under its prefix, here C{grub/}, trying in turn
C{grub.cfg-01-<mac>}, C{grub.cfg-<IPv4 in hex>} shortened one digit at a time, and
C{grub.cfg}. Whichever it asks for first gets the same short first stage: it reads the
sizes of the memory modules from SMBIOS (GRUB cannot add them up) and loads the second
stage, C{grub/menu-01-<mac>-m<sizes>}, naming the MAC address GRUB boots from. The
second stage is the menu, decided for that machine as the iPXE menu is.

A signed GRUB cannot load modules: what it has is built in. Debian 12's has C{tftp}
but no C{http}; the menu tries HTTP first when the asset URL is plain HTTP and falls
back to pxe-pilot's TFTP, which serves the assets' kernels and initrds under
C{assets/}.

Names are parsed strictly: a MAC or an IP address that does not parse, or any other
name under C{grub/}, is no configuration (the TFTP side answers file-not-found).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from attrs import frozen

from pxepilot.boot.catalogue import Asset
from pxepilot.boot.ipxe import (
    LOCAL,
    MIN_MEMORY_MIB,
    SHELL,
    Choice,
    Refusal,
    device_mib,
    display,
)
from pxepilot.macs import MacAddress, MacAddressError

PREFIX = "grub"
# Where the assets' kernels and initrds are, over pxe-pilot's TFTP.
TFTP_ASSETS = "assets"
# SMBIOS memory devices the first stage reads (GRUB counts instances from 1).
MAX_MEMORY_DEVICES = 32

_MAC = r"[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}"
_FIRST_STAGE = re.compile(r"grub\.cfg(?:-01-(?P<mac>.*)|-(?P<ip>.*))?")
_SECOND_STAGE = re.compile(rf"menu-01-(?P<mac>{_MAC})-m(?P<memory>[0-9.-]{{0,400}})")
_HEX_ADDRESS = re.compile(r"[0-9A-Fa-f]{1,8}")
_DEVICE = re.compile(r"(?P<size>[0-9]{1,5})-(?P<extended>[0-9]{1,10})")


class NotAGrubConfig(ValueError):
    """
    The name is none of the configurations pxe-pilot makes for GRUB; the message says
    why, for the log.
    """


@frozen
class FirstStage:
    """
    A request for GRUB's configuration by one of the names GRUB tries.

    @ivar mac: The MAC address the name carries, if it is C{grub.cfg-01-<mac>}.
    @ivar address: The hex digits of the IPv4 address it carries, if any.
    """

    mac: MacAddress | None = None
    address: str | None = None


@frozen
class SecondStage:
    """
    A request for the menu of one machine.

    @ivar mac: The MAC address GRUB boots from.
    @ivar memory_mib: The machine's memory from SMBIOS, when it has a table.
    """

    mac: MacAddress
    memory_mib: int | None


def parse_name(name: str) -> FirstStage | SecondStage:
    """
    What a name under GRUB's prefix (C{grub/} already taken off) asks for.

    @raise NotAGrubConfig: for anything but C{grub.cfg}, C{grub.cfg-01-<mac>},
        C{grub.cfg-<1 to 8 hex digits>} and C{menu-01-<mac>-m<memory devices>}.
    """
    first = _FIRST_STAGE.fullmatch(name)
    if first is not None:
        if first.group("mac") is not None:
            try:
                return FirstStage(mac=MacAddress.parse(first.group("mac")))
            except MacAddressError:
                raise NotAGrubConfig(f"{name!r} does not name a MAC address") from None
        address = first.group("ip")
        if address is None:
            return FirstStage()
        if not _HEX_ADDRESS.fullmatch(address):
            raise NotAGrubConfig(f"{name!r} does not name an IPv4 address in hex")
        return FirstStage(address=address.upper())
    second = _SECOND_STAGE.fullmatch(name)
    if second is None:
        raise NotAGrubConfig(f"{name!r} is not a configuration pxe-pilot makes for GRUB")
    return SecondStage(MacAddress.parse(second.group("mac")), memory_mib(second.group("memory")))


def memory_mib(devices: str) -> int | None:
    """
    The memory in MiB from the first stage's list of SMBIOS memory devices: for each,
    C{<size word>-<extended size>.} in decimal, as GRUB's C{smbios} command reads them.

    The size word counts MiB, or KiB when bit 15 is set; C{0x7fff} means the extended
    size (MiB in bits 0-30) holds it; 0 is an empty slot and C{0xffff} unknown.
    """
    total = 0
    for device in devices.split(".")[:MAX_MEMORY_DEVICES]:
        found = _DEVICE.fullmatch(device)
        if found is None:
            continue
        size, extended = int(found.group("size")), int(found.group("extended"))
        if size in (0, 0xFFFF) or size > 0xFFFF:
            continue
        total += device_mib(size, extended)
    return total or None


def first_stage() -> str:
    """
    The configuration GRUB gets by any of the names it tries: gather the memory
    modules' sizes, then load the menu of the NIC GRUB boots from.
    """
    devices = " ".join(str(i) for i in range(1, MAX_MEMORY_DEVICES + 1))
    return (
        "# pxe-pilot: the machine's memory from SMBIOS, then its own menu\n"
        'set pxepilot_memory=""\n'
        f"for pxepilot_device in {devices}; do\n"
        "  if smbios --type 17 --match $pxepilot_device --get-word 12 --set pxepilot_size;"
        " then\n"
        "    if smbios --type 17 --match $pxepilot_device --get-dword 28"
        " --set pxepilot_extended; then true; else set pxepilot_extended=0; fi\n"
        '    set pxepilot_memory="${pxepilot_memory}${pxepilot_size}-${pxepilot_extended}."\n'
        "  else\n"
        "    break\n"
        "  fi\n"
        "done\n"
        f"configfile $prefix/menu-01-$net_default_mac-m$pxepilot_memory\n"
    )


def _title(text: str) -> str:
    # display() leaves no quote, backslash or $: inside single quotes, nothing expands.
    return f"'{display(text, 200)}'"


def _http_device(asset_url: str) -> tuple[str, str] | None:
    """
    GRUB's device and path for a plain HTTP asset URL: C{(http,host:port)}, C{/path/}.
    """
    found = re.fullmatch(
        r"http://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]+))?(/.*)", asset_url
    )
    if found is None:
        return None
    host, port, path = found.groups()
    server = host if port in (None, "80") else f"{host}:{port}"
    return f"(http,{server})", path


def _loads(device: str, base: str, asset: Asset, arguments: str, indent: str) -> list[str]:
    lines = [f"{indent}linux {device}{base}{asset.kernel} {arguments}".rstrip()]
    # GRUB wraps a file given as newc:<name>:<file> into a cpio member of that name, as
    # iPXE does for a named initrd.
    files = " ".join(
        f"newc:{i.name}:{device}{base}{i.file}" if i.name else f"{device}{base}{i.file}"
        for i in asset.initrds
    )
    return [*lines, f"{indent}initrd {files}"]


def menu(
    assets: Sequence[Asset],
    asset_url: str,
    machine: SecondStage,
    choice: Choice,
    extra_arguments: str = "",
    refused: Mapping[str, Refusal] | None = None,
) -> str:
    """
    GRUB's menu for one machine: one entry per version (newest first within each
    product), the local disk and the firmware's setup; the default taken after the
    timeout. Kernel and initrd come over HTTP when this GRUB has HTTP and the asset URL
    is plain HTTP, else over pxe-pilot's TFTP.

    @param asset_url: Base URL of the assets directory, ending in C{/}.
    @param refused: The versions whose installer would not get this machine's answer.
    """
    refused = refused or {}
    ids = {asset.key: f"install-{i}" for i, asset in enumerate(assets)}
    default = ids.get(choice.default, LOCAL)
    # GRUB has no shell to offer in its place: the menu waits for a person instead.
    timeout = -1 if choice.timeout <= 0 or choice.default == SHELL else choice.timeout
    low_memory = machine.memory_mib is not None and machine.memory_mib < MIN_MEMORY_MIB
    memory = f", {machine.memory_mib} MiB of memory" if machine.memory_mib else ""
    lines = [
        f"# pxe-pilot GRUB menu for {machine.mac}: {display(choice.reason, 200)}",
        f"set default={default}",
        # GRUB waits for ever with -1, boots at once with 0; the menu's 0 waits.
        f"set timeout={timeout}",
        f"echo {_title(f'pxe-pilot: Proxmox installation, machine {machine.mac}{memory}')}",
    ]
    if low_memory:
        lines.append(
            f"echo 'WARNING: the installer needs at least {MIN_MEMORY_MIB} MiB of memory'"
        )
    http = _http_device(asset_url)
    for asset in assets:
        refusal = refused.get(asset.key)
        title = f"Install {asset.product_name} {asset.version}"
        if refusal is not None:
            title += f" (answer would be refused: {refusal.short})"
        arguments = " ".join(a for a in (asset.kernel_cmdline, extra_arguments.strip()) if a)
        tftp_base = f"/{TFTP_ASSETS}/{asset.directory}/"
        lines.append(f"menuentry {_title(title)} --id {ids[asset.key]} {{")
        if low_memory:
            lines.append(
                f"  echo 'WARNING: {machine.memory_mib} MiB of memory; the installer needs "
                f"at least {MIN_MEMORY_MIB} MiB.'"
            )
        lines.append(f"  echo {_title(f'Loading {asset.product_name} {asset.version} ...')}")
        tftp = _loads("(tftp,$net_default_server)", tftp_base, asset, arguments, "    ")
        if http is not None:
            device, path = http
            # A GRUB without the http module fails the first command: TFTP then.
            http_loads = _loads(device, f"{path}{asset.directory}/", asset, arguments, "")
            lines += [
                f"  if {http_loads[0]}; then",
                f"    {http_loads[1]}",
                "  else",
                *tftp,
                "  fi",
            ]
        else:
            lines += [line[2:] for line in tftp]
        lines.append("}")
    if not assets:
        lines.append("echo 'No boot assets found: run pxe-pilot-builder'")
    lines += [
        f"menuentry 'Boot from the local disk' --id {LOCAL} {{",
        "  echo 'Booting from the local disk ...'",
        "  exit",
        "}",
        "menuentry 'Firmware setup' --id firmware-setup {",
        "  fwsetup",
        "}",
        "",
    ]
    return "\n".join(lines)
