"""
Whether the Proxmox installer of a given version accepts an answer file.

The installer parses answers strictly (every table denies unknown fields) and then
checks locale, disks, e-mail, passwords, first-boot and network settings; one finding
and the machine stops in a debug shell in the data centre. This module mirrors those
rules per installer version, in pure Python, and says for each finding the file's line,
the key, and what to write instead.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from attrs import field, frozen

from pxepilot.answers.locales import COUNTRIES, KEYBOARDS, TIMEZONES
from pxepilot.answers.request import InstallerRequest

Severity = Literal["error", "warning"]


@frozen(order=True)
class InstallerVersion:
    """
    A Proxmox installer version, such as 8.4.3.
    """

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> InstallerVersion:
        found = re.fullmatch(r"\s*(\d{1,2})\.(\d{1,2})(?:\.(\d{1,3}))?\s*", text)
        if found is None:
            raise ValueError(f"{text!r} is not an installer version such as 9.2 or 8.4.3")
        major, minor, patch = found.groups()
        return cls(int(major), int(minor), int(patch or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}" + (f".{self.patch}" if self.patch else "")


V = InstallerVersion.parse
OLDEST = V("8.2")
# The newest installer whose answer format this checker knows.
NEWEST = V("9.2.99")
LAST_PATCH = 99


@frozen
class VersionRange:
    """
    The installer versions a request may come from, both ends included.
    """

    low: InstallerVersion
    high: InstallerVersion

    @classmethod
    def exactly(cls, version: InstallerVersion) -> VersionRange:
        if version.patch:
            return cls(version, version)
        return cls(version, InstallerVersion(version.major, version.minor, LAST_PATCH))

    def __str__(self) -> str:
        low, high = str(self.low), str(self.high)
        if high.endswith(f".{LAST_PATCH}"):
            high = high[: -len(f".{LAST_PATCH}")] + ".x"
        if self.low.patch == 0 and high == f"{self.low.major}.{self.low.minor}.x":
            return high
        return low if low == high else f"{low} to {high}"


@frozen
class Finding:
    """
    One reason an installer would reject (error) or complain about (warning) a file.

    @ivar key: The key's path, such as C{global.root-password}; empty for the file.
    @ivar line: 1-based line of the key, when it is in the file.
    @ivar message: What is wrong.
    @ivar fix: What to write instead.
    """

    severity: Severity
    key: str
    message: str
    fix: str = ""
    line: int | None = None

    def describe(self, name: str) -> str:
        where = f"{name}:{self.line}" if self.line else name
        key = f" [{self.key}]" if self.key else ""
        fix = f"; {self.fix}" if self.fix else ""
        return f"{where}: {self.severity}:{key} {self.message}{fix}"

    def as_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "key": self.key,
            "line": self.line,
            "message": self.message,
            "fix": self.fix,
        }


# -- the schema

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
        if context.version < V("8.4.3"):
            return "a table as fqdn needs installer 8.4.3 or later; write the name as a string"
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
    return f"must be a string or a table, not {_type_name(value)}"


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
    if context.version >= V("8.4") and len(value) < 8:
        return "the root password needs at least 8 characters"
    return None


def _hashed(value: Any, context: Context) -> str | None:
    if not re.fullmatch(r"\$[0-9a-z]+\$\S+", value):
        return "is not a crypt(3) hash such as $6$... or $y$... (mkpasswd makes one)"
    return None


def _globs(value: Any, context: Context) -> str | None:
    for name, glob in value.items():
        if not isinstance(glob, str):
            return f"filter.{name} must be a string (a glob), not {_type_name(glob)}"
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


def _pinning_name(value: Any, context: Context) -> str | None:
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
            if context.version >= V("8.3.3"):
                return None
            return f"upper-case {value!r} needs installer 8.3.3", f"write {value.lower()!r}"
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
                Key("root-password", "string", kebab_from=V("8.4"), snake=True, check=_password),
                Key(
                    "root-password-hashed",
                    "string",
                    since=V("8.2.7"),
                    kebab_from=V("8.4"),
                    snake=True,
                    check=_hashed,
                ),
                Key("reboot-on-error", "bool", kebab_from=V("8.4"), snake=True),
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
                    kebab_from=V("8.4"),
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
                Key("disk-list", "strings", kebab_from=V("8.4"), snake=True),
                Key("filter", "table", check=_globs),
                Key(
                    "filter-match",
                    "string",
                    kebab_from=V("8.4"),
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
                            "arc-max", "int", kebab_from=V("8.4"), snake=True, check=_at_least(64)
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
                Key("cert-fingerprint", "string", kebab_from=V("8.4"), snake=True),
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


def _type_name(value: Any) -> str:
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


def _type_problem(kind: str, value: Any) -> str | None:
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
    return f"must be {wanted}, not {_type_name(value)}"


# -- where keys are in the text


_BASIC_STRING = r'"(?:[^"\\]|\\.)*"'
_LITERAL_STRING = r"'[^']*'"
_KEY_PART = rf"{_BASIC_STRING}|{_LITERAL_STRING}|[A-Za-z0-9_-]+"
_DOTTED_KEY = rf"(?:{_KEY_PART})(?:\s*\.\s*(?:{_KEY_PART}))*"
_HEADER = re.compile(rf"\[\[?\s*({_DOTTED_KEY})\s*\]")
_ASSIGNMENT = re.compile(rf"({_DOTTED_KEY})\s*=\s*(.*)")


def key_lines(text: str) -> dict[str, int]:
    """
    The line of every key and table header in a TOML document, by dotted path (first
    occurrence). Good enough for pointing at a line: quoted keys are unquoted, and
    lines inside multi-line strings and arrays are skipped.
    """
    lines: dict[str, int] = {}
    table: list[str] = []
    in_string: str | None = None
    depth = 0
    # TOML ends lines at "\n" only; str.splitlines() would also split at characters
    # such as U+2028 that strings and quoted keys may hold.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if in_string is not None:
            if in_string in line:
                in_string = None
            continue
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            # [a.b.c] defines a and a.b too, when no earlier line did.
            for end in range(1, len(table) + 1):
                lines.setdefault(".".join(table[:end]), number)
            continue
        assignment = _ASSIGNMENT.match(line)
        if not assignment:
            continue
        path = [*table, *_split_key(assignment.group(1))]
        for end in range(len(table) + 1, len(path) + 1):
            lines.setdefault(".".join(path[:end]), number)
        value = assignment.group(2)
        for quote in ('"""', "'''"):
            if value.startswith(quote) and value.count(quote) == 1:
                in_string = quote
        if value.startswith("["):
            depth = _bracket_balance(value)
    return lines


