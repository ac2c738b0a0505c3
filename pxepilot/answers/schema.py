"""
The answer format as data: every key the Proxmox installer reads, its type, the
installer that first accepts it (and its kebab-case spelling), and the checks on its
value.

The installer parses answers strictly: every table denies unknown fields, so a key
this schema does not know is an error. Which keys a document must hold, and how keys
go together, are the rules (L{pxepilot.answers.rules}).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from attrs import field, frozen

from pxepilot.answers.locales import COUNTRIES, KEYBOARDS, TIMEZONES
from pxepilot.answers.versions import OLDEST, Gates, InstallerVersion, V

# What is wrong with a value; or what is wrong and what to write instead.
Problem = str | tuple[str, str] | None
Check = Callable[[Any, "Context"], Problem]


@frozen
class Key:
    """
    One key of the answer format.

    @ivar name: Its kebab-case name.
    @ivar kind: The TOML type: string, bool, int, number, strings (an array of
        strings), table (free-form, such as udev filters) or section (a table of
        known keys).
    @ivar since: The first installer that accepts it.
    @ivar kebab_from: The first installer that accepts the kebab-case spelling; before
        it, only snake_case (8.2 and 8.3 spelled multi-word keys with underscores).
    @ivar snake: Whether the snake_case spelling is accepted (from C{since} on;
        deprecated once kebab-case is accepted).
    @ivar values: The allowed values of a string.
    @ivar check: Further rules on the value; returns what is wrong.
    @ivar keys: The keys of a section.
    """

    name: str
    kind: str
    since: InstallerVersion = OLDEST
    kebab_from: InstallerVersion | None = None
    snake: bool = False
    values: frozenset[str] | None = None
    check: Check | None = None
    keys: tuple[Key, ...] = field(default=())

    @property
    def snake_name(self) -> str:
        return self.name.replace("-", "_")

    def spellings(self, version: InstallerVersion) -> dict[str, str]:
        """
        The spellings C{version} accepts: name → C{canonical} or C{deprecated}.
        """
        if version < self.since:
            return {}
        if "-" not in self.name:
            return {self.name: "canonical"}
        kebab = version >= (self.kebab_from or self.since)
        found: dict[str, str] = {}
        if kebab:
            found[self.name] = "canonical"
        if self.snake:
            found[self.snake_name] = "deprecated" if kebab else "canonical"
        return found

    def child(self, name: str) -> Key | None:
        for key in self.keys:
            if name in (key.name, key.snake_name):
                return key
        return None


@frozen
class Context:
    """
    What value checks need besides the value.
    """

    version: InstallerVersion
    product: str | None = None


def _regex(pattern: str, what: str) -> Check:
    compiled = re.compile(pattern)

    def check(value: Any, context: Context) -> str | None:
        return None if compiled.fullmatch(value) else f"{value!r} is not {what}"

    return check


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def fqdn_problem(name: str) -> str | None:
    """
    What makes C{name} unacceptable as the installer's FQDN, if anything.
    """
    labels = name.split(".")
    if len(labels) < 2:
        return f"{name!r} is not a fully qualified domain name (such as pve01.example.com)"
    if len(name) > 253:
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


def _fqdn(value: Any, context: Context) -> str | None:
    if isinstance(value, str):
        return fqdn_problem(value)
    if isinstance(value, dict):
        if context.version < Gates.FQDN_TABLE:
            return (
                f"a table as fqdn needs installer {Gates.FQDN_TABLE} or later; "
                "write the name as a string"
            )
        unknown = sorted(set(value) - {"source", "domain"})
        if unknown:
            return f"unknown key {unknown[0]!r} in fqdn; only source and domain"
        if value.get("source") != "from-dhcp":
            return 'fqdn.source must be "from-dhcp"'
        domain = value.get("domain")
        if domain not in (None, "") and (
            not isinstance(domain, str) or fqdn_problem(f"host.{domain}")
        ):
            return f"fqdn.domain {domain!r} is not a domain name"
        return None
    return f"must be a string or a table, not {type_name(value)}"


# The HTML5 e-mail address pattern, which the installer uses.
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


def _email(value: Any, context: Context) -> str | None:
    if not _EMAIL.fullmatch(value):
        return f"{value!r} is not an e-mail address"
    if value == "mail@example.invalid":
        return "mail@example.invalid is the installer's placeholder; give a real address"
    return None


def _country(value: Any, context: Context) -> Problem:
    if value in COUNTRIES:
        return None
    if value.lower() in COUNTRIES:
        return (
            f"{value!r} is not an ISO 3166-1 alpha-2 country code (lower case)",
            f"write {value.lower()!r}",
        )
    return f"{value!r} is not an ISO 3166-1 alpha-2 country code"


def _timezone(value: Any, context: Context) -> str | None:
    if value in TIMEZONES:
        return None
    return f"{value!r} is not a time zone of tzdata's zone.tab (such as Europe/Vienna) or UTC"


def _password(value: Any, context: Context) -> str | None:
    if context.version >= Gates.PASSWORD_LENGTH and len(value) < 8:
        return "the root password needs at least 8 characters"
    return None


def _hashed(value: Any, context: Context) -> str | None:
    if not re.fullmatch(r"\$[0-9a-z]+\$\S+", value):
        return "is not a crypt(3) hash such as $6$... or $y$... (mkpasswd makes one)"
    return None


def _globs(value: Any, context: Context) -> str | None:
    for name, glob in value.items():
        if not isinstance(glob, str):
            return f"filter.{name} must be a string (a glob), not {type_name(glob)}"
    return None


def _ssh_key(value: Any, context: Context) -> str | None:
    for key in value:
        if len(key.split()) < 2:
            return f"{key[:40]!r} is not an OpenSSH public key line"
    return None


def _address(value: Any, context: Context) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def _cidr(value: Any, context: Context) -> Problem:
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return f"{value!r} is not an address with its prefix length, such as 192.0.2.10/24"
    if "/" not in value:
        return f"{value!r} needs its prefix length", f"such as {value + '/24'!r}"
    return None


def _between(low: int, high: int) -> Check:
    def check(value: Any, context: Context) -> str | None:
        return None if low <= value <= high else f"{value} is outside {low} to {high}"

    return check


def _at_least(low: float) -> Check:
    def check(value: Any, context: Context) -> str | None:
        return None if value >= low else f"{value} is below {low:g}"

    return check


def pinning_name(value: Any, context: Context) -> str | None:
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,20}([:.]\d+)?", value, re.IGNORECASE):
        return f"{value!r} is not an interface name (a letter, then 1 to 20 letters, digits or _)"
    if not 2 <= len(value) <= 15:
        return f"{value!r}: interface names are 2 to 15 characters"
    return None


_RAID_ZFS = ("raid0", "raid1", "raid10", "raidz-1", "raidz-2", "raidz-3")
_RAID_BTRFS = ("raid0", "raid1", "raid10")


def _raid(levels: tuple[str, ...]) -> Check:
    def check(value: Any, context: Context) -> Problem:
        if value in levels:
            return None
        if value.lower() in levels:
            if context.version >= Gates.UPPER_CASE_RAID:
                return None
            return (
                f"upper-case {value!r} needs installer {Gates.UPPER_CASE_RAID}",
                f"write {value.lower()!r}",
            )
        return f"{value!r} is not one of {', '.join(levels)}"

    return check


def _words(*words: str) -> frozenset[str]:
    return frozenset(words)


SCHEMA = Key(
    "",
    "section",
    keys=(
        Key(
            "global",
            "section",
            keys=(
                Key("keyboard", "string", values=KEYBOARDS),
                Key("country", "string", check=_country),
                Key("fqdn", "any", check=_fqdn),
                Key("mailto", "string", check=_email),
                Key("timezone", "string", check=_timezone),
                Key(
                    "root-password",
                    "string",
                    kebab_from=Gates.KEBAB_CASE,
                    snake=True,
                    check=_password,
                ),
                Key(
                    "root-password-hashed",
                    "string",
                    since=Gates.HASHED_PASSWORD,
                    kebab_from=Gates.KEBAB_CASE,
                    snake=True,
                    check=_hashed,
                ),
                Key("reboot-on-error", "bool", kebab_from=Gates.KEBAB_CASE, snake=True),
                Key(
                    "reboot-mode",
                    "string",
                    since=V("8.4.3"),
                    snake=True,
                    values=_words("reboot", "power-off"),
                ),
                Key(
                    "root-ssh-keys",
                    "strings",
                    since=V("8.2.2"),
                    kebab_from=Gates.KEBAB_CASE,
                    snake=True,
                    check=_ssh_key,
                ),
                Key(
                    "subscription-key",
                    "string",
                    since=V("9.2"),
                    snake=True,
                    check=_regex(
                        r"(?:pve[0-9]+|pbs|pmg)[cbsp]-[0-9a-f]{10}", "a subscription key"
                    ),
                ),
            ),
        ),
        Key(
            "network",
            "section",
            keys=(
                Key("source", "string", values=_words("from-dhcp", "from-answer")),
                Key("cidr", "string", check=_cidr),
                Key("dns", "string", check=_address),
                Key("gateway", "string", check=_address),
                Key("filter", "table", check=_globs),
                Key(
                    "interface-name-pinning",
                    "section",
                    since=V("9.1"),
                    keys=(Key("enabled", "bool"), Key("mapping", "table")),
                ),
            ),
        ),
        Key(
            "disk-setup",
            "section",
            keys=(
                Key("filesystem", "string", values=_words("ext4", "xfs", "zfs", "btrfs")),
                Key("disk-list", "strings", kebab_from=Gates.KEBAB_CASE, snake=True),
                Key("filter", "table", check=_globs),
                Key(
                    "filter-match",
                    "string",
                    kebab_from=Gates.KEBAB_CASE,
                    snake=True,
                    values=_words("any", "all"),
                ),
                Key(
                    "zfs",
                    "section",
                    keys=(
                        Key("raid", "string", check=_raid(_RAID_ZFS)),
                        Key("ashift", "int", check=_between(9, 16)),
                        Key(
                            "arc-max",
                            "int",
                            kebab_from=Gates.KEBAB_CASE,
                            snake=True,
                            check=_at_least(64),
                        ),
                        Key("checksum", "string", values=_words("on", "fletcher4", "sha256")),
                        Key(
                            "compress",
                            "string",
                            values=_words("on", "off", "lzjb", "lz4", "zle", "gzip", "zstd"),
                        ),
                        Key("copies", "int", check=_between(1, 3)),
                        Key("hdsize", "number", check=_at_least(0)),
                    ),
                ),
                Key(
                    "lvm",
                    "section",
                    keys=tuple(
                        Key(name, "number", check=_at_least(0))
                        for name in ("hdsize", "swapsize", "maxroot", "maxvz", "minfree")
                    ),
                ),
                Key(
                    "btrfs",
                    "section",
                    keys=(
                        Key("raid", "string", check=_raid(_RAID_BTRFS)),
                        Key("hdsize", "number", check=_at_least(0)),
                        Key(
                            "compress",
                            "string",
                            since=V("8.2.7"),
                            values=_words("on", "off", "zlib", "lzo", "zstd"),
                        ),
                    ),
                ),
            ),
        ),
        Key(
            "post-installation-webhook",
            "section",
            since=V("8.2.7"),
            keys=(
                Key("url", "string", check=_regex(r"https?://\S+", "an http:// or https:// URL")),
                Key("cert-fingerprint", "string", kebab_from=Gates.KEBAB_CASE, snake=True),
                Key("auth-token", "string", since=V("9.2"), snake=True),
            ),
        ),
        Key(
            "first-boot",
            "section",
            since=V("8.3"),
            keys=(
                Key("source", "string", values=_words("from-iso", "from-url")),
                Key(
                    "ordering",
                    "string",
                    values=_words("before-network", "network-online", "fully-up"),
                ),
                Key("url", "string", check=_regex(r"https?://\S+", "an http:// or https:// URL")),
                Key("cert-fingerprint", "string"),
            ),
        ),
    ),
)

# Minimum disks per RAID level (checked for disk-list).
MIN_DISKS = {
    "raid0": 1,
    "raid1": 2,
    "raid10": 4,
    "raidz-1": 3,
    "raidz-2": 4,
    "raidz-3": 5,
}


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


def type_problem(kind: str, value: Any) -> str | None:
    ok = {
        "string": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "strings": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "table": isinstance(value, dict),
        "section": isinstance(value, dict),
        "any": True,
    }[kind]
    if ok:
        return None
    wanted = {
        "string": "a string",
        "bool": "true or false",
        "int": "an integer",
        "number": "a number",
        "strings": "an array of strings",
        "table": "a table",
        "section": "a table",
    }[kind]
    return f"must be {wanted}, not {type_name(value)}"
