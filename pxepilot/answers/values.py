"""
Checks on single values of an answer file, each as the installer of the asking version
reads that value: what it refuses is an error; what it takes although pxe-pilot would
rather say something is a L{Note}, a warning that says the installer accepts it.

Each check names the release facts it follows; the releases are the ones in
L{pxepilot.answers.versions.Gates}.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from attrs import frozen

from pxepilot.answers.locales import COUNTRIES, TIMEZONES
from pxepilot.answers.versions import Gates, InstallerVersion, previous

# How a warning about a value the installer takes begins, and how one about what only
# the machine's network decides begins: never an error, whatever pxe-pilot thinks of it.
ACCEPTS = "the installer accepts this"
NETWORK = "depends on the network"


@frozen
class Context:
    """
    What value checks need besides the value.
    """

    version: InstallerVersion
    product: str | None = None


@frozen
class Note:
    """
    Why pxe-pilot mentions a value the installer accepts: a warning, never an error.
    """

    message: str
    fix: str = ""


def tolerated(why: str, fix: str = "") -> Note:
    return Note(f"{ACCEPTS}: {why}", fix)


# What is wrong with a value; or what is wrong and what to write instead; or a note.
Problem = str | tuple[str, str] | Note | None
Check = Callable[[Any, Context], Problem]


def every(*checks: Check) -> Check:
    """
    All of C{checks}: the first error, else the first note.
    """

    def check(value: Any, context: Context) -> Problem:
        notes = []
        for one in checks:
            problem = one(value, context)
            if isinstance(problem, Note):
                notes.append(problem)
            elif problem is not None:
                return problem
        return notes[0] if notes else None

    return check


# -- types: toml 0.7/0.8 read TOML integers as i64; serde then fits them to the field


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


_TYPES = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    # f64 fields: serde takes a TOML integer for them too.
    "number": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "strings": (
        "an array of strings",
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    ),
    "table": ("a table", lambda v: isinstance(v, dict)),
    "section": ("a table", lambda v: isinstance(v, dict)),
}


def type_problem(kind: str, value: Any) -> str | None:
    if kind == "any":
        return None
    wanted, ok = _TYPES[kind]
    if not ok(value):
        return f"must be {wanted}, not {type_name(value)}"
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        # Python's TOML reader takes any integer; the installer's (the toml crate) stops
        # at 64 bits, before any field is looked at.
        return f"{value} is beyond TOML's 64-bit integers, which the installer reads"
    return None


def unsigned(value: Any, context: Context) -> str | None:
    """
    ashift, arc-max and copies: usize up to 9.1 (64 bits on amd64 and arm64, more than
    TOML holds), u32 in proxmox-installer-types from 9.2; never negative.
    """
    if value < 0:
        return f"{value} is negative; the installer reads an unsigned integer"
    bits = 32 if context.version >= Gates.TYPES_CRATE else 64
    if value >= 2**bits:
        return f"{value} is more than the installer's {bits}-bit field holds ({2**bits - 1})"
    return None


def at_least(low: float) -> Check:
    def check(value: Any, context: Context) -> str | None:
        return None if value >= low else f"{value} is below {low:g}"

    return check


def maxvz(value: Any, context: Context) -> Problem:
    # Install.pm: the data volume is made only when over 4 GiB are left for it.
    if value < 0:
        return tolerated(f"{value} GiB leaves no data volume", "write 0 for none")
    return None


def ashift(value: Any, context: Context) -> str | None:
    # Install.pm zfs_create_rpool passes it to `zpool create -o ashift=`, which dies
    # outside 9 to 16; 0 is zpool's own "detect it".
    if value == 0 or 9 <= value <= 16:
        return None
    return f"{value} is outside 9 to 16; zpool create refuses it and the installation stops"


def arc_max(value: Any, context: Context) -> Problem:
    # RunEnv.pm clamp_zfs_arc_max: 0 keeps ZFS's default, below 64 MiB is raised to 64.
    if 0 < value < 64:
        return tolerated(f"{value} MiB is below ZFS's minimum; it is raised to 64", "write 64")
    return None


def copies(value: Any, context: Context) -> Problem:
    # Install.pm runs `zfs set copies=N` and ignores its failure: the pool keeps 1.
    if not 1 <= value <= 3:
        return tolerated(f"ZFS refuses copies={value} and the pool keeps 1", "write 1 to 3")
    return None


# -- strings


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def fqdn_problem(name: str) -> str | None:
    """
    What makes C{name} unacceptable as the installer's FQDN, if anything: at least two
    labels of 1 to 63 letters, digits and hyphens (not at either end), at most 253
    bytes, a host label not all digits (installer-common C{Fqdn} to 9.1, the same type
    in proxmox-network-types from 9.2).
    """
    labels = name.split(".")
    if len(labels) < 2:
        return f"{name!r} is not a fully qualified domain name (such as pve01.example.com)"
    if len(name.encode()) > 253:
        return f"{name!r} is longer than 253 characters"
    for label in labels:
        if not _LABEL.fullmatch(label):
            return (
                f"{name!r} has an invalid label {label!r}: 1 to 63 letters, digits and "
                "hyphens, not starting or ending with a hyphen"
            )
    if labels[0].isdigit():
        return f"{name!r}: the host name {labels[0]!r} may not be all digits"
    return None


def fqdn(value: Any, context: Context) -> Problem:
    if isinstance(value, str):
        return fqdn_problem(value)
    if not isinstance(value, dict):
        return f"must be a string or a table, not {type_name(value)}"
    if context.version < Gates.FQDN_TABLE:
        return (
            f"a table as fqdn needs installer {Gates.FQDN_TABLE} or later; "
            "write the name as a string"
        )
    # FqdnExtendedConfig (9.2: FqdnFromDhcpConfig): deny_unknown_fields; source defaults
    # to from-dhcp, its one value; domain an optional string.
    unknown = sorted(set(value) - {"source", "domain"})
    if unknown:
        return f"unknown key {unknown[0]!r} in fqdn; only source and domain"
    if value.get("source", "from-dhcp") != "from-dhcp":
        return 'fqdn.source must be "from-dhcp"'
    domain = value.get("domain")
    if domain is not None and not isinstance(domain, str):
        return f"fqdn.domain must be a string, not {type_name(domain)}"
    product = context.product or "pve"
    # options.rs construct_fqdn: "<DHCP host name>.<domain>" that is no FQDN becomes
    # <product>.example.invalid. An empty domain is unset from 9.0.5 on, before it is
    # used as it is (and fails so).
    if domain == "" and context.version < Gates.DISK_CHECKS:
        return tolerated(
            f"an empty fqdn.domain names the host {product}.example.invalid",
            "remove domain, or give one",
        )
    if domain and fqdn_problem(f"host.{domain}"):
        return tolerated(
            f"fqdn.domain {domain!r} is no domain name, so the host is named "
            f"{product}.example.invalid",
            "write a domain such as example.com",
        )
    return None


# The HTML5 e-mail address pattern, the installer's email_validate (8.2.7 on).
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


def email(value: Any, context: Context) -> Problem:
    problem = None
    if not _EMAIL.fullmatch(value):
        problem = f"{value!r} is not an e-mail address"
    elif value == "mail@example.invalid":
        problem = "mail@example.invalid is the installer's placeholder; give a real address"
    if problem and context.version < Gates.MAILTO:
        return tolerated(f"{problem} (installers from {Gates.MAILTO} refuse it)")
    return problem


def country(value: Any, context: Context) -> Problem:
    if value in COUNTRIES:
        return None
    if value.lower() in COUNTRIES:
        return (
            f"{value!r} is not an ISO 3166-1 alpha-2 country code (lower case)",
            f"write {value.lower()!r}",
        )
    return f"{value!r} is not an ISO 3166-1 alpha-2 country code"


def timezone(value: Any, context: Context) -> str | None:
    if value in TIMEZONES:
        return None
    return f"{value!r} is not a time zone of tzdata's zone.tab (such as Europe/Vienna) or UTC"


def _one_line(value: str) -> str | None:
    # Install.pm feeds "root:<password>\n" to chpasswd, which stops at a second line.
    if "\n" in value or "\r" in value:
        return "holds a line break; chpasswd refuses it and the installation stops"
    return None


def password(value: Any, context: Context) -> str | None:
    # 8.4.0 (utils.rs verify_email_and_root_password_settings): Rust's len(), bytes.
    if context.version >= Gates.PASSWORD_LENGTH and len(value.encode()) < 8:
        return "the root password needs at least 8 bytes"
    return _one_line(value)


def hashed(value: Any, context: Context) -> Problem:
    problem = _one_line(value)
    if problem:
        return problem
    # chpasswd --encrypted stores any string; only a crypt(3) hash lets root log in.
    if not re.fullmatch(r"\$[0-9a-z]+\$\S+", value):
        return tolerated(
            "it is no crypt(3) hash such as $6$... or $y$..., so root cannot log in "
            "with a password",
            "make one with mkpasswd",
        )
    return None


def ssh_keys(value: Any, context: Context) -> Problem:
    # Install.pm writes them to authorized_keys as they are.
    for key in value:
        if len(key.split()) < 2:
            return tolerated(f"{key[:40]!r} is no OpenSSH public key line; sshd ignores it")
    return None


_SUBSCRIPTION = re.compile(r"(?:pve[0-9]+|pbs|pmg)[cbsp]-[0-9a-f]{10}")


def subscription_key(value: Any, context: Context) -> Problem:
    # Install.pm stages any string; proxmox-first-boot-subscription trims it on the
    # first boot and activates it only if it matches the key pattern.
    key = value.strip()
    if key and not _SUBSCRIPTION.fullmatch(key):
        return tolerated(
            f"{key!r} is no subscription key (such as pve4c-0123456789); "
            "its activation on the first boot fails"
        )
    return None


def url(value: Any, context: Context) -> str | None:
    # Fetched (first-boot) or posted to (webhook) by ureq, which reads the scheme in
    # any case; anything but http(s) fails, and the machine stops.
    if re.fullmatch(r"(?i:https?)://\S+", value):
        return None
    return f"{value!r} is not an http:// or https:// URL"


def globs(value: Any, context: Context) -> str | None:
    for name, glob in value.items():
        if not isinstance(glob, str):
            return f"filter.{name} must be a string (a glob), not {type_name(glob)}"
    return None


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    C{text} as Rust's C{std::net::IpAddr} reads it: no IPv6 zone index (which Python
    reads).
    """
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address(value: Any, context: Context) -> str | None:
    if parse_address(value) is None:
        return f"{value!r} is not an IP address"
    return None


