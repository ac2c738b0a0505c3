"""
The answer format's rules across keys: which keys a document must hold, which go
together and which exclude each other, as the installer checks them after parsing.

The rules report on the checker that walked the schema (L{pxepilot.answers.lint}), and
only errors: every finding here makes the installer stop. The releases at which a rule
changes are named with the others in L{pxepilot.answers.versions.Gates}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from typing import Any, Literal, Protocol

from pxepilot.answers.schema import MIN_DISKS, Context, pinning_name, type_name
from pxepilot.answers.versions import Gates


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

    def add(self, severity: Literal["error"], path: str, message: str, fix: str = "") -> None:
        """
        An error about C{path} (kebab-case), at the line of the key as the file spells it.
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


def _global_rules(checker: Checker, values: Mapping[str, Any]) -> None:
    version = checker.context.version
    checker.required("global", "keyboard", "country", "fqdn", "mailto", "timezone")
    passwords = [
        k for k in ("root-password", "root-password-hashed") if f"global.{k}" in checker.present
    ]
    if not passwords:
        forms = ["root-password"] + (
            ["root-password-hashed"] if version >= Gates.HASHED_PASSWORD else []
        )
        if version < Gates.KEBAB_CASE:
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


def _network_rules(checker: Checker, values: Mapping[str, Any], raw: Any) -> None:
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
                checker.add("error", where, f"must be a string, not {type_name(name)}")
                continue
            problem = pinning_name(name, checker.context)
            if problem:
                checker.add("error", where, problem)
            elif name.lower() in names:
                checker.add("error", where, f"{name!r} is also the name of {names[name.lower()]}")
            names[name.lower()] = mac


def _disk_rules(checker: Checker, values: Mapping[str, Any]) -> None:
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
            if context.version >= Gates.KEBAB_CASE
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
