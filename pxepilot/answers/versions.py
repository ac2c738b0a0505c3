"""
Proxmox installer versions: their order, ranges of them, the releases at which the
answer format or the installer's requests changed, and which versions a request may
come from.

The releases at which a check changes are named here, in one list (L{Gates}), rather
than written as literals where they are tested; the first release of each key of the
answer format is data in the schema (L{pxepilot.answers.schema}).
"""

from __future__ import annotations

import re

from attrs import frozen

from pxepilot.answers.request import InstallerRequest


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


def label(version: InstallerVersion) -> str:
    """
    A version as a person writes it: 9.1.x for the end of a range.
    """
    if version.patch == LAST_PATCH:
        return f"{version.major}.{version.minor}"
    return str(version)


class Gates:
    """
    Every release at which the installer changed what it accepts or what it sends, in
    order; each is the first installer with the change. Each is read off the
    installer's source (C{proxmox/pve-installer}, the release's C{bump version} commit;
    from 9.2 also C{proxmox-installer-types} of C{proxmox/proxmox-rs}); the schema
    (L{pxepilot.answers.schema}) says which key or rule each one changed.

    Installers 8.2.0 and 8.2.1 were never on an ISO (Proxmox VE 8.2-1 carries 8.2.2 or
    later); what 8.2.2 changed (C{global.password} renamed C{root_password}, C{[system]}
    folded into C{[global]}, C{UTC} as a time zone) is dated 8.2 here.

    @cvar HASHED_PASSWORD: C{root-password-hashed} is accepted (and suggested when no
        password is given); the checks that exactly one password is given and that
        C{mailto} is an e-mail address come with it (C{MAILTO}).
    @cvar RAIDZ_UPPER_ONLY: C{RAIDZ-1} to C{RAIDZ-3} are read upper-case only, their
        lower-case spelling is refused (a regression of 8.2.7 to 8.3.2).
    @cvar REQUEST_SCHEMA: Requests carry C{$schema}; 8.2's do not.
    @cvar WEBHOOK: C{[post-installation-webhook]} is accepted. The schema dates the table
        from 8.2.7, the installer first shipped on 8.3 ISOs; no 8.2 ISO (8.2.2 to 8.2.6)
        has it, and a request without C{$schema} is judged 8.2 to 8.2.x.
    @cvar FIRST_BOOT: C{[first-boot]} is accepted.
    @cvar UPPER_CASE_RAID: Both all-lower and all-upper RAID levels (C{raid1},
        C{RAID1}) are accepted.
    @cvar BTRFS_PRODUCT: Btrfs is refused for products whose ISO does not offer it.
    @cvar KEBAB_CASE: Multi-word keys are spelled in kebab-case; their snake_case
        spelling, the only one before, is deprecated.
    @cvar PASSWORD_LENGTH: The root password needs at least 8 bytes.
    @cvar FQDN_TABLE: C{fqdn} may be a table (C{source = "from-dhcp"}), and
        C{reboot-mode} is accepted.
    @cvar EMPTY_SELECTOR: An empty C{filter} table counts as unset.
    @cvar DISK_CHECKS: The answer's disk list is checked when the file is read:
        duplicates, swap size; and an IPv4 C{cidr} may not be its network's or
        broadcast address (until C{SUBNET_ADDRESS_DROPPED}).
    @cvar SUBNET_ADDRESS_DROPPED: The network and broadcast address check is gone again.
    @cvar PINNING: C{[network.interface-name-pinning]} is accepted.
    @cvar PINNING_LETTER: Pinned names have 2 or more characters and start with a letter.
    @cvar PINNING_LOWER: Pinned names are lower case.
    @cvar PINNING_IFACE: Pinned names follow the C{pve-iface} pattern, in any case.
    @cvar PINNING_MAC_CASE: Pinned MAC addresses are lower-cased when read.
    @cvar NETWORK_SOURCE: C{[network]} needs a C{source}; before, DHCP was assumed.
    @cvar JSON_REQUEST: Requests send upper-case MAC addresses and accept JSON.
    @cvar TYPES_CRATE: The answer is read into C{proxmox-installer-types}: 32-bit
        integers, a C{cidr} without prefix length is a host address, C{subscription-key}
        and C{auth-token} are accepted.
    @cvar RAID10_PARSE: An odd number of listed disks for RAID10 is refused when the file
        is read (release notes of 9.2.6).
    """

    HASHED_PASSWORD = V("8.2.7")
    MAILTO = V("8.2.7")
    RAIDZ_UPPER_ONLY = V("8.2.7")
    REQUEST_SCHEMA = V("8.3")
    WEBHOOK = V("8.3")
    FIRST_BOOT = V("8.3")
    UPPER_CASE_RAID = V("8.3.3")
    BTRFS_PRODUCT = V("8.3.5")
    KEBAB_CASE = V("8.4")
    PASSWORD_LENGTH = V("8.4")
    FQDN_TABLE = V("8.4.3")
    EMPTY_SELECTOR = V("9.0.4")
    DISK_CHECKS = V("9.0.5")
    SUBNET_ADDRESS_DROPPED = V("9.0.6")
    PINNING = V("9.1")
    PINNING_LETTER = V("9.1.1")
    PINNING_LOWER = V("9.1.2")
    PINNING_IFACE = V("9.1.3")
    PINNING_MAC_CASE = V("9.1.7")
    NETWORK_SOURCE = V("9.2")
    JSON_REQUEST = V("9.2")
    TYPES_CRATE = V("9.2")
    RAID10_PARSE = V("9.2.6")

    @classmethod
    def all(cls) -> tuple[InstallerVersion, ...]:
        """
        Every gate, oldest first.
        """
        found = {v for v in vars(cls).values() if isinstance(v, InstallerVersion)}
        return tuple(sorted(found))