def cidr(value: Any, context: Context) -> Problem:
    """
    Up to 9.1 installer-common C{CidrAddress}: address, "/", a decimal prefix length
    (Rust's integer parsing: digits, an optional "+") at most 32 or 128. 9.0.5 alone
    refused an IPv4 network or broadcast address below /31. From 9.2
    proxmox-network-types C{Cidr}: a bare address is a host address (/32, /128).
    """
    text, slash, mask = value.partition("/")
    found = parse_address(text)
    if found is None:
        return f"{value!r} is not an address with its prefix length, such as 192.0.2.10/24"
    if not slash:
        if context.version >= Gates.TYPES_CRATE:
            host = 32 if found.version == 4 else 128
            return tolerated(
                f"{value!r} has no prefix length, so it is a /{host} host address",
                f"such as {value + '/24'!r}",
            )
        return f"{value!r} needs its prefix length", f"such as {value + '/24'!r}"
    limit = 32 if found.version == 4 else 128
    if not re.fullmatch(r"\+?[0-9]+", mask) or int(mask) > limit:
        return f"{value!r} is not an address with its prefix length, such as 192.0.2.10/24"
    length = int(mask)
    if (
        Gates.DISK_CHECKS <= context.version < Gates.SUBNET_ADDRESS_DROPPED
        and found.version == 4
        and 0 < length < 31
    ):
        network = ipaddress.ip_network(f"{text}/{length}", strict=False)
        if found in (network.network_address, network.broadcast_address):
            return f"{value!r} is its network's own or broadcast address"
    return None


