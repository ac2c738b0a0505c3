"""
Whether the Proxmox installer of a given version accepts an answer file: files each
version accepts, files it rejects (with the key, its line and what to write instead),
where keys are in the text, version ranges guessed from installer requests, and
properties that hold for any document.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from pxepilot.answers.lines import key_lines
from pxepilot.answers.lint import Finding, errors, lint, lint_range
from pxepilot.answers.request import InstallerRequest, parse_installer_request
from pxepilot.answers.schema import SCHEMA, Key
from pxepilot.answers.versions import InstallerVersion, VersionRange, installer_versions
from tests.answers.strategies import answer_documents
from tests.conftest import fixture_bytes

V = InstallerVersion.parse

# The reference's minimal answer: the 9.2 shape (kebab-case, [network] source).
MINIMAL = """\
[global]
keyboard = "en-us"
country = "us"
fqdn = "pve01.example.com"
mailto = "ops@example.com"
timezone = "UTC"
root-password = "changeme123"

[network]
source = "from-dhcp"

[disk-setup]
filesystem = "zfs"
zfs.raid = "raid1"
disk-list = ["sda", "sdb"]
"""

# What an 8.2 installer accepts: snake_case keys, no [network] source.
SNAKE = """\
[global]
keyboard = "de"
country = "at"
fqdn = "pve01.example.com"
mailto = "ops@example.com"
timezone = "Europe/Vienna"
root_password = "changeme123"
reboot_on_error = true

[network]