# The minor releases that shipped, so that the one before a x.y.0 is known.
SERIES = tuple(V(text) for text in ("8.2", "8.3", "8.4", "9.0", "9.1", "9.2"))


def previous(version: InstallerVersion) -> InstallerVersion:
    """
    The last installer before C{version}.
    """
    if version.patch:
        return InstallerVersion(version.major, version.minor, version.patch - 1)
    earlier = [s for s in SERIES if s < version]
    if earlier:
        return InstallerVersion(earlier[-1].major, earlier[-1].minor, LAST_PATCH)
    # Older than any installer with an answer file: only the order matters.
    if version.minor:
        return InstallerVersion(version.major, version.minor - 1, LAST_PATCH)
    return InstallerVersion(version.major - 1, LAST_PATCH, LAST_PATCH)


def release_points(
    versions: VersionRange, changes: tuple[InstallerVersion, ...]
) -> list[InstallerVersion]:
    """
    One installer for each stretch of C{versions} over which nothing in C{changes}
    changes: the low end, then every change inside the range.
    """
    return [versions.low, *sorted({c for c in changes if versions.low < c <= versions.high})]


def span_text(low: InstallerVersion, high: InstallerVersion) -> str:
    """
    A stretch of installers as a person writes it: 8.3 for 8.3.0 to 8.3.x, 9.0.5, 8.2 to
    8.3, 9.2.6 to 9.2.x.
    """
    if low == high:
        return label(low)
    if high.patch == LAST_PATCH:
        whole = low.patch == 0
        if whole and (low.major, low.minor) == (high.major, high.minor):
            return f"{low.major}.{low.minor}"
        end = f"{high.major}.{high.minor}" if whole else f"{high.major}.{high.minor}.x"
        return f"{low} to {end}"
    return f"{low} to {high}"


def _last_before(gate: InstallerVersion) -> InstallerVersion:
    """
    The last installer before C{gate}, a minor release after its major's first (so 9.1.x
    before 9.2: which minor release ends a major is not known here).
    """
    assert gate.minor > 0 and gate.patch == 0, gate
    return InstallerVersion(gate.major, gate.minor - 1, LAST_PATCH)


# Installers are shared: Backup Server X.Y ships the installer of Proxmox VE (X+5).Y.
# Mail Gateway's releases do not follow them (its 9.1 ISO has the 9.2 installer), so
# its requests, like Datacenter Manager's, are judged by their shape alone.
_RELEASE_OFFSET = {"pve": 0, "pbs": 5}


def installer_of_release(product: str | None, release: str | None) -> InstallerVersion | None:
    """
    The installer the ISO of C{product}'s C{release} carries (C{9.1-1} of C{pve}:
    9.1); L{None} when that product's releases do not say, or the release is unreadable.
    """
    offset = _RELEASE_OFFSET.get(product or "")
    if offset is None or release is None:
        return None
    try:
        version = V(release)
    except ValueError:
        return None
    return InstallerVersion(version.major + offset, version.minor)


def installer_versions(installer: InstallerRequest, accept: str | None = None) -> VersionRange:
    """
    The installer versions a request may come from: its shape (8.2 sends no
    C{$schema}; 9.2 upper-case MACs and a JSON C{Accept}), narrowed by the ISO's
    release when the product is known.
    """
    if installer.schema_version is None:
        shape = VersionRange(OLDEST, _last_before(Gates.REQUEST_SCHEMA))
    elif installer.upper_case_macs or "application/json" in (accept or "").lower():
        shape = VersionRange(Gates.JSON_REQUEST, NEWEST)
    else:
        shape = VersionRange(Gates.REQUEST_SCHEMA, _last_before(Gates.JSON_REQUEST))
    carried = installer_of_release(installer.product, installer.release)
    if carried is None:
        return shape
    claimed = VersionRange.exactly(carried)
    low, high = max(shape.low, claimed.low), min(shape.high, claimed.high)
    return VersionRange(low, high) if low <= high else shape
