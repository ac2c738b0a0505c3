"""
The installer's post-installation webhook: what a successful installation reports.

Installers from 8.3 on send it when the answer file has a C{[post-installation-webhook]}
section, once, from the live environment before they reboot; schema versions 1.0 to 1.2
(and 9.2's extra C{token}) are read alike, and keys nobody knows yet are ignored.

The body is untrusted: its size and the number of NICs, disks and host keys it lists
are bounded, and reading it takes time linear in its size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from attrs import field, frozen

from pxepilot.answers.request import (
    MAX_INTERFACES,
    BadInstallerRequest,
    json_object,
    json_type,
    table_field,
    text_field,
)
from pxepilot.hosts.model import Installation
from pxepilot.macs import MacAddress, MacAddressError, describe

# Bodies carry every disk's and NIC's udev properties: a server with 64 NICs and 48
# disks reports about 185 KiB (tests/hosts/test_webhook.py builds one), so 1 MiB leaves
# room for five times that.
MAX_WEBHOOK_BYTES = 1 << 20
# A storage server's disks, each seen through two paths, stay in the hundreds; more than
# this is not a machine, and each one is stored on the host's timeline.
MAX_DISKS = 1024
# OpenSSH makes three host keys (four before 9.8 dropped DSA).
MAX_HOST_KEYS = 16


class BadWebhook(Exception):
    """
    A body that is not an installation report; the message says why.
    """


@frozen
class InstallReport:
    """
    One installation report.

    @ivar macs: Every NIC's MAC address, each once, in the order listed but for the
        management NIC's, which comes first (the last one listed, should several be).
    @ivar installation: What was installed, and where it can be reached.
    @ivar serial: The DMI system serial number.
    @ivar uuid: The DMI system UUID.
    @ivar token: The body's C{token} (9.2 on, from the answer's C{auth-token}), to
        authenticate the report; L{None} when absent or not a string, as a report without
        one. A credential: kept out of the C{repr}, and of L{installation}, which is
        logged and stored.
    """

    macs: tuple[MacAddress, ...]
    installation: Installation
    serial: str | None = None
    uuid: str | None = None
    token: str | None = field(default=None, repr=False)


def parse_webhook(body: bytes) -> InstallReport:
    """
    Read an installation report.

    @raise BadWebhook: for a body that is not a JSON object, names no NIC with a MAC
        address, or lists more than L{MAX_INTERFACES} NICs, L{MAX_DISKS} disks or
        L{MAX_HOST_KEYS} host keys.
    """
    try:
        document = json_object(body, MAX_WEBHOOK_BYTES)
    except BadInstallerRequest as e:
        raise BadWebhook(str(e)) from None
    interfaces = document.get("network-interfaces")
    if not isinstance(interfaces, list):
        problem = "no" if interfaces is None else f"{json_type(interfaces)} as"
        raise BadWebhook(f"the report has {problem} network-interfaces, not a list")
    _within("network-interfaces", interfaces, MAX_INTERFACES)
    disks = document.get("disks")
    _within("disks", disks, MAX_DISKS)
    keys = table_field(document, "ssh-public-host-keys")
    _within("ssh-public-host-keys", keys, MAX_HOST_KEYS)
    # A dict keeps the first-seen order and finds a duplicate in constant time.
    listed: dict[MacAddress, None] = {}
    management = None
    address = None
    for index, interface in enumerate(interfaces):
        if not isinstance(interface, dict):
            raise BadWebhook(f"network-interfaces[{index}] is {json_type(interface)}")
        text = interface.get("mac")
        try:
            mac = MacAddress.parse(text if isinstance(text, str) else "")
        except MacAddressError:
            raise BadWebhook(
                f"network-interfaces[{index}].mac {describe(text)} is not a MAC address"
            ) from None
        listed.setdefault(mac)
        if interface.get("is-management") is True:
            management = mac
            address = text_field(interface, "address")
    if not listed:
        raise BadWebhook("network-interfaces lists no NIC")
    if management is not None:
        # First, wherever it was listed: merging keeps each key where it first came.
        listed = {management: None, **listed}

    product = table_field(document, "product")
    system = table_field(table_field(document, "dmi"), "system")
    installation = Installation(
        fqdn=text_field(document, "fqdn"),
        address=address,
        product=text_field(product, "short"),
        version=text_field(product, "version"),
        boot_mode=text_field(table_field(document, "boot-info"), "mode"),
        filesystem=text_field(document, "filesystem"),
        machine_id=text_field(document, "machine-id"),
        macs=tuple(str(mac) for mac in listed),
        disks=tuple(_disks(disks)),
        ssh_host_keys=tuple(_host_keys(keys)),
    )
    # Read whole, not cut short as text_field does: a token must match exactly.
    token = document.get("token")
    return InstallReport(
        macs=tuple(listed),
        installation=installation,
        serial=text_field(system, "serial"),
        uuid=text_field(system, "uuid"),
        token=token if isinstance(token, str) else None,
    )


def _within(key: str, value: object, limit: int) -> None:
    """
    Refuse a list or table of more than C{limit} entries, before any entry is read.
    """
    if isinstance(value, list | dict) and len(value) > limit:
        raise BadWebhook(f"{key} lists {len(value)} entries; at most {limit} are accepted")


def _disks(value: object) -> list[dict[str, Any]]:
    disks = []
    for disk in value if isinstance(value, list) else []:
        if not isinstance(disk, dict):
            continue
        udev = table_field(disk, "udev-properties")
        size = disk.get("size")
        disks.append(
            {
                "device": text_field(udev, "DEVNAME"),
                "serial": text_field(udev, "ID_SERIAL"),
                # The installer reports the configured hdsize for every disk.
                "size": size if isinstance(size, int) and not isinstance(size, bool) else None,
                "boot": disk.get("is-bootdisk") is True,
            }
        )
    return disks


def _host_keys(keys: dict[str, Any]) -> list[dict[str, str]]:
    found = []
    for kind in sorted(keys):
        line = keys[kind]
        if not isinstance(line, str):
            continue
        fingerprint = ssh_fingerprint(line) or "unreadable key"
        found.append({"type": kind[:32], "fingerprint": fingerprint})
    return found


def ssh_fingerprint(public_key_line: str) -> str | None:
    """
    The SHA-256 fingerprint of an OpenSSH public key line, as C{ssh-keygen -l} prints it;
    L{None} when the line holds no readable key.
    """
    fields = public_key_line.split()
    if len(fields) < 2:
        return None
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"