[disk-setup]
filesystem = "zfs"
disk_list = ["sda", "sdb"]
zfs.raid = "raid1"
zfs.arc_max = 2048
"""

STATIC_NETWORK = """\
[network]
source = "from-answer"
cidr = "192.0.2.10/24"
dns = "192.0.2.1"
gateway = "192.0.2.254"
filter.ID_NET_NAME_MAC = "*a0369f0ab382"
"""

EXT4 = """\
[disk-setup]
filesystem = "ext4"
disk-list = ["sda"]
"""

BTRFS = """\
[disk-setup]
filesystem = "btrfs"
btrfs.raid = "raid1"
disk-list = ["sda", "sdb"]
"""


def edit(text: str, old: str, new: str) -> str:
    """
    C{text} with its one occurrence of C{old} replaced.
    """
    assert text.count(old) == 1, f"{old!r} is not in the file exactly once"
    return text.replace(old, new)


def with_section(text: str, section: str) -> str:
    """
    C{text} with the section of the same name replaced by C{section}.
    """
    name = section.splitlines()[0]
    start = text.index(name)
    end = text.find("\n[", start + 1)
    return text[:start] + section + ("" if end == -1 else text[end:])


def line_of(text: str, needle: str) -> int:
    """
    The 1-based number of the one line of C{text} that contains C{needle}.
    """
    numbers = [n for n, line in enumerate(text.split("\n"), start=1) if needle in line]
    assert len(numbers) == 1, f"{needle!r} is on lines {numbers}"
    return numbers[0]


def check(text: str, version: str, product: str | None = None) -> list[Finding]:
    return lint(text.encode(), V(version), product)


def assert_one_error(
    text: str,
    version: str,
    key: str,
    at: str | None,
    message: str,
    fix: str | None = None,
    product: str | None = None,
) -> None:
    """
    Installer C{version} rejects C{text} for one reason only: C{key}, on the line holding
    C{at} (no line for C{None}), with C{message} in what is wrong and C{fix} as what to
    write.
    """
    found = check(text, version, product)
    assert len(found) == 1, found
    [finding] = found
    assert finding.severity == "error"
    assert finding.key == key
    assert finding.line == (None if at is None else line_of(text, at))
    assert message in finding.message
    if fix is not None:
        assert finding.fix == fix


# -- files the installer accepts


def test_minimal_answer() -> None:
    """
    The reference's minimal answer (ZFS RAID1 on two disks) passes for 9.2 without a
    single finding.
    """
    assert check(MINIMAL, "9.2") == []


def test_snake_case_file_for_8_2() -> None:
    """
    An 8.2 installer accepts snake_case keys and a [network] without source.
    """
    assert check(SNAKE, "8.2") == []
    assert check(SNAKE, "8.3") == []


def test_reboot_mode_needs_8_4_3() -> None:
    """
    reboot-mode came with installer 8.4.3: an 8.4.0 installer rejects it, 8.4.3 takes it.
    """
    text = edit(MINIMAL, 'timezone = "UTC"\n', 'timezone = "UTC"\nreboot-mode = "power-off"\n')
    assert check(text, "8.4.3") == []
    assert_one_error(
        text, "8.4", "global.reboot-mode", "reboot-mode", "needs installer 8.4.3 or later"
    )


def test_static_network() -> None:
    """
    A static network with address, DNS server, gateway and a NIC filter is accepted.
    """
    assert check(with_section(MINIMAL, STATIC_NETWORK), "9.2") == []


def test_zfs_mirror_by_filter() -> None:
    """
    Disks can be chosen by a udev filter (a glob on the serial, all entries matching)
    instead of a list; the disk count is then only known on the machine.
    """
    text = edit(
        MINIMAL,
        'disk-list = ["sda", "sdb"]\n',
        'filter.ID_SERIAL = "WDC_WD40*"\nfilter-match = "all"\n',
    )
    assert check(text, "9.2") == []


def test_btrfs_for_pve() -> None:
    """
    Proxmox VE installs on btrfs RAID1.
    """
    assert check(with_section(MINIMAL, BTRFS), "9.2", "pve") == []


def test_webhook() -> None:
    """
    A post-installation webhook with a URL and a pinned certificate is accepted; 8.3
    spelled the fingerprint's key in snake_case.
    """
    webhook = (
        '\n[post-installation-webhook]\nurl = "https://hooks.example.com/installed"\n'
        'cert-fingerprint = "AB:CD:EF:01:23:45"\n'
    )
    assert check(MINIMAL + webhook, "9.2") == []
    assert check(SNAKE + webhook.replace("cert-fingerprint", "cert_fingerprint"), "8.3") == []


def test_first_boot_kebab_case_from_the_start() -> None:
    """
    [first-boot] came with 8.3 in kebab-case, while its neighbours were snake_case.
    """
    first_boot = (
        '\n[first-boot]\nsource = "from-url"\nurl = "https://example.com/first-boot.sh"\n'
        'cert-fingerprint = "AB:CD:EF:01:23:45"\n'
    )
    assert check(SNAKE + first_boot, "8.3") == []


def test_first_boot_from_url() -> None:
    """
    A first-boot script fetched from a URL, run once the network is online.
    """
    text = MINIMAL + (
        '\n[first-boot]\nsource = "from-url"\nurl = "https://example.com/first-boot.sh"\n'
        'ordering = "network-online"\n'
    )
    assert check(text, "9.2") == []


def test_hashed_root_password() -> None:
    """
    A crypt hash may stand in for the plain root password.
    """
    text = edit(
        MINIMAL,
        'root-password = "changeme123"',
        'root-password-hashed = "$6$rounds=5000$salt$Hx0y8pL1AZrrN9"',
    )
    assert check(text, "9.2") == []


def test_fqdn_from_dhcp() -> None:
    """
    From 8.4.3 on, the host name may come from DHCP with a fixed domain; whether the
    lease names the host only the network knows, which is a warning.
    """
    text = edit(
        MINIMAL,
        'fqdn = "pve01.example.com"',
        'fqdn = {source = "from-dhcp", domain = "example.com"}',
    )
    [finding] = check(text, "9.0")
    assert (finding.severity, finding.key) == ("warning", "global.fqdn")
    assert finding.message.startswith("depends on the network: ")


def test_interface_name_pinning() -> None:
    """
    A 9.1 installer pins interface names to MAC addresses.
    """
    text = edit(
        MINIMAL,
        'source = "from-dhcp"\n',
        'source = "from-dhcp"\n\n[network.interface-name-pinning]\nenabled = true\n\n'
        '[network.interface-name-pinning.mapping]\n"b0:7b:25:c1:0a:10" = "mgmt0"\n'
        '"B0:7B:25:C1:0A:11" = "storage0"\n',
    )
    assert check(text, "9.1") == []


def test_subscription_key() -> None:
    """
    A 9.2 installer stages a subscription key.
    """
    text = edit(
        MINIMAL, 'timezone = "UTC"\n', 'timezone = "UTC"\nsubscription-key = "pve4c-0123456789"\n'
    )
    assert check(text, "9.2") == []


def test_network_source_optional_before_9_2() -> None:
    """
    Before 9.2 a [network] without source means DHCP.
    """
    text = edit(MINIMAL, 'source = "from-dhcp"\n', "")
    assert check(text, "9.1") == []


def test_upper_case_raid_level() -> None:
    """
    Upper-case RAID levels work from installer 8.3.3; 8.3.0 needs raid1 in lower case,
    and the fix says so (its RAIDZ levels, though, were upper case only).
    """
    text = edit(SNAKE, '"raid1"', '"RAID1"')
    assert check(text, "8.3.3") == []
    assert_one_error(
        text, "8.3", "disk-setup.zfs.raid", "RAID1", "needs installer 8.3.3", "write 'raid1'"
    )


@pytest.mark.parametrize("zone", ["Europe/Vienna", "UTC", "America/Argentina/Buenos_Aires"])
def test_time_zones(zone: str) -> None:
    """
    Zones of tzdata's zone.tab, and UTC, are accepted.
    """
    assert check(edit(MINIMAL, '"UTC"', f'"{zone}"'), "9.2") == []


def test_snake_case_is_deprecated_from_8_4() -> None:
    """
    A 9.2 installer still accepts snake_case keys; each is a warning with the kebab-case
    spelling, never an error.
    """
    text = edit(MINIMAL, "root-password", "root_password")
    text = edit(text, "disk-list", "disk_list")
    found = check(text, "9.2")
    assert errors(found) == []
    assert [(f.severity, f.key, f.line, f.fix) for f in found] == [
        ("warning", "global.root-password", 7, "write 'root-password'"),
        ("warning", "disk-setup.disk-list", 15, "write 'disk-list'"),
    ]


# -- files the installer rejects


@pytest.mark.parametrize(
    ("text", "version", "key", "fix"),
    [
        (
            edit(MINIMAL, 'timezone = "UTC"\n', 'timezone = "UTC"\nrebot-on-error = true\n'),
            "9.2",
            "global.rebot-on-error",
            "did you mean 'reboot-on-error'?",
        ),
        (
            edit(SNAKE, "reboot_on_error", "rebot-on-error"),
            "8.3",
            "global.rebot-on-error",
            "did you mean 'reboot_on_error'?",
        ),
        (
            MINIMAL + '\n[post-install-webhook]\nurl = "https://hooks.example.com/"\n',
            "9.2",
            "post-install-webhook",
            "did you mean 'post-installation-webhook'?",
        ),
    ],
    ids=["kebab", "snake", "section"],
)
def test_unknown_key(text: str, version: str, key: str, fix: str) -> None:
    """
    A misspelt key is an error (the installer denies unknown fields), and the fix names
    the key meant, spelled as that installer wants it.
    """
    assert_one_error(text, version, key, key.rsplit(".", 1)[-1], "unknown key", fix)


@pytest.mark.parametrize(
    ("version", "old", "new", "key"),
    [
        ("8.3", "root_password", "root-password", "global.root-password"),
        ("8.2", "disk_list", "disk-list", "disk-setup.disk-list"),
        ("8.3", "zfs.arc_max", "zfs.arc-max", "disk-setup.zfs.arc-max"),
    ],
)
def test_kebab_case_before_8_4(version: str, old: str, new: str, key: str) -> None:
    """
    Installers 8.2 and 8.3 know only the snake_case spelling; the fix writes it.
    """
    assert_one_error(
        edit(SNAKE, old, new),
        version,
        key,
        new,
        f"does not know the spelling {new.rsplit('.', 1)[-1]!r}",
        f"write {old.rsplit('.', 1)[-1]!r}",
    )


@pytest.mark.parametrize(
    ("base", "version", "old", "new", "key"),
    [
        (SNAKE, "8.3", "[disk-setup]", "[disk_setup]", "disk-setup"),
        (MINIMAL, "9.2", "[disk-setup]", "[disk_setup]", "disk-setup"),
        (
            MINIMAL,
            "9.1",
            'source = "from-dhcp"\n',
            'source = "from-dhcp"\ninterface_name_pinning.enabled = false\n',
            "network.interface-name-pinning",
        ),
    ],
)
def test_snake_case_never_known(base: str, version: str, old: str, new: str, key: str) -> None:
    """
    Section names were kebab-case from the start: no installer takes them in snake_case,
    the deprecated aliases notwithstanding.
    """
    spelled = new.splitlines()[-1].split(".")[0].strip("[]")
    assert_one_error(
        edit(base, old, new),
        version,
        key,
        spelled,
        f"no installer knows the spelling {spelled!r}",
        f"write {key.rsplit('.', 1)[-1]!r}",
    )


def test_both_spellings() -> None:
    """
    A key given in both spellings is given twice.
    """
    text = edit(
        MINIMAL,
        'root-password = "changeme123"\n',
        'root-password = "changeme123"\nroot_password = "changeme123"\n',
    )
    found = check(text, "9.2")
    assert [(f.key, f.line) for f in errors(found)] == [("global.root-password", 8)]
    assert "given twice" in errors(found)[0].message
    assert [f.severity for f in found] == ["error", "warning"]


def test_both_spellings_one_invalid() -> None:
    """
    A key given twice is reported even when its first value was already wrong.
    """
    text = edit(
        MINIMAL,
        'root-password = "changeme123"\n',
        'root_password = 12345678\nroot-password = "changeme123"\n',
    )
    assert [(f.severity, f.key, f.line) for f in check(text, "9.2")] == [
        ("error", "global.root-password", 7),
        ("warning", "global.root-password", 7),
        ("error", "global.root-password", 8),
    ]


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            'keyboard = "en-us"',
            "keyboard = 1",
            "global.keyboard",
            "must be a string, not an integer",
        ),
        (
            'timezone = "UTC"\n',
            'timezone = "UTC"\nreboot-on-error = "yes"\n',
            "global.reboot-on-error",
            "must be true or false, not a string",
        ),
        (
            'disk-list = ["sda", "sdb"]',
            'disk-list = "sda"',
            "disk-setup.disk-list",
            "must be an array of strings, not a string",
        ),
        (
            'zfs.raid = "raid1"\n',
            'zfs.raid = "raid1"\nzfs.ashift = 12.0\n',
            "disk-setup.zfs.ashift",
            "must be an integer, not a number",
        ),
    ],
)
def test_wrong_type(old: str, new: str, key: str, message: str) -> None:
    """
    A value of the wrong TOML type is rejected, and the message says which type.
    """
    text = edit(MINIMAL, old, new)
    assert_one_error(text, "9.2", key, new.splitlines()[-1], message)


@pytest.mark.parametrize(
    ("text", "key", "at", "message", "fix"),
    [
        (
            edit(MINIMAL, '"en-us"', '"en-US"'),
            "global.keyboard",
            "keyboard",
            "'en-US' is not one of de, de-ch",
            "write 'en-us'",
        ),
        (
            edit(MINIMAL, '"zfs"', '"ntfs"'),
            "disk-setup.filesystem",
            "filesystem",
            "'ntfs' is not one of btrfs, ext4, xfs, zfs",
            "",
        ),
        (
            edit(MINIMAL, 'zfs.raid = "raid1"\n', 'zfs.raid = "raid1"\nzfs.compress = "brotli"\n'),
            "disk-setup.zfs.compress",
            "compress",
            "'brotli' is not one of gzip, lz4, lzjb, off, on, zle, zstd",
            "",
        ),
        (
            edit(
                MINIMAL,
                'disk-list = ["sda", "sdb"]\n',
                'filter.ID_SERIAL = "WDC*"\nfilter-match = "some"\n',
            ),
            "disk-setup.filter-match",
            "filter-match",
            "'some' is not one of all, any",
            "",
        ),
    ],
    ids=["keyboard", "filesystem", "compress", "filter-match"],
)
def test_not_an_allowed_value(text: str, key: str, at: str, message: str, fix: str) -> None:
    """
    A string outside its key's set of values is rejected with the values allowed.
    """
    assert_one_error(text, "9.2", key, at, message, fix)


@pytest.mark.parametrize(
    ("old", "key", "at"),
    [
        (MINIMAL[: MINIMAL.index("[network]")], "global", None),
        ('[network]\nsource = "from-dhcp"\n\n', "network", None),
        (MINIMAL[MINIMAL.index("[disk-setup]") :], "disk-setup", None),
        ('keyboard = "en-us"\n', "global.keyboard", "[global]"),
        ('mailto = "ops@example.com"\n', "global.mailto", "[global]"),
        ('filesystem = "zfs"\n', "disk-setup.filesystem", "[disk-setup]"),
        ('source = "from-dhcp"\n', "network.source", "[network]"),
    ],
    ids=["global", "network", "disk-setup", "keyboard", "mailto", "filesystem", "source"],
)
def test_required(old: str, key: str, at: str | None) -> None:
    """
    A missing section or key the installer needs is named, at the line of the table it
    belongs in; [network] source is required from 9.2.
    """
    text = edit(MINIMAL, old, "")
    assert_one_error(text, "9.2", key, at, "required")


def test_passwords() -> None:
    """
    Exactly one of root-password and root-password-hashed.
    """
    both = edit(
        MINIMAL,
        'root-password = "changeme123"\n',
        'root-password = "changeme123"\nroot-password-hashed = "$y$j9T$salt$hash"\n',
    )
    assert_one_error(
        both, "9.2", "global.root-password-hashed", "root-password-hashed", "both set", "keep one"
    )
    neither = edit(MINIMAL, 'root-password = "changeme123"\n', "")
    assert_one_error(
        neither,
        "9.2",
        "global.root-password",
        "[global]",
        "is required",
        "add root-password or root-password-hashed",
    )
    assert_one_error(
        edit(SNAKE, 'root_password = "changeme123"\n', ""),
        "8.3",
        "global.root-password",
        "[global]",
        "is required",
        "add root_password or root_password_hashed",
    )


def test_short_password_from_8_4() -> None:
    """
    From 8.4 on the plain root password has at least 8 characters; 8.3 took shorter ones.
    """
    short = edit(MINIMAL, '"changeme123"', '"secret7"')
    assert_one_error(short, "8.4", "global.root-password", "root-password", "at least 8")
    assert check(edit(SNAKE, '"changeme123"', '"secret7"'), "8.3") == []


def test_hashed_password_not_a_hash() -> None:
    """
    A plain password in root-password-hashed is said before the install: the installer
    stores it as the hash, and root cannot log in with a password.
    """
    text = edit(MINIMAL, 'root-password = "changeme123"', 'root-password-hashed = "changeme123"')
    [finding] = check(text, "9.2")
    assert (finding.severity, finding.key) == ("warning", "global.root-password-hashed")
    assert "the installer accepts this" in finding.message
    assert "crypt" in finding.message


@pytest.mark.parametrize(
    ("fqdn", "message"),
    [
        ("pve01", "not a fully qualified domain name"),
        ("-pve01.example.com", "invalid label '-pve01'"),
        ("a" * 64 + ".example.com", "invalid label 'aaaa"),
        ("123.example.com", "may not be all digits"),
        (".".join(["a" * 63] * 4), "longer than 253"),
        ("pve01.example.com.", "invalid label ''"),
    ],
    ids=["single-label", "leading-hyphen", "64-chars", "digits", "too-long", "trailing-dot"],
)
def test_fqdn(fqdn: str, message: str) -> None:
    """
    The FQDN has at least two labels of 1 to 63 characters, no hyphen at either end, at
    most 253 characters, and a host name that is not a number.
    """
    text = edit(MINIMAL, '"pve01.example.com"', f'"{fqdn}"')
    assert_one_error(text, "9.2", "global.fqdn", "fqdn", message)


def test_fqdn_rules_at_the_limits() -> None:
    """
    63-character labels, 253 characters in all, and digits in domain labels are fine.
    """
    for fqdn in ["a" * 63 + ".example.com", ".".join(["a" * 63] * 3 + ["b" * 61]), "pve1.42.net"]:
        assert check(edit(MINIMAL, '"pve01.example.com"', f'"{fqdn}"'), "9.2") == [], fqdn


@pytest.mark.parametrize(
    ("mailto", "message"),
    [("ops", "not an e-mail address"), ("mail@example.invalid", "placeholder")],
)
def test_mailto(mailto: str, message: str) -> None:
    """
    The e-mail address must be one, and not the installer's placeholder.
    """
    text = edit(MINIMAL, '"ops@example.com"', f'"{mailto}"')
    assert_one_error(text, "9.2", "global.mailto", "mailto", message)


@pytest.mark.parametrize(
    ("country", "message", "fix"),
    [("US", "(lower case)", "write 'us'"), ("xx", "not an ISO 3166-1 alpha-2", "")],
)
def test_country(country: str, message: str, fix: str) -> None:
    """
    Countries are lower-case ISO 3166-1 codes that exist.
    """
    text = edit(MINIMAL, 'country = "us"', f'country = "{country}"')
    assert_one_error(text, "9.2", "global.country", "country", message, fix)


def test_timezone() -> None:
    """
    A zone tzdata does not list is rejected.
    """
    text = edit(MINIMAL, '"UTC"', '"Mars/Olympus"')
    assert_one_error(
        text, "9.2", "global.timezone", "timezone", "'Mars/Olympus' is not a time zone"
    )


@pytest.mark.parametrize(
    ("old", "new", "key", "message", "fix"),
    [
        ('"192.0.2.10/24"', '"192.0.2.10/33"', "network.cidr", "with its prefix length", ""),
        ('dns = "192.0.2.1"', 'dns = "ns1.example.com"', "network.dns", "not an IP address", ""),
    ],
    ids=["bad-prefix", "dns-name"],
)
def test_static_network_values(old: str, new: str, key: str, message: str, fix: str) -> None:
    """
    A static address has a valid prefix length; the DNS server is an IP address.
    One mistake is one error: the key is not also reported missing.
    """
    text = edit(with_section(MINIMAL, STATIC_NETWORK), old, new)
    assert_one_error(text, "9.2", key, new.split(" = ")[0].strip('"'), message, fix)


def test_dhcp_with_static_settings() -> None:
    """
    cidr and the other static settings go with source = "from-answer" only.
    """
    text = edit(
        MINIMAL, 'source = "from-dhcp"\n', 'source = "from-dhcp"\ncidr = "192.0.2.10/24"\n'
    )
    assert_one_error(
        text,
        "9.2",
        "network.cidr",
        "cidr",
        'only go with source = "from-answer"',
        'set source = "from-answer", or remove them',
    )


def test_static_network_without_gateway() -> None:
    """
    A static network needs its gateway; the finding points at [network].
    """
    text = edit(with_section(MINIMAL, STATIC_NETWORK), 'gateway = "192.0.2.254"\n', "")
    assert_one_error(text, "9.2", "network.gateway", "[network]", "is required")


def test_invalid_network_source() -> None:
    """
    An unknown network source is one error, not also a missing source or misplaced
    static settings.
    """
    text = edit(with_section(MINIMAL, STATIC_NETWORK), '"from-answer"', '"static"')
    assert_one_error(text, "9.2", "network.source", "source", "'static' is not one of")


@pytest.mark.parametrize(
    ("sections", "product", "key", "at", "message"),
    [
        (
            (
                'disk-list = ["sda", "sdb"]\n',
                'disk-list = ["sda", "sdb"]\nfilter.ID_SERIAL = "W*"\n',
            ),
            None,
            "disk-setup.filter",
            "filter",
            "cannot use both",
        ),
        (
            ('disk-list = ["sda", "sdb"]\n', ""),
            None,
            "disk-setup.disk-list",
            "[disk-setup]",
            "either",
        ),
        (
            (EXT4, EXT4.replace('["sda"]', '["sda", "sdb"]')),
            None,
            "disk-setup.disk-list",
            "disk-list",
            "ext4 installs on one disk; 2 are listed",
        ),
        (('zfs.raid = "raid1"\n', ""), None, "disk-setup.zfs.raid", "[disk-setup]", "required"),
        (
            ('zfs.raid = "raid1"\n', 'zfs.raid = "raid1"\nlvm.swapsize = 8\n'),
            None,
            "disk-setup.lvm",
            "lvm",
            "does not go with filesystem = 'zfs'",
        ),
        (
            (
                '"raid1"\ndisk-list = ["sda", "sdb"]',
                '"raid10"\ndisk-list = ["sda", "sdb", "sdc"]',
            ),
            None,
            "disk-setup.disk-list",
            "disk-list",
            "raid10 needs at least 4 disks; 3 listed",
        ),
        (
            (
                '"raid1"\ndisk-list = ["sda", "sdb"]',
                '"raid10"\ndisk-list = ["a", "b", "c", "d", "e"]',
            ),
            None,
            "disk-setup.disk-list",
            "disk-list",
            "even number",
        ),
        (
            ('"raid1"\ndisk-list = ["sda", "sdb"]', '"raidz-3"\ndisk-list = ["a", "b", "c", "d"]'),
            None,
            "disk-setup.disk-list",
            "disk-list",
            "raidz-3 needs at least 5 disks; 4 listed",
        ),
        (('["sda", "sdb"]', '["sda", "sda"]'), None, "disk-setup.disk-list", "disk-list", "twice"),
        (
            (MINIMAL[MINIMAL.index("[disk-setup]") :], BTRFS),
            "pbs",
            "disk-setup.filesystem",
            "filesystem",
            "btrfs",
        ),
        (
            (EXT4, EXT4 + "lvm.hdsize = 32\nlvm.swapsize = 16.5\n"),
            None,
            "disk-setup.lvm.swapsize",
            "swapsize",
            "at most half of hdsize",
        ),
    ],
    ids=[
        "list-and-filter",
        "no-disks",
        "ext4-two-disks",
        "zfs-without-raid",
        "zfs-with-lvm",
        "raid10-three",
        "raid10-odd",
        "raidz3-four",
        "duplicate",
        "btrfs-pbs",
        "swap-too-big",
    ],
)
def test_disks(
    sections: tuple[str, str], product: str | None, key: str, at: str, message: str
) -> None:
    """
    The disk setup the installer refuses: a list and a filter or neither, several disks
    for ext4, options of another filesystem, too few disks for the RAID level (or an odd
    count for ZFS RAID10), a disk twice, btrfs outside Proxmox VE, and swap over half the
    disk.
    """
    old, new = sections
    # A whole [disk-setup] is replaced; anything else is edited within it.
    if old.startswith("[disk-setup]"):
        text = with_section(MINIMAL, new)
    else:
        text = edit(MINIMAL, old, new)
    assert_one_error(text, "9.2", key, at, message, product=product)


def test_disks_within_limits() -> None:
    """
    The minimum disk counts are minimums: raid10 on 4 disks, raidz-3 on 5, swap at half
    the disk.
    """
    raid10 = edit(
        MINIMAL,
        '"raid1"\ndisk-list = ["sda", "sdb"]',
        '"raid10"\ndisk-list = ["a", "b", "c", "d"]',
    )
    raidz3 = edit(
        MINIMAL,
        '"raid1"\ndisk-list = ["sda", "sdb"]',
        '"raidz-3"\ndisk-list = ["a", "b", "c", "d", "e"]',
    )
    swap = with_section(MINIMAL, EXT4 + "lvm.hdsize = 32\nlvm.swapsize = 16\n")
    for text in (raid10, raidz3, swap):
        assert check(text, "9.2", "pve") == [], text


@pytest.mark.parametrize(
    ("text", "key", "at"),
    [
        (
            edit(MINIMAL, 'disk-list = ["sda", "sdb"]', "filter.ID_SERIAL = 42"),
            "disk-setup.filter",
            "ID_SERIAL",
        ),
        (
            edit(with_section(MINIMAL, STATIC_NETWORK), '"*a0369f0ab382"', "true"),
            "network.filter",
            "ID_NET_NAME_MAC",
        ),
    ],
    ids=["disk", "network"],
)
def test_filter_values_are_globs(text: str, key: str, at: str) -> None:
    """
    A udev filter matches strings against globs; any other value is a type error.
    """
    assert_one_error(text, "9.2", key, at, "must be a string (a glob)")


def test_invalid_raid_level() -> None:
    """
    An unknown RAID level is one error, not also a missing one.
    """
    text = edit(MINIMAL, '"raid1"', '"raid5"')
    assert_one_error(text, "9.2", "disk-setup.zfs.raid", "zfs.raid", "'raid5' is not one of")


def test_first_boot_and_webhook_urls() -> None:
    """
    A first-boot script from a URL needs the URL; a webhook needs its URL. A URL that is
    not http(s) is one error.
    """
    first_boot = MINIMAL + '\n[first-boot]\nsource = "from-url"\n'
    assert_one_error(
        first_boot, "9.2", "first-boot.url", "[first-boot]", 'with source = "from-url"'
    )
    webhook = MINIMAL + '\n[post-installation-webhook]\ncert-fingerprint = "AB:CD"\n'
    assert_one_error(
        webhook, "9.2", "post-installation-webhook.url", "[post-installation-webhook]", "required"
    )
    ftp = first_boot + 'url = "ftp://example.com/first-boot.sh"\n'
    assert_one_error(ftp, "9.2", "first-boot.url", "ftp://", "not an http:// or https:// URL")


@pytest.mark.parametrize(
    ("mapping", "key", "at", "message"),
    [
        (
            '"b0:7b:25:c1:0a:10" = "0mgmt"\n',
            "network.interface-name-pinning.mapping.b0:7b:25:c1:0a:10",
            "0mgmt",
            "not an interface name",
        ),
        (
            '"b0:7b:25:c1:0a:10" = "averyveryverylongname"\n',
            "network.interface-name-pinning.mapping.b0:7b:25:c1:0a:10",
            "averyvery",
            "to 15 characters",
        ),
        (
            '"b0:7b:25:c1:0a:10" = "mgmt0"\n"b0:7b:25:c1:0a:11" = "mgmt0"\n',
            "network.interface-name-pinning.mapping.b0:7b:25:c1:0a:11",
            '0a:11" = "mgmt0"',
            "also the name of b0:7b:25:c1:0a:10",
        ),
    ],
    ids=["bad-name", "long-name", "duplicate-name"],
)
def test_interface_name_pinning_mapping(mapping: str, key: str, at: str, message: str) -> None:
    """
    Pinned names map MAC addresses to valid, distinct interface names.
    """
    text = edit(
        MINIMAL,
        'source = "from-dhcp"\n',
        'source = "from-dhcp"\n\n[network.interface-name-pinning]\nenabled = true\n\n'
        f"[network.interface-name-pinning.mapping]\n{mapping}",
    )
    assert_one_error(text, "9.1", key, at, message)


@pytest.mark.parametrize(
    ("text", "version", "key", "at", "since"),
    [
        (
            edit(
                MINIMAL,
                'timezone = "UTC"\n',
                'timezone = "UTC"\nsubscription-key = "pve4c-0123456789"\n',
            ),
            "9.1",
            "global.subscription-key",
            "subscription-key",
            "9.2",
        ),
        (
            SNAKE + '\n[first-boot]\nsource = "from-iso"\n',
            "8.2",
            "first-boot",
            "[first-boot]",
            "8.3",
        ),
        (
            MINIMAL
            + '\n[post-installation-webhook]\nurl = "https://h.example.com/"\nauth-token = "t"\n',
            "9.1",
            "post-installation-webhook.auth-token",
            "auth-token",
            "9.2",
        ),
        (
            edit(SNAKE, 'fqdn = "pve01.example.com"', 'fqdn = {source = "from-dhcp"}'),
            "8.3",
            "global.fqdn",
            "fqdn",
            "8.4.3",
        ),
        (
            edit(
                MINIMAL,
                'source = "from-dhcp"\n',
                'source = "from-dhcp"\ninterface-name-pinning.enabled = false\n',
            ),
            "9.0",
            "network.interface-name-pinning",
            "interface-name-pinning",
            "9.1",
        ),
    ],
    ids=["subscription-key", "first-boot", "auth-token", "fqdn-table", "pinning"],
)
def test_keys_introduced_later(text: str, version: str, key: str, at: str, since: str) -> None:
    """
    A key an older installer does not know says which installer it needs.
    """
    assert_one_error(text, version, key, at, f"needs installer {since} or later")


@pytest.mark.parametrize(
    "data",
    [
        b'[global]\nfqdn = "m\xfcller.example.com"\n',
        MINIMAL.encode("utf-16"),
        b"[global\n",
        b'keyboard = "en-us"\nkeyboard = "de"\n',
    ],
    ids=["latin-1", "utf-16", "syntax", "duplicate-key"],
)
def test_not_a_toml_file(data: bytes) -> None:
    """
    Bytes that are not UTF-8 TOML give one error for the whole file.
    """
    [finding] = lint(data, V("9.2"))
    assert (finding.severity, finding.key, finding.line) == ("error", "", None)
    assert finding.message.startswith("not a TOML answer file: ")


# -- where keys are


def test_key_lines() -> None:
    """
    Keys are found on their lines whatever the TOML around them: dotted keys, table
    headers with spaces and quotes, quoted keys, comments, and arrays and strings over
    several lines (whose contents are not keys).
    """
    text = """\
