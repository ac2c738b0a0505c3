"""
The answer format's rules across keys: which keys a document must hold, which go
together and which exclude each other, as the installer checks them after parsing (in
the C{TryFrom} of its answer structs, in C{utils.rs} C{verify_*} and
C{parse_answer}, and, for what those leave to it, in the low-level installer).

The rules report on the checker that walked the schema (L{pxepilot.answers.lint}): an
error for what makes the installer of the asking version stop; a warning, saying so, for
what it accepts or what depends on the machine's network. The releases at which a rule
changes are named with the others in L{pxepilot.answers.versions.Gates}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from typing import Any, Literal, Protocol

from pxepilot.answers.schema import MIN_DISKS
from pxepilot.answers.values import ACCEPTS, NETWORK, Context, pinning_name, type_name
from pxepilot.answers.versions import Gates, previous

_MAC = re.compile(r"(?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")


class Checker(Protocol):
    """
    What the rules need of the checker that walked the schema.
    """

    @property
    def context(self) -> Context: ...

    @property
    def present(self) -> Set[str]:
        """
        Every known key the file sets, valid or not, by kebab-case path.
        """

    def add(
        self, severity: Literal["error", "warning"], path: str, message: str, fix: str = ""
    ) -> None:
        """
        A finding about C{path} (kebab-case), at the line of the key as the file spells it.
        """

    def required(self, path: str, *names: str) -> None:
        """
        An error for each of C{names} that the table at C{path} lacks.
        """


def apply_rules(checker: Checker, top: Mapping[str, Any], document: Mapping[str, Any]) -> None:
    """
    Check the rules across keys of a document whose keys and values C{checker} has
    checked: C{top} holds its valid values, by kebab-case name.
    """
    checker.required("", "global", "network", "disk-setup")
    known = {key: top.get(key) for key in ("global", "network", "disk-setup")}
    if isinstance(known["global"], dict):
        _global_rules(checker, known["global"])
    if isinstance(known["network"], dict):
        _network_rules(checker, known["network"])
    if isinstance(known["disk-setup"], dict):
        _disk_rules(checker, known["disk-setup"])
    webhook = top.get("post-installation-webhook")
    if isinstance(webhook, dict):
        checker.required("post-installation-webhook", "url")
    first_boot = top.get("first-boot")
    if isinstance(first_boot, dict):
        checker.required("first-boot", "source")
        # utils.rs verify_first_boot_settings, 8.3.0 on.
        if first_boot.get("source") == "from-url" and "first-boot.url" not in checker.present:
            checker.add("error", "first-boot.url", 'is required with source = "from-url"')


def _global_rules(checker: Checker, values: Mapping[str, Any]) -> None:
    version = checker.context.version
    checker.required("global", "keyboard", "country", "fqdn", "mailto", "timezone")
    passwords = [
        k for k in ("root-password", "root-password-hashed") if f"global.{k}" in checker.present
    ]
    if not passwords:
        # Global.root_password: a required String up to 8.2.6; from 8.2.7 both are
        # Options and verify_email_and_root_password_settings wants exactly one.
        forms = ["root-password"] + (
            ["root-password-hashed"] if version >= Gates.HASHED_PASSWORD else []
        )
        if version < Gates.KEBAB_CASE:
            forms = [form.replace("-", "_") for form in forms]
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
    fqdn = values.get("fqdn")
    if isinstance(fqdn, dict):
        # utils.rs get_network_settings: from-dhcp stops the installation when the
        # lease names no host, or has no domain and fqdn.domain is unset.
        domain = fqdn.get("domain")
        needs = "a host name" if domain else "a host name and a domain"
        checker.add(
            "warning",
            "global.fqdn",
            f"{NETWORK}: the installer stops unless the DHCP lease gives {needs}",
        )


def _network_rules(checker: Checker, values: Mapping[str, Any]) -> None:
    version = checker.context.version
    present = checker.present
    if "network.source" not in present and version >= Gates.NETWORK_SOURCE:
        checker.add(
            "error",
            "network.source",
            f"is required from installer {Gates.NETWORK_SOURCE}",
            'add source = "from-dhcp" (or "from-answer" with cidr, dns, gateway, filter)',
        )
    # Without a source the installer (up to 9.1) takes DHCP; with a wrong one (reported
    # already) which keys belong is unknown. Keys given a wrong value count as given:
    # they are reported as such, not as missing too.
    source = values.get("source") if "network.source" in present else "from-dhcp"
    filters = values.get("filter")
    # An empty filter is unset from 9.0.4 (BTreeMap with serde default); 9.2's
    # FromDhcp has no filter field at all, so there even an empty one is unknown.
    empty_unset = Gates.EMPTY_SELECTOR <= version < Gates.TYPES_CRATE
    static = [
        k
        for k in ("cidr", "dns", "gateway", "filter")
        if f"network.{k}" in present
        and not (k == "filter" and filters == {} and empty_unset and source == "from-dhcp")
    ]
    if source == "from-answer":
        for name in ("cidr", "dns", "gateway", "filter"):
            if f"network.{name}" not in present:
                checker.add("error", f"network.{name}", 'is required with source = "from-answer"')
        # Up to 9.0.3 and from 9.2 an empty filter passes parsing and
        # get_single_udev_index stops ("no filter defined"); 9.0.4 to 9.1 refuse it
        # when parsing.
        if filters == {}:
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
        _pinning_rules(checker, pinning)


def _pinning_rules(checker: Checker, pinning: Mapping[str, Any]) -> None:
    version = checker.context.version
    if "network.interface-name-pinning.enabled" not in checker.present:
        checker.add("error", "network.interface-name-pinning.enabled", "is required")
    mapping = pinning.get("mapping", {})
    where = "network.interface-name-pinning.mapping"
    for mac, name in mapping.items():
        # HashMap<String, String>: read (and so typed) whether pinning is on or not.
        if not isinstance(name, str):
            checker.add("error", f"{where}.{mac}", f"must be a string, not {type_name(name)}")
    if pinning.get("enabled") is not True:
        # Only an enabled mapping is verified (answer.rs TryFrom up to 9.1, the From
        # conversion of installer-common from 9.2); a disabled one is dropped.
        return
    # From 9.1.7 the MAC addresses are lower-cased as they are read: two spellings of
    # one address are one key, the later wins.
    folded = version >= Gates.PINNING_MAC_CASE
    owners: dict[str, str] = {}
    seen: set[str] = set()
    for mac, name in mapping.items():
        at = f"{where}.{mac}"
        if not isinstance(name, str):
            continue
        if not _MAC.fullmatch(mac):
            # Keys are never checked as addresses; verify_network_settings only logs
            # an address no card of the machine has.
            checker.add(
                "warning",
                at,
                f"{ACCEPTS}: {mac!r} is no MAC address such as aa:bb:cc:dd:ee:ff, "
                "so it pins no card",
            )
        problem = pinning_name(name, checker.context)
        if problem:
            checker.add("error", at, problem)
            continue
        key = mac.lower() if folded else mac
        if key in seen:
            continue
        seen.add(key)
        # The names are compared as they are: Linux interface names are
        # case-sensitive, and so is the installer's duplicate check.
        if name in owners and owners[name] != key:
            checker.add("error", at, f"{name!r} is also the name of {owners[name]}")
        owners.setdefault(name, key)


def _selection(checker: Checker, values: Mapping[str, Any]) -> list[str] | None:
    """
    Check how disks are chosen; the listed disks, if a list chooses them.
    """
    version = checker.context.version
    present = checker.present
    listed = values.get("disk-list")
    filters = values.get("filter")
    # Keys given a wrong value (reported already) count as set.
    has_list = "disk-setup.disk-list" in present and listed != []
    # An empty list is unset in every release (Vec with serde default); an empty
    # filter from 9.0.4 (Option<BTreeMap> before, where {} is Some).
    has_filter = "disk-setup.filter" in present and (
        filters != {} or version < Gates.EMPTY_SELECTOR
    )
    if not has_list and not has_filter:
        checker.add(
            "error",
            "disk-setup.disk-list",
            "need either a disk list or a filter",
            'such as disk-list = ["sda"]'
            if version >= Gates.KEBAB_CASE
            else 'such as disk_list = ["sda"]',
        )
    elif has_list and has_filter:
        checker.add(
            "error", "disk-setup.filter", "cannot use both disk-list and filter", "keep one"
        )
    elif has_filter and filters == {}:
        # Up to 9.0.3: a filter without properties matches no disk.
        checker.add("error", "disk-setup.filter", "needs at least one udev property")
    if not has_list or not isinstance(listed, list):
        return None
    duplicates = sorted({d for d in listed if listed.count(d) > 1})
    if duplicates and version >= Gates.DISK_CHECKS:
        checker.add("error", "disk-setup.disk-list", f"lists {duplicates[0]!r} twice")
    elif duplicates:
        # Before 9.0.5 the disks found are keyed by their index: one disk, once.
        checker.add(
            "warning",
            "disk-setup.disk-list",
            f"{ACCEPTS}: it lists {duplicates[0]!r} twice and uses it once "
            f"(installers from {Gates.DISK_CHECKS} refuse it)",
            "list each disk once",
        )
    if "" in listed:
        # Disks are found by their path ending with the name: "" ends every path.
        checker.add(
            "warning",
            "disk-setup.disk-list",
            f"{ACCEPTS}: an empty name matches every disk, the first one is taken",
            'name the disk, such as "sda"',
        )
    return listed if version >= Gates.DISK_CHECKS else sorted(set(listed))


def _disk_rules(checker: Checker, values: Mapping[str, Any]) -> None:
    context = checker.context
    version = context.version
    checker.required("disk-setup", "filesystem")
    filesystem = values.get("filesystem")
    listed = _selection(checker, values)
    options = {"zfs", "lvm", "btrfs"} & set(values)
    other_product = context.product not in (None, "pve")
    if filesystem in ("ext4", "xfs"):
        wrong = sorted(options - {"lvm"})
        if listed is not None and len(values["disk-list"]) > 1:
            checker.add(
                "error",
                "disk-setup.disk-list",
                f"{filesystem} installs on one disk; {len(values['disk-list'])} are listed",
                "list one, or use zfs or btrfs for RAID",
            )
        lvm = values.get("lvm", {})
        if isinstance(lvm, dict) and "maxvz" in lvm and other_product:
            # Install.pm reads maxvz for Proxmox VE's data volume only.
            checker.add(
                "warning",
                "disk-setup.lvm.maxvz",
                f"{ACCEPTS}, and ignores it: only Proxmox VE has a data volume",
                "remove it",
            )
        if (
            isinstance(lvm, dict)
            and "swapsize" in lvm
            and "hdsize" in lvm
            and lvm["swapsize"] > lvm["hdsize"] / 2
        ):
            # disk_checks.rs check_swapsize, 9.0.5 on.
            if version >= Gates.DISK_CHECKS:
                checker.add("error", "disk-setup.lvm.swapsize", "may be at most half of hdsize")
            else:
                checker.add(
                    "warning",
                    "disk-setup.lvm.swapsize",
                    f"{ACCEPTS}: swap over half of hdsize (installers from "
                    f"{Gates.DISK_CHECKS} refuse it)",
                )
    elif filesystem in ("zfs", "btrfs"):
        wrong = sorted(options - {filesystem})
        _raid_rules(checker, filesystem, values.get(filesystem), listed)
        if filesystem == "btrfs" and other_product:
            # utils.rs verify_filesystem_settings (enable_btrfs), 8.3.5 on.
            if version >= Gates.BTRFS_PRODUCT:
                checker.add(
                    "error", "disk-setup.filesystem", "btrfs is only offered by Proxmox VE"
                )
            else:
                checker.add(
                    "warning",
                    "disk-setup.filesystem",
                    f"{ACCEPTS}: btrfs outside Proxmox VE (installers from "
                    f"{Gates.BTRFS_PRODUCT} refuse it)",
                )
    else:
        wrong = []
    for option in wrong:
        checker.add(
            "error",
            f"disk-setup.{option}",
            f"[disk-setup.{option}] does not go with filesystem = {filesystem!r}",
        )


def _raid_rules(
    checker: Checker, filesystem: str, settings: Any, listed: list[str] | None
) -> None:
    version = checker.context.version
    if f"disk-setup.{filesystem}.raid" not in checker.present:
        # Unless [disk-setup.zfs] itself is wrong (not a table), and said so.
        if f"disk-setup.{filesystem}" not in checker.present or isinstance(settings, dict):
            checker.add("error", f"disk-setup.{filesystem}.raid", f"is required for {filesystem}")
        return
    if not isinstance(settings, dict) or "raid" not in settings or listed is None:
        return
    level = str(settings["raid"]).lower()
    needed = MIN_DISKS.get(level, 1)
    if len(listed) < needed:
        checker.add(
            "error",
            "disk-setup.disk-list",
            f"{level} needs at least {needed} disks; {len(listed)} listed",
        )
    elif level == "raid10" and len(listed) % 2 and filesystem == "zfs":
        # Install.pm get_zfs_raid_setup pairs the disks into mirrors.
        checker.add("error", "disk-setup.disk-list", "raid10 needs an even number of disks")
    elif level == "raid10" and len(listed) % 2 and version >= Gates.RAID10_PARSE:
        # Install.pm get_btrfs_raid_setup needs 4 disks, not an even count; the
        # release notes of 9.2.6 say the answer's check now wants one for Btrfs
        # too, in code (proxmox-installer-types 0.1.1) not published with them.
        checker.add(
            "warning",
            "disk-setup.disk-list",
            f"{ACCEPTS} up to {previous(Gates.RAID10_PARSE)}; the release notes of "
            f"{Gates.RAID10_PARSE} say it refuses an odd number of disks for btrfs "
            "raid10, in code pxe-pilot cannot read",
            "list an even number of disks",
        )