def _split_key(text: str) -> list[str]:
    return [_unquote(part) for part in re.findall(_KEY_PART, text)]


def _unquote(part: str) -> str:
    if part.startswith("'"):
        return part[1:-1]
    if part.startswith('"'):
        # Escapes as TOML reads them (\", \\, \t, \u00e9, ...).
        try:
            return str(tomllib.loads(f"k = {part}")["k"])
        except tomllib.TOMLDecodeError:
            return part[1:-1]
    return part


def _bracket_balance(text: str) -> int:
    # Strings first: a '#' or a bracket in a string is neither a comment nor a bracket.
    without_strings = re.sub(rf"{_BASIC_STRING}|{_LITERAL_STRING}", "", text).split("#")[0]
    return without_strings.count("[") - without_strings.count("]")


# -- the checker


class _Checker:
    def __init__(self, context: Context, lines: Mapping[str, int]) -> None:
        self.context = context
        self.lines = lines
        self.findings: list[Finding] = []
        # Every known key the file sets, valid or not, by kebab-case path.
        self.present: set[str] = set()
        # How the file spells each of them.
        self.spelled: dict[str, str] = {}

    def add(
        self, severity: Severity, path: str, message: str, fix: str = "", written: str = ""
    ) -> None:
        """
        A finding about C{path} (kebab-case, as findings are compared across versions),
        at the line of C{written} (the key as the file spells it) or of C{path}.
        """
        written = written or self.spelled.get(path, path)
        line = self.lines.get(written) or self.lines.get(path)
        parent = written
        while line is None and "." in parent:
            parent = parent.rsplit(".", 1)[0]
            line = self.lines.get(parent)
        self.findings.append(Finding(severity, path, message, fix, line))

    def section(self, spec: Key, table: dict[str, Any], path: str) -> dict[str, Any]:
        """
        Check a table's keys and values; the values by kebab-case name.
        """
        version = self.context.version
        values: dict[str, Any] = {}
        # Keys given so far, by kebab-case name, whether their values were valid or not.
        given: set[str] = set()
        for name, value in table.items():
            written = f"{self.spelled.get(path, path)}.{name}" if path else name
            key = spec.child(name)
            if key is None:
                self.add("error", written, "unknown key", self._suggest(spec, name))
                continue
            where = f"{path}.{key.name}" if path else key.name
            self.present.add(where)
            self.spelled[where] = written
            spellings = key.spellings(version)
            if not spellings:
                # Worded alike for every version, so that a range's ends agree on it.
                self.add(
                    "error",
                    where,
                    f"needs installer {key.since} or later",
                    "remove it, or install with a newer ISO",
                    written,
                )
                continue
            if name not in spellings:
                other = next(iter(spellings))
                self.add(
                    "error",
                    where,
                    f"installer {label(version)} does not know the spelling {name!r}"
                    if name == key.name
                    else f"no installer knows the spelling {name!r}",
                    f"write {other!r}",
                    written,
                )
                continue
            if spellings[name] == "deprecated":
                self.add(
                    "warning",
                    where,
                    f"{name!r}: snake_case is deprecated since installer 8.4",
                    f"write {key.name!r}",
                    written,
                )
            if key.name in given:
                self.add(
                    "error", where, f"{key.name} is given twice (in both spellings)", "", written
                )
                continue
            given.add(key.name)
            problem: Problem = _type_problem(key.kind, value)
            if problem is None and key.values is not None and value not in key.values:
                problem = f"{value!r} is not one of {', '.join(sorted(key.values))}"
                if value.lower() in key.values:
                    problem = problem, f"write {value.lower()!r}"
            if problem is None and key.check is not None:
                problem = key.check(value, self.context)
            if problem is not None:
                message, fix = problem if isinstance(problem, tuple) else (problem, "")
                self.add("error", where, message, fix, written)
                continue
            values[key.name] = value
            if key.kind == "section":
                values[key.name] = self.section(key, value, where)
        return values

    def _suggest(self, spec: Key, name: str) -> str:
        known = [key.name for key in spec.keys if key.spellings(self.context.version)]
        spelled = [
            spelling for key in spec.keys for spelling in key.spellings(self.context.version)
        ]
        close = difflib.get_close_matches(name.replace("_", "-"), known, n=1, cutoff=0.6)
        if close:
            right = next((s for s in spelled if s.replace("_", "-") == close[0]), close[0])
            return f"did you mean {right!r}?"
        where = f"[{spec.name}]" if spec.name else "the top level"
        return f"{where} takes {', '.join(spelled)}" if spelled else ""

    def required(self, path: str, *names: str) -> None:
        for name in names:
            where = f"{path}.{name}" if path else name
            if where not in self.present:
                self.add("error", where, "is required")