# keyboard = "de"
[global]   # the machine
"root-password" = "changeme123"
'mailto' = "ops@example.com"
root-ssh-keys = ["ssh-ed25519 AAAA ops#1 [laptop]"]
country = "at"

[ disk-setup ]
zfs.raid = "raid1"
disk-list = [
    "sda",  # first ]
    "sdb",
    "[sdc]",
]
filter."ID_SERIAL" = '''
[network]
source = "x"
'''
zfs . ashift = 12

[network."interface-name-pinning".mapping]
"aa:bb:cc:dd:ee:ff" = "lan0"
"""
    assert key_lines(text) == {
        "global": 2,
        "global.root-password": 3,
        "global.mailto": 4,
        "global.root-ssh-keys": 5,
        "global.country": 6,
        "disk-setup": 8,
        "disk-setup.zfs": 9,
        "disk-setup.zfs.raid": 9,
        "disk-setup.disk-list": 10,
        "disk-setup.filter": 15,
        "disk-setup.filter.ID_SERIAL": 15,
        "disk-setup.zfs.ashift": 19,
        "network": 21,
        "network.interface-name-pinning": 21,
        "network.interface-name-pinning.mapping": 21,
        "network.interface-name-pinning.mapping.aa:bb:cc:dd:ee:ff": 22,
    }


def test_findings_point_past_awkward_values() -> None:
    """
    A '#' or a bracket inside a string does not shift the lines of later findings.
    """
    text = edit(
        MINIMAL,
        'root-password = "changeme123"\n',
        'root-password = "changeme123"\nroot-ssh-keys = ["ssh-ed25519 AAAA ops#1"]\n',
    )
    text = edit(text, 'filesystem = "zfs"', 'filesystem = "ntfs"')
    assert_one_error(text, "9.2", "disk-setup.filesystem", "ntfs", "not one of")


def test_lines_end_at_newlines_only() -> None:
    """
    A line separator (U+2028) inside a string does not shift the lines of later keys:
    TOML ends lines at newlines only.
    """
    text = edit(MINIMAL, '"changeme123"', '"change\u2028me123"')
    text = edit(text, '"zfs"', '"ntfs"')
    found = check(text, "9.2")
    assert [(f.key, f.line) for f in found] == [("disk-setup.filesystem", 13)]


def test_escaped_quoted_keys() -> None:
    """
    Quoted keys with escapes and table names with brackets are located.
    """
    text = '[global]\n"say \\"hi\\"" = 1\n\n["a]b".c]\nd = 2\n'
    lines = key_lines(text)
    assert lines['global.say "hi"'] == 2
    assert lines["a]b.c.d"] == 5


# -- installer version ranges


def test_error_at_both_ends_stays_an_error() -> None:
    """
    What every installer in the range rejects is an error, even when each end words it
    or fixes it its own way.
    """
    versions = VersionRange(V("8.3"), V("9.1.99"))
    typo = edit(MINIMAL, 'keyboard = "en-us"', "keyboard = 1")
    assert [(f.severity, f.key) for f in lint_range(typo.encode(), versions)] == [
        ("error", "global.keyboard"),
        ("warning", "global.root-password"),
        ("warning", "disk-setup.disk-list"),
    ]
    newer = edit(
        SNAKE,
        'timezone = "Europe/Vienna"\n',
        'timezone = "Europe/Vienna"\nsubscription-key = "pve4c-0123456789"\n',
    )
    unknown = edit(SNAKE, "reboot_on_error", "rebot_on_error")
    no_password = edit(SNAKE, 'root_password = "changeme123"\n', "")
    for text, key in [
        (newer, "global.subscription-key"),
        (unknown, "global.rebot_on_error"),
        (no_password, "global.root-password"),
        (edit(SNAKE, "[disk-setup]", "[disk_setup]"), "disk-setup"),
    ]:
        found = lint_range(text.encode(), versions)
        assert [(f.severity, f.key) for f in found if f.key == key] == [("error", key)], found
    # The fix works at both ends: the snake_case spelling.
    [finding] = errors(lint_range(unknown.encode(), versions))
    assert finding.fix == "did you mean 'reboot_on_error'?"


def test_error_at_one_end_is_a_warning() -> None:
    """
    What only some installers of the range reject is a warning that says which.
    """
    no_source = edit(MINIMAL, 'source = "from-dhcp"\n', "")
    found = lint_range(no_source.encode(), VersionRange(V("9.1"), V("9.2.99")))
    assert [(f.severity, f.key, f.line) for f in found] == [("warning", "network.source", 9)]
    assert found[0].message == "installer 9.2 would reject it: is required from installer 9.2"


def test_kebab_case_file_for_8_3_to_9_1() -> None:
    """
    A kebab-case file for a request that may come from 8.3 (lower-case MACs, no ISO
    release) is served with warnings: 9.0 and 9.1 take it.
    """
    versions = installer_versions(request_with({"iso": {}}))
    found = lint_range(MINIMAL.encode(), versions)
    assert errors(found) == []
    assert [(f.key, f.line) for f in found] == [
        ("global.root-password", 7),
        ("disk-setup.disk-list", 15),
    ]
    assert all(f.message.startswith("installer 8.3 would reject it: ") for f in found)


def test_single_version_range() -> None:
    """
    A range of one version is that version's findings.
    """
    versions = VersionRange.exactly(V("8.4.3"))
    text = edit(MINIMAL, "keyboard = ", "keybord = ")
    assert lint_range(text.encode(), versions) == lint(text.encode(), V("8.4.3"))


ACCEPT_JSON = "application/json, application/toml;q=0.5"


@pytest.mark.parametrize(
    ("fixture", "plain", "with_json"),
    [
        ("installer-post-8.2.json", "8.2.x", "8.2.x"),
        ("installer-post-8.3-to-9.1.json", "9.1.x", "9.2.x"),
        ("installer-post-9.2.json", "9.2.x", "9.2.x"),
        ("installer-post-pbs-vm-9.2.json", "9.2.x", "9.2.x"),
    ],
)
def test_installer_versions(fixture: str, plain: str, with_json: str) -> None:
    """
    The installer a request comes from, by its shape (8.2 sends no $schema, 9.2
    upper-case MACs and a JSON Accept) narrowed by the ISO release: Backup Server 4.1
    runs the 9.x installer, and its upper-case MACs say 9.2. Only 9.2 asks for JSON,
    whatever release the request names.
    """
    request = parse_installer_request(fixture_bytes(fixture))
    assert str(installer_versions(request)) == plain
    assert str(installer_versions(request, ACCEPT_JSON)) == with_json


def request_with(
    changes: dict[str, Any], fixture: str = "installer-post-8.3-to-9.1.json"
) -> InstallerRequest:
    """
    The request of C{fixture} with some of its top-level fields replaced.
    """
    document = json.loads(fixture_bytes(fixture)) | changes
    return parse_installer_request(json.dumps(document).encode())


@pytest.mark.parametrize(
    "changes",
    [
        {"iso": {}},
        {"product": {"product": "pdm"}},
        {"iso": {"release": "nine"}},
        {"iso": {"release": "7.4"}},
    ],
    ids=["no-release", "unknown-product", "odd-release", "release-outside-shape"],
)
def test_installer_versions_without_a_usable_release(changes: dict[str, Any]) -> None:
    """
    Without a product and release that fit its shape, a request with $schema and
    lower-case MACs may come from any installer from 8.3 to 9.1.
    """
    versions = installer_versions(request_with(changes))
    assert versions == VersionRange(V("8.3"), V("9.1.99"))
    assert str(versions) == "8.3 to 9.1.x"


def test_installer_versions_backup_server_3_4() -> None:
    """
    Backup Server 3.4 runs the 8.4 installer.
    """
    request = request_with(
        {
            "network_interfaces": [{"link": "ens18", "mac": "bc:24:11:5e:7a:01"}],
            "iso": {"release": "3.4", "isorelease": "1"},
        },
        "installer-post-pbs-vm-9.2.json",
    )
    assert request.schema_version == "1.0"
    assert str(installer_versions(request)) == "8.4.x"


def test_installer_versions_mail_gateway() -> None:
    """
    Mail Gateway releases are not installer versions (its 9.1 ISO has the 9.2
    installer): a request from it is judged by its shape.
    """
    product = {"fullname": "Proxmox Mail Gateway", "product": "pmg", "enable_btrfs": False}
    old_shape = request_with({"product": product, "iso": {"release": "9.0", "isorelease": "1"}})
    assert str(installer_versions(old_shape)) == "8.3 to 9.1.x"
    new_shape = request_with(
        {"product": product, "iso": {"release": "9.1", "isorelease": "1"}},
        "installer-post-9.2.json",
    )
    assert str(installer_versions(new_shape)) == "9.2.x"


def test_version_parse() -> None:
    """
    Versions are two or three numbers; anything else is a ValueError.
    """
    assert V("9.2") == InstallerVersion(9, 2, 0)
    assert V("8.4.3") == InstallerVersion(8, 4, 3)
    for text in ["9", "nine", "9.2.1.1", "", "9.x", "-9.2"]:
        with pytest.raises(ValueError, match="installer version"):
            V(text)


def test_version_order() -> None:
    """
    Versions compare by number, not as text.
    """
    assert V("8.2") < V("8.2.7") < V("8.4") < V("8.4.3") < V("9.0") < V("9.2")
    assert V("8.10") > V("8.9")
    assert V("8.4.0") == V("8.4")
    assert str(V("8.4.0")) == "8.4"


@pytest.mark.parametrize(
    ("versions", "text"),
    [
        (VersionRange.exactly(V("9.1")), "9.1.x"),
        (VersionRange(V("8.3"), V("9.1.99")), "8.3 to 9.1.x"),
        (VersionRange.exactly(V("8.4.3")), "8.4.3"),
        (VersionRange(V("8.4.3"), V("8.4.99")), "8.4.3 to 8.4.x"),
    ],
)
def test_version_range_text(versions: VersionRange, text: str) -> None:
    """
    A range reads as people write it.
    """
    assert str(versions) == text


# -- properties


def accepted(spec: Key, name: str, version: InstallerVersion) -> Key | None:
    """
    The key of C{spec} that installer C{version} takes under C{name}, read off the
    schema's own fields: a key from the version it came with, its kebab-case name from
    the version that spelling came with, its snake_case name only where the key has
    that alias.
    """
    for key in spec.keys:
        if version < key.since:
            continue
        kebab_ok = "-" not in key.name or version >= (key.kebab_from or key.since)
        if name == key.name and kebab_ok:
            return key
        if "-" in key.name and key.snake and name == key.name.replace("-", "_"):
            return key
    return None


def stray_keys(
    spec: Key, table: dict[str, Any], version: InstallerVersion, path: str = ""
) -> list[str]:
    """
    The paths of C{table}'s keys the schema does not give for C{version}; free-form
    tables (udev filters, the pinning map, an fqdn table) hold any keys.
    """
    stray = []
    for name, value in table.items():
        where = f"{path}.{name}" if path else name
        key = accepted(spec, name, version)
        if key is None:
            stray.append(where)
        elif key.kind == "section" and isinstance(value, dict):
            stray += stray_keys(key, value, version, where)
    return stray


@settings(derandomize=True, database=None, max_examples=500)
@given(answer_documents())
def test_accepted_documents_hold_only_known_keys(
    drawn: tuple[InstallerVersion, dict[str, Any]],
) -> None:
    """
    A document without errors is TOML whose every key is one the installer knows, in a
    spelling it accepts.
    """
    version, document = drawn
    data = tomli_w.dumps(document).encode()
    if errors(lint(data, version)):
        return
    assert tomllib.loads(data.decode()) == document
    assert stray_keys(SCHEMA, document, version) == []


corruptions = st.one_of(
    st.just(lambda data: data),
    st.integers(0, 2000).map(lambda n: lambda data: data[:n]),
    st.tuples(st.integers(0, 2000), st.binary(max_size=8)).map(
        lambda cut: lambda data: data[: cut[0]] + cut[1] + data[cut[0] :]
    ),
)


@settings(derandomize=True, database=None, max_examples=300)
@given(
    answer_documents(),
    corruptions,
    st.sampled_from([None, "pve", "pbs", "pmg"]),
)
def test_lint_never_raises(
    drawn: tuple[InstallerVersion, dict[str, Any]], corrupt: Any, product: str | None
) -> None:
    """
    Whatever a file holds, even cut short or with stray bytes, the checker answers with
    findings rather than an exception.
    """
    version, document = drawn
    data = corrupt(tomli_w.dumps(document).encode())
    found = lint(data, version, product)
    assert all(f.severity in ("error", "warning") for f in found)
    lint_range(data, VersionRange(V("8.3"), V("9.1.99")), product)


def written_forms(segment: str) -> set[str]:
    """
    How a key segment may appear on its line: as is, in snake_case, or escaped as
    tomli-w writes a quoted key.
    """
    quoted = tomli_w.dumps({segment: 0}).rsplit(" = ", 1)[0]
    return {segment, segment.replace("-", "_"), quoted.strip('"')}


def header_paths(text: str) -> dict[int, str]:
    """
    The dotted path of each table header, by line.
    """
    paths = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if line.startswith("["):
            parts = []
            table: Any = tomllib.loads(line)
            while isinstance(table, dict) and table:
                [(name, table)] = table.items()
                parts.append(name)
                # An array of tables ([[a.b]]) holds its one new table last.
                if isinstance(table, list):
                    table = table[-1] if table else {}
            paths[number] = ".".join(parts)
    return paths


def key_paths(table: dict[str, Any], path: str = "") -> set[str]:
    """
    The dotted path of every key in C{table}, nested ones included, in kebab-case.
    """
    paths = set()
    for name, value in table.items():
        where = f"{path}.{name.replace('_', '-')}" if path else name.replace("_", "-")
        paths.add(where)
        if isinstance(value, dict):
            paths |= key_paths(value, where)
    return paths


@settings(derandomize=True, database=None, max_examples=300)
@given(answer_documents())
def test_finding_lines(drawn: tuple[InstallerVersion, dict[str, Any]]) -> None:
    """
    A finding's line is in the file and holds its key; for a key the file lacks (one
    that is required, say), it is the header that opens the table the key belongs in.
    """
    version, document = drawn
    text = tomli_w.dumps(document)
    lines = text.split("\n")
    headers = header_paths(text)
    present = key_paths(document)
    for finding in lint(text.encode(), version):
        if finding.line is None:
            continue
        assert 1 <= finding.line <= len(lines), finding
        line = lines[finding.line - 1]
        segment = finding.key.rsplit(".", 1)[-1]
        if finding.key.replace("_", "-") in present:
            assert any(form in line for form in written_forms(segment)), (finding, line)
        else:
            # The first header that holds a table the key belongs in, [a.b] for a.c.
            header = headers.get(finding.line, "").replace("_", "-")
            parts = finding.key.replace("_", "-").split(".")
            ancestors = [".".join(parts[:end]) for end in range(1, len(parts))]
            assert any(header == a or header.startswith(f"{a}.") for a in ancestors), (
                finding,
                line,
            )


def test_a_file_is_checked_once_per_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A rack of installers asking for one file costs one check per version range: the
    same text, range and product give the same findings without checking again; a
    change to any of them is checked afresh.
    """
    import pxepilot.answers.lint as lint_module

    checked: list[VersionRange] = []
    real = lint_module._lint_parsed

    def counting(parsed: Any, versions: VersionRange, product: str | None) -> list[Finding]:
        checked.append(versions)
        return real(parsed, versions, product)

    monkeypatch.setattr(lint_module, "_lint_parsed", counting)
    wide = VersionRange(InstallerVersion(8, 4), InstallerVersion(9, 1))
    text = b'[global]\nkeyboard = "en-us"\n'
    first = lint_range(text, wide)
    assert lint_range(text, wide) == first
    assert lint_range(text, wide, "pve") is not None
    assert lint_range(text + b"# changed\n", wide) is not None
    assert len(checked) == 3
    # What a caller does to its list does not change what the next caller gets.
    first.clear()
    assert lint_range(text, wide) != []
    assert len(checked) == 3
