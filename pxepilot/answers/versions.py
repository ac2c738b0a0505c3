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
    order; each is the first installer with the change.

    @cvar HASHED_PASSWORD: C{root-password-hashed} is accepted (and suggested when no
        password is given).
    @cvar REQUEST_SCHEMA: Requests carry C{$schema}; 8.2's do not.
    @cvar WEBHOOK: C{[post-installation-webhook]} is accepted. The schema dates the table
        from 8.2.7, the installer first shipped on 8.3 ISOs; no 8.2 ISO (8.2.2 to 8.2.6)
        has it, and a request without C{$schema} is judged 8.2 to 8.2.x.
    @cvar UPPER_CASE_RAID: Upper-case RAID levels (C{RAID1}) are accepted.
    @cvar KEBAB_CASE: Multi-word keys are spelled in kebab-case; their snake_case
        spelling, the only one before, is deprecated.
    @cvar PASSWORD_LENGTH: The root password needs at least 8 characters.
    @cvar FQDN_TABLE: C{fqdn} may be a table (C{source = "from-dhcp"}).
    @cvar NETWORK_SOURCE: C{[network]} needs a C{source}; before, DHCP was assumed.
    @cvar JSON_REQUEST: Requests send upper-case MAC addresses and accept JSON.
    """

    HASHED_PASSWORD = V("8.2.7")
    REQUEST_SCHEMA = V("8.3")
    WEBHOOK = V("8.3")
    UPPER_CASE_RAID = V("8.3.3")
    KEBAB_CASE = V("8.4")
    PASSWORD_LENGTH = V("8.4")
    FQDN_TABLE = V("8.4.3")
    NETWORK_SOURCE = V("9.2")
    JSON_REQUEST = V("9.2")


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