def lint_document(document: Mapping[str, Any], text: str, context: Context) -> list[Finding]:
    """
    The findings for a parsed answer file, as installer C{context.version} would see it.
    """
    checker = _Checker(context, key_lines(text))
    top = checker.section(SCHEMA, dict(document), "")
    checker.required("", "global", "network", "disk-setup")
    known = {key: top.get(key) for key in ("global", "network", "disk-setup")}
    if isinstance(known["global"], dict):
        _global_rules(checker, known["global"])
    if isinstance(known["network"], dict):
        _network_rules(checker, known["network"], document.get("network", {}))
    if isinstance(known["disk-setup"], dict):
        _disk_rules(checker, known["disk-setup"])
    webhook = top.get("post-installation-webhook")
    if isinstance(webhook, dict):
        checker.required("post-installation-webhook", "url")
    first_boot = top.get("first-boot")
    if isinstance(first_boot, dict):
        checker.required("first-boot", "source")
        if first_boot.get("source") == "from-url" and "first-boot.url" not in checker.present:
            checker.add("error", "first-boot.url", 'is required with source = "from-url"')
    return sorted(checker.findings, key=lambda f: (f.line or 0, f.severity != "error", f.key))


def _global_rules(checker: _Checker, values: Mapping[str, Any]) -> None:
    version = checker.context.version
    checker.required("global", "keyboard", "country", "fqdn", "mailto", "timezone")
    passwords = [
        k for k in ("root-password", "root-password-hashed") if f"global.{k}" in checker.present
    ]
    if not passwords:
        forms = ["root-password"] + (["root-password-hashed"] if version >= V("8.2.7") else [])
        if version < V("8.4"):
            forms = [form.replace("-", "_") for form in forms]
        # The message is the same for every version, so that a range's ends agree on it.
        checker.add(
            "error",
            "global.root-password",
            "is required (or its hashed form)",
            f"add {' or '.join(forms)}",
        )
    elif len(passwords) == 2:
        checker.add(
            "error",
            "global.root-password-hashed",
            "root-password and root-password-hashed are both set",
            "keep one",
        )