# -- RAID levels: serde enums, matched exactly (never case-folded)

_ZFS = ("raid0", "raid1", "raid10", "raidz-1", "raidz-2", "raidz-3")
_BTRFS = ("raid0", "raid1", "raid10")


def raid_spellings(levels: tuple[str, ...], version: InstallerVersion) -> frozenset[str]:
    """
    The spellings installer C{version} reads: lower case only (rename_all "lowercase");
    8.2.7 to 8.3.2 renamed the RAIDZ levels to upper case, which took the lower-case
    ones away; 8.3.3 added the upper-case ones as aliases of all (9.2: rename_all
    "UPPERCASE" with lower-case aliases). Never a mixed case.
    """
    lower = set(levels)
    if version >= Gates.UPPER_CASE_RAID:
        return frozenset(lower | {level.upper() for level in levels})
    if version >= Gates.RAIDZ_UPPER_ONLY:
        return frozenset(level.upper() if "z" in level else level for level in levels)
    return frozenset(lower)


def raid(levels: tuple[str, ...]) -> Check:
    def check(value: Any, context: Context) -> Problem:
        version = context.version
        accepted = raid_spellings(levels, version)
        if value in accepted:
            return None
        if value.lower() not in levels:
            return f"{value!r} is not one of {', '.join(levels)}"
        here = next(s for s in sorted(accepted) if s.lower() == value.lower())
        if value not in (value.lower(), value.upper()):
            return (
                f"{value!r} mixes cases; the installer reads RAID levels all lower or "
                "all upper case",
                f"write {here!r}",
            )
        if value == value.upper():
            return (
                f"upper-case {value!r} needs installer {Gates.UPPER_CASE_RAID} or later",
                f"write {here!r}",
            )
        return (
            f"installers {Gates.RAIDZ_UPPER_ONLY} to {previous(Gates.UPPER_CASE_RAID)} "
            "read the RAIDZ levels in upper case only",
            f"write {here!r}",
        )

    return check


