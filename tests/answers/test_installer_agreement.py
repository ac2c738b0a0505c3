"""
The checker agrees with the installer on the cases where it once did not, at every
installer release concerned: what the installer accepts gets no error (at most a
warning that says "the installer accepts this" or "depends on the network"), what it
rejects gets one.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import tomli_w

from pxepilot.answers.lint import Finding, errors, lint, lint_range
from pxepilot.answers.versions import InstallerVersion, VersionRange
from tests.answers.strategies import base_answer

V = InstallerVersion.parse

# One installer of each stretch between two releases that changed the answer format.
RELEASES = (
    "8.2",
    "8.2.7",
    "8.3",
    "8.3.3",
    "8.3.5",
    "8.4",
    "8.4.3",
    "9.0",
    "9.0.4",
    "9.0.5",
    "9.0.6",
    "9.1",
    "9.1.2",
    "9.1.3",
    "9.1.7",
    "9.2",
    "9.2.6",
    "9.2.7",
)


def since(first: str, until: str | None = None) -> list[str]:
    """
    The releases of L{RELEASES} from C{first} on (up to, not including, C{until}).
    """
    return [r for r in RELEASES if V(r) >= V(first) and (until is None or V(r) < V(until))]


def spell(version: str, name: str) -> str:
    """
    A multi-word key as installer C{version} spells it.
    """
    return name if V(version) >= V("8.4") else name.replace("-", "_")


def answer(version: str, filesystem: str = "zfs") -> dict[str, Any]:
    return copy.deepcopy(base_answer(V(version), filesystem))


def check(document: dict[str, Any], version: str, product: str | None = None) -> list[Finding]:
    return lint(tomli_w.dumps(document).encode(), V(version), product)


def accepted(found: list[Finding], says: str | None = None) -> None:
    """
    No error; and, if C{says} is given, a warning that says it.
    """
    assert errors(found) == [], found
    if says is not None:
        assert any(says in f.message for f in found), found


def rejected(found: list[Finding], key: str) -> None:
    assert key in {f.key for f in errors(found)}, found


ACCEPTS = "the installer accepts this"
NETWORK = "depends on the network"

# -- refused what the installer accepts


@pytest.mark.parametrize("version", since("8.4"))
def test_first_boot_cert_fingerprint_alias(version: str) -> None:
    """
    [first-boot] cert_fingerprint is an alias from 8.4 (answer.rs, commit e126ee8).
    """
    document = answer(version)
    document["first-boot"] = {
        "source": "from-url",
        "url": "https://example.com/first-boot.sh",
        "cert_fingerprint": "AB:CD",
    }
    accepted(check(document, version))


def test_first_boot_cert_fingerprint_alias_not_before_8_4() -> None:
    """
    8.3 knew only cert-fingerprint in [first-boot].
    """
    document = answer("8.3")
    document["first-boot"] = {"source": "from-iso", "cert_fingerprint": "AB:CD"}
    rejected(check(document, "8.3"), "first-boot.cert-fingerprint")


@pytest.mark.parametrize("version", since("8.4.3"))
def test_fqdn_table_without_source(version: str) -> None:
    """
    fqdn.source has a serde default, from-dhcp; what the lease holds is the network's.
    """
    document = answer(version)
    document["global"]["fqdn"] = {"domain": "example.com"}
    accepted(check(document, version), NETWORK)


@pytest.mark.parametrize("version", since("8.4"))
def test_password_length_counts_bytes(version: str) -> None:
    """
    Seven characters, nine bytes: Rust's len() counts bytes.
    """
    document = answer(version)
    document["global"][spell(version, "root-password")] = "pässwör"
    accepted(check(document, version))
    document["global"][spell(version, "root-password")] = "abcdefg"
    rejected(check(document, version), "global.root-password")


@pytest.mark.parametrize("version", since("9.2"))
def test_cidr_without_prefix_is_a_host_address(version: str) -> None:
    """
    9.2's Cidr reads an address without prefix length as /32.
    """
    document = answer(version)
    document["network"] = {
        "source": "from-answer",
        "cidr": "192.168.1.10",
        "dns": "192.168.1.1",
        "gateway": "192.168.1.1",
        "filter": {"ID_NET_NAME_MAC": "*a0369f0ab382"},
    }
    accepted(check(document, version), ACCEPTS)


@pytest.mark.parametrize("version", since("8.2", "9.2"))
def test_cidr_needs_a_prefix_before_9_2(version: str) -> None:
    document = answer(version)
    document["network"] = {
        "source": "from-answer",
        "cidr": "192.168.1.10",
        "dns": "192.168.1.1",
        "gateway": "192.168.1.1",
        "filter": {"ID_NET_NAME_MAC": "*a0369f0ab382"},
    }
    rejected(check(document, version), "network.cidr")


@pytest.mark.parametrize("version", RELEASES)
def test_btrfs_raid10_odd_disk_count(version: str) -> None:
    """
    Only ZFS pairs RAID10 disks into mirrors; Btrfs needs 4 (Install.pm). 9.2.6's
    release notes claim a parse-time check for Btrfs too, in code that is not public:
    a warning there, never an error.
    """
    document = answer(version, "btrfs")
    document["disk-setup"]["btrfs"] = {"raid": "raid10"}
    document["disk-setup"][spell(version, "disk-list")] = ["a", "b", "c", "d", "e"]
    found = check(document, version, "pve")
    accepted(found)
    if V(version) >= V("9.2.6"):
        assert [f.key for f in found] == ["disk-setup.disk-list"]
    else:
        assert found == []
    document["disk-setup"]["filesystem"] = "zfs"
    document["disk-setup"]["zfs"] = document["disk-setup"].pop("btrfs")
    rejected(check(document, version, "pve"), "disk-setup.disk-list")


@pytest.mark.parametrize("version", RELEASES)
def test_maxvz_outside_proxmox_ve(version: str) -> None:
    """
    Install.pm reads lvm.maxvz for Proxmox VE's data volume only; elsewhere it is
    ignored.
    """
    document = answer(version, "ext4")
    document["disk-setup"]["lvm"] = {"maxvz": 100}
    accepted(check(document, version, "pbs"), ACCEPTS)


@pytest.mark.parametrize("version", since("9.0.4"))
def test_empty_filter_beside_a_disk_list(version: str) -> None:
    """
    From 9.0.4 the disk filter is a map with a default: an empty one is unset.
    """
    document = answer(version)
    document["disk-setup"]["filter"] = {}
    accepted(check(document, version))


@pytest.mark.parametrize("version", since("8.2", "9.0.4"))
def test_empty_filter_beside_a_disk_list_before_9_0_4(version: str) -> None:
    """
    Up to 9.0.3 the filter was an Option: an empty table is set, and cannot go with a
    disk list.
    """
    document = answer(version)
    document["disk-setup"]["filter"] = {}
    rejected(check(document, version), "disk-setup.filter")


@pytest.mark.parametrize("version", RELEASES)
def test_empty_disk_list_beside_a_filter(version: str) -> None:
    """
    The disk list is a Vec with a default in every release: an empty one is unset.
    """
    document = answer(version)
    document["disk-setup"][spell(version, "disk-list")] = []
    document["disk-setup"]["filter"] = {"ID_SERIAL": "WDC*"}
    accepted(check(document, version))


def pinned(version: str, enabled: bool, mapping: dict[str, str]) -> dict[str, Any]:
    document = answer(version)
    document["network"]["interface-name-pinning"] = {"enabled": enabled, "mapping": mapping}
    return document


@pytest.mark.parametrize("version", since("9.1"))
def test_disabled_pinning_mapping_is_ignored(version: str) -> None:
    """
    Only an enabled mapping is verified.
    """
    document = pinned(version, False, {"nonsense": "0"})
    accepted(check(document, version))
    enabled = check(pinned(version, True, {"aa:bb:cc:dd:ee:ff": "0"}), version)
    rejected(enabled, "network.interface-name-pinning.mapping.aa:bb:cc:dd:ee:ff")


@pytest.mark.parametrize("version", since("9.1"))
def test_pinning_keys_are_not_checked_as_mac_addresses(version: str) -> None:
    """
    An address no card has is only logged by the installer.
    """
    accepted(check(pinned(version, True, {"not-a-mac": "lan0"}), version), ACCEPTS)


@pytest.mark.parametrize("version", ["9.1", "9.1.3", "9.1.7", "9.2", "9.2.7"])
def test_pinning_duplicates_are_case_sensitive(version: str) -> None:
    """
    lan0 and LAN0 are two names (not at 9.1.2, which took lower case only).
    """
    mapping = {"aa:bb:cc:dd:ee:01": "lan0", "aa:bb:cc:dd:ee:02": "LAN0"}
    accepted(check(pinned(version, True, mapping), version))


@pytest.mark.parametrize("version", since("9.1"))
def test_pinning_duplicate_names(version: str) -> None:
    mapping = {"aa:bb:cc:dd:ee:01": "lan0", "aa:bb:cc:dd:ee:02": "lan0"}
    assert errors(check(pinned(version, True, mapping), version))


@pytest.mark.parametrize("version", since("9.2"))
def test_subscription_key_with_spaces(version: str) -> None:
    """
    The key is staged as given; the first-boot activation trims it.
    """
    document = answer(version)
    document["global"]["subscription-key"] = "  pve4c-0123456789 \n"
    assert check(document, version) == []
    document["global"]["subscription-key"] = "not a key"
    accepted(check(document, version), ACCEPTS)


@pytest.mark.parametrize("version", since("8.3"))
def test_upper_case_url_scheme(version: str) -> None:
    document = answer(version)
    document["first-boot"] = {"source": "from-url", "url": "HTTPS://example.com/fb.sh"}
    document["post-installation-webhook"] = {"url": "Http://pxe.example.com/hook"}
    assert check(document, version) == []


@pytest.mark.parametrize("version", RELEASES)
def test_arc_max_below_the_minimum(version: str) -> None:
    """
    RunEnv.pm raises an ARC maximum below 64 MiB to 64.
    """
    document = answer(version)
    document["disk-setup"]["zfs"][spell(version, "arc-max")] = 32
    accepted(check(document, version), ACCEPTS)


@pytest.mark.parametrize("version", since("8.4.3"))
def test_fqdn_domain_the_installer_replaces(version: str) -> None:
    """
    A domain that makes no FQDN gives way to <product>.example.invalid.
    """
    document = answer(version)
    document["global"]["fqdn"] = {"source": "from-dhcp", "domain": "-bad-.example"}
    found = check(document, version)
    accepted(found, ACCEPTS)
    assert any("pve.example.invalid" in f.message for f in found)


# -- accepted what the installer rejects


@pytest.mark.parametrize("version", RELEASES)
@pytest.mark.parametrize("level", ["Raid1", "rAID1", "RaidZ-1"])
def test_mixed_case_raid_level(version: str, level: str) -> None:
    """
    serde matches enum names exactly: all lower or (from 8.3.3) all upper case.
    """
    document = answer(version)
    document["disk-setup"][spell(version, "disk-list")] = ["a", "b", "c"]
    document["disk-setup"]["zfs"]["raid"] = level
    rejected(check(document, version), "disk-setup.zfs.raid")


@pytest.mark.parametrize("version", RELEASES)
def test_empty_disk_list_without_filter(version: str) -> None:
    """
    "Need either 'disk-list' or 'filter' set": an empty list is no list.
    """
    document = answer(version, "ext4")
    document["disk-setup"][spell(version, "disk-list")] = []
    rejected(check(document, version), "disk-setup.disk-list")


@pytest.mark.parametrize("version", RELEASES)
@pytest.mark.parametrize("key", ["dns", "gateway", "cidr"])
def test_ipv6_zone_index(version: str, key: str) -> None:
    """
    std::net::IpAddr has no zone index; Python's ipaddress reads one.
    """
    document = answer(version)
    document["network"] = {
        "source": "from-answer",
        "cidr": "2001:db8::10/64",
        "dns": "2001:db8::1",
        "gateway": "2001:db8::1",
        "filter": {"ID_NET_NAME_MAC": "*a0369f0ab382"},
    }
    document["network"][key] = "fe80::1%eno1" + ("/64" if key == "cidr" else "")
    rejected(check(document, version), f"network.{key}")


@pytest.mark.parametrize("version", since("9.2"))
def test_integers_beyond_u32(version: str) -> None:
    """
    proxmox-installer-types reads ashift, arc-max and copies as u32.
    """
    for key in ("arc-max", "ashift", "copies"):
        document = answer(version)
        document["disk-setup"]["zfs"][key] = 2**32
        rejected(check(document, version), f"disk-setup.zfs.{key}")


@pytest.mark.parametrize("version", since("8.4", "9.2"))
def test_arc_max_beyond_u32_before_9_2(version: str) -> None:
    """
    Up to 9.1 the field was a usize (64 bits).
    """
    document = answer(version)
    document["disk-setup"]["zfs"]["arc-max"] = 2**32
    accepted(check(document, version))


@pytest.mark.parametrize("version", RELEASES)
def test_integers_beyond_toml(version: str) -> None:
    """
    The installer's TOML reader stops at 64-bit integers; Python's does not.
    """
    document = answer(version)
    document["disk-setup"]["zfs"][spell(version, "arc-max")] = 2**64
    rejected(check(document, version), "disk-setup.zfs.arc-max")


# -- what only the network decides


@pytest.mark.parametrize("version", since("8.4.3"))
def test_from_dhcp_fqdn_depends_on_the_network(version: str) -> None:
    document = answer(version)
    document["global"]["fqdn"] = {"source": "from-dhcp"}
    [finding] = check(document, version)
    assert finding.severity == "warning"
    assert finding.message.startswith(f"{NETWORK}: ")
    assert "host name and a domain" in finding.message


def test_a_range_names_the_installers_that_reject() -> None:
    """
    Over 8.2 to 9.2, an empty filter beside a disk list is rejected up to 9.0.3 only:
    a warning that says so, not a refusal.
    """
    document = answer("9.2")
    document["disk-setup"]["filter"] = {}
    found = lint_range(tomli_w.dumps(document).encode(), VersionRange(V("8.4"), V("9.2.99")))
    assert [(f.severity, f.key) for f in found] == [("warning", "disk-setup.filter")]
    assert found[0].message.startswith("installer 8.4 to 9.0.3 would reject it: ")


def test_a_range_every_installer_rejects_is_refused() -> None:
    """
    Rejected by each installer of the range, for different reasons, is still an error.
    """
    document = answer("8.3")
    document["global"]["root_password"] = "short12"
    document["first-boot"] = {"source": "from-iso", "cert_fingerprint": "AB:CD"}
    found = lint_range(tomli_w.dumps(document).encode(), VersionRange(V("8.3"), V("8.4.99")))
    assert {(f.key, f.message.split(":")[0]) for f in errors(found)} == {
        ("first-boot.cert-fingerprint", "installer 8.3 would reject it"),
        ("global.root-password", "installer 8.4 would reject it"),
    }