def _network_rules(checker: _Checker, values: Mapping[str, Any], raw: Any) -> None:
    version = checker.context.version
    present = checker.present
    if "network.source" not in present and version >= V("9.2"):
        checker.add(
            "error",
            "network.source",
            "is required from installer 9.2",
            'add source = "from-dhcp" (or "from-answer" with cidr, dns, gateway, filter)',
        )
    # Without a source the installer (up to 9.1) takes DHCP; with a wrong one (reported
    # already) which keys belong is unknown. Keys given a wrong value count as given:
    # they are reported as such, not as missing too.
    source = values.get("source") if "network.source" in present else "from-dhcp"
    static = [k for k in ("cidr", "dns", "gateway", "filter") if f"network.{k}" in present]
    if source == "from-answer":
        for name in ("cidr", "dns", "gateway", "filter"):
            if f"network.{name}" not in present:
                checker.add("error", f"network.{name}", 'is required with source = "from-answer"')
        if isinstance(values.get("filter"), dict) and not values["filter"]:
            checker.add("error", "network.filter", "needs at least one udev property")
    elif source == "from-dhcp" and static:
        checker.add(
            "error",
            f"network.{static[0]}",
            f'{", ".join(static)} only go with source = "from-answer"',
            'set source = "from-answer", or remove them',
        )
    pinning = values.get("interface-name-pinning")
    if isinstance(pinning, dict):
        if "network.interface-name-pinning.enabled" not in checker.present:
            checker.add("error", "network.interface-name-pinning.enabled", "is required")
        mapping = pinning.get("mapping", {})
        names: dict[str, str] = {}
        for mac, name in mapping.items():
            where = f"network.interface-name-pinning.mapping.{mac}"
            if not re.fullmatch(r"(?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac):
                checker.add(
                    "error", where, f"{mac!r} is not a MAC address such as aa:bb:cc:dd:ee:ff"
                )
                continue
            if not isinstance(name, str):
                checker.add("error", where, f"must be a string, not {_type_name(name)}")
                continue
            problem = _pinning_name(name, checker.context)
            if problem:
                checker.add("error", where, problem)
            elif name.lower() in names:
                checker.add("error", where, f"{name!r} is also the name of {names[name.lower()]}")
            names[name.lower()] = mac


def _disk_rules(checker: _Checker, values: Mapping[str, Any]) -> None:
    context = checker.context
    checker.required("disk-setup", "filesystem")
    filesystem = values.get("filesystem")
    disk_list = values.get("disk-list")
    has_filter = "filter" in values
    spelled = "disk-list"
    present = checker.present
    if "disk-setup.disk-list" not in present and "disk-setup.filter" not in present:
        checker.add(
            "error",
            "disk-setup.disk-list",
            "need either a disk list or a filter",
            'such as disk-list = ["sda"]'
            if context.version >= V("8.4")
            else 'such as disk_list = ["sda"]',
        )
    elif disk_list is not None and has_filter:
        checker.add(
            "error", "disk-setup.filter", "cannot use both disk-list and filter", "keep one"
        )
    if has_filter and not values["filter"]:
        checker.add("error", "disk-setup.filter", "needs at least one udev property")
    if disk_list is not None:
        duplicates = sorted({d for d in disk_list if disk_list.count(d) > 1})
        if duplicates:
            checker.add("error", f"disk-setup.{spelled}", f"lists {duplicates[0]!r} twice")
        if any(not disk or "/" in disk.removeprefix("/dev/") for disk in disk_list):
            checker.add(
                "error",
                f"disk-setup.{spelled}",
                "holds an empty or odd device name",
                'such as "sda"',
            )
    options = {"zfs", "lvm", "btrfs"} & set(values)
    if filesystem in ("ext4", "xfs"):
        wrong = sorted(options - {"lvm"})
        if disk_list is not None and len(disk_list) > 1:
            checker.add(
                "error",
                f"disk-setup.{spelled}",
                f"{filesystem} installs on one disk; {len(disk_list)} are listed",
                "list one, or use zfs or btrfs for RAID",
            )
        lvm = values.get("lvm", {})
        if isinstance(lvm, dict) and "maxvz" in lvm and context.product not in (None, "pve"):
            checker.add("error", "disk-setup.lvm.maxvz", "only Proxmox VE has a data volume")
        if (
            isinstance(lvm, dict)
            and "swapsize" in lvm
            and "hdsize" in lvm
            and lvm["swapsize"] > lvm["hdsize"] / 2
        ):
            checker.add("error", "disk-setup.lvm.swapsize", "may be at most half of hdsize")
    elif filesystem in ("zfs", "btrfs"):
        wrong = sorted(options - {filesystem})
        settings = values.get(filesystem)
        if f"disk-setup.{filesystem}.raid" not in present:
            # Unless [disk-setup.zfs] itself is wrong (not a table), and said so.
            if f"disk-setup.{filesystem}" not in present or isinstance(settings, dict):
                checker.add(
                    "error", f"disk-setup.{filesystem}.raid", f"is required for {filesystem}"
                )
        elif isinstance(settings, dict) and "raid" in settings:
            level = str(settings["raid"]).lower()
            needed = MIN_DISKS.get(level, 1)
            if disk_list is not None and len(disk_list) < needed:
                checker.add(
                    "error",
                    f"disk-setup.{spelled}",
                    f"{level} needs at least {needed} disks; {len(disk_list)} listed",
                )
            elif disk_list is not None and level == "raid10" and len(disk_list) % 2:
                checker.add(
                    "error", f"disk-setup.{spelled}", "raid10 needs an even number of disks"
                )
        if filesystem == "btrfs" and context.product not in (None, "pve"):
            checker.add("error", "disk-setup.filesystem", "btrfs is only offered by Proxmox VE")
    else:
        wrong = []
    for option in wrong:
        checker.add(
            "error",
            f"disk-setup.{option}",
            f"[disk-setup.{option}] does not go with filesystem = {filesystem!r}",
        )


def label(version: InstallerVersion) -> str:
    """
    A version as a person writes it: 9.1.x for the end of a range.
    """
    if version.patch == LAST_PATCH:
        return f"{version.major}.{version.minor}"
    return str(version)


def lint(data: bytes, version: InstallerVersion, product: str | None = None) -> list[Finding]:
    """
    The findings for an answer file's bytes: a file that is not UTF-8 TOML gives one.
    """
    try:
        text = data.decode("utf-8")
        document = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError, RecursionError) as e:
        return [Finding("error", "", f"not a TOML answer file: {e}")]
    return lint_document(document, text, Context(version, product))