ZFS_RAID = raid(_ZFS)
BTRFS_RAID = raid(_BTRFS)

# -- interface name pinning (9.1): installer-common NetworkInterfacePinningOptions::verify

# Rust's case-insensitive [a-z] also takes the long s and the Kelvin sign (simple case
# folding); Python's would also take the dotted and dotless i.
_IFACE = re.compile(r"[a-zA-Z\u017f\u212a][a-zA-Z0-9_\u017f\u212a]{1,20}([:.]\d+)?")


def pinning_name(value: Any, context: Context) -> str | None:
    """
    What installer C{context.version} finds wrong with a pinned interface name: 9.1.0
    letters, digits and underscores, not starting with a digit nor all digits, 1 to 15
    bytes; 9.1.1 at least 2 bytes, starting with a letter; 9.1.2 lower case only; 9.1.3
    the pve-iface pattern, in any case.
    """
    version, size = context.version, len(value.encode())
    shortest = 2 if version >= Gates.PINNING_LETTER else 1
    if not shortest <= size <= 15:
        return f"{value!r}: interface names are {shortest} to 15 characters"
    if version >= Gates.PINNING_IFACE:
        if not _IFACE.fullmatch(value):
            return (
                f"{value!r} is not an interface name (a letter, then 1 to 20 letters, digits or _)"
            )
        return None
    lower = version >= Gates.PINNING_LOWER
    allowed = "a-z0-9_" if lower else "a-zA-Z0-9_"
    first = "a-z" if lower else ("a-zA-Z" if version >= Gates.PINNING_LETTER else "a-zA-Z_")
    if value.isdigit() or not re.fullmatch(f"[{first}][{allowed}]*", value):
        return f"{value!r} is not an interface name (a letter, then letters, digits or _)"
    return None