def lint_range(data: bytes, versions: VersionRange, product: str | None = None) -> list[Finding]:
    """
    The findings for every installer in C{versions}: an error at both ends is an error;
    one that only some of them would have is a warning saying which.
    """
    low = lint(data, versions.low, product)
    if versions.high == versions.low:
        return low
    high = lint(data, versions.high, product)
    # The same problem at both ends may come with a different fix (each end spells the
    # key it suggests its own way); the low end's works at both, as snake_case is
    # accepted from 8.2 to 9.x.
    only_high = list(high)
    both: list[Finding] = []
    only_low: list[Finding] = []
    for finding in low:
        same = next((f for f in only_high if _problem(f) == _problem(finding)), None)
        if same is None:
            only_low.append(finding)
        else:
            only_high.remove(same)
            both.append(finding)
    merged = list(both)
    for finding, end in [(f, versions.low) for f in only_low] + [
        (f, versions.high) for f in only_high
    ]:
        if finding.severity == "error":
            merged.append(
                Finding(
                    "warning",
                    finding.key,
                    f"installer {label(end)} would reject it: {finding.message}",
                    finding.fix,
                    finding.line,
                )
            )
        elif all(_problem(f) != _problem(finding) for f in merged):
            merged.append(finding)
    return sorted(merged, key=lambda f: (f.line or 0, f.severity != "error", f.key))


def _problem(finding: Finding) -> tuple[str, str, str, int | None]:
    """
    What a finding says is wrong, and where, without what to do about it.
    """
    return finding.severity, finding.key, finding.message, finding.line


# Installers are shared: Backup Server X.Y ships the installer of Proxmox VE (X+5).Y.
# Mail Gateway's releases do not follow them (its 9.1 ISO has the 9.2 installer), so
# its requests, like Datacenter Manager's, are judged by their shape alone.
_RELEASE_OFFSET = {"pve": 0, "pbs": 5}


def installer_versions(installer: InstallerRequest, accept: str | None = None) -> VersionRange:
    """
    The installer versions a request may come from: its shape (8.2 sends no
    C{$schema}; 9.2 upper-case MACs and a JSON C{Accept}), narrowed by the ISO's
    release when the product is known.
    """
    if installer.schema_version is None:
        shape = VersionRange(V("8.2"), V(f"8.2.{LAST_PATCH}"))
    elif installer.upper_case_macs or "application/json" in (accept or "").lower():
        shape = VersionRange(V("9.2"), NEWEST)
    else:
        shape = VersionRange(V("8.3"), V(f"9.1.{LAST_PATCH}"))
    offset = _RELEASE_OFFSET.get(installer.product or "")
    if offset is None or installer.release is None:
        return shape
    try:
        release = V(installer.release)
    except ValueError:
        return shape
    claimed = VersionRange.exactly(InstallerVersion(release.major + offset, release.minor))
    low, high = max(shape.low, claimed.low), min(shape.high, claimed.high)
    return VersionRange(low, high) if low <= high else shape


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
