"""
The system information the Proxmox installer POSTs when it asks for its answer.

Every installer from 8.2 on sends a JSON object with C{network_interfaces} (a list of
C{{"link": ..., "mac": ...}}), C{product}, C{iso} and C{dmi}. 8.2 sends a truncated
charset (C{charset=utf-}), 9.2 upper-case MAC addresses; the body is read as UTF-8 JSON
whatever the headers say.

The body is untrusted: its size, the number of interfaces it lists and the length of
every string kept from it are bounded, and reading it takes time linear in its size.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from pxepilot.macs import MacAddress, MacAddressError, describe, is_other_hardware_address

MAX_REQUEST_BYTES = 1 << 20

# The most interfaces one request may list. The largest servers have a few dozen ports,
# virtual functions included, and the installer lists the physical links: a list longer
# than this is not a machine, and refusing it before looking at any entry keeps every
# later step (the answer lookup, the ledger, the log line) small.
MAX_INTERFACES = 256


class BadInstallerRequest(Exception):
    """
    A request body that is not installer system information; the message says why.
    """


@frozen
class InstallerRequest:
    """
    What pxe-pilot uses of the installer's system information.

    @ivar macs: The 48-bit MAC addresses of C{network_interfaces}, in payload order,
        each once.
    @ivar skipped: Interfaces with a hardware address that is not 48 bits (InfiniBand
        and the like), as C{"link address"} text; they cannot name a host.
    @ivar product: C{pve}, C{pbs}, C{pmg} or C{pdm}, if sent.
    @ivar product_name: The product's long name, if sent.
    @ivar release: The ISO release (C{9.1}), if sent.
    @ivar iso_release: The ISO's own release number (C{1}), if sent.
    @ivar schema_version: C{$schema.version}; absent from 8.2 installers.
    @ivar serial: The DMI system serial number, if sent and not empty.
    @ivar uuid: The DMI system UUID, if sent and not empty.
    @ivar model: The DMI system product name (C{PowerEdge R650}), if sent and not empty.
    @ivar upper_case_macs: Whether the MAC addresses came in upper case (9.2 on).
    """

    macs: tuple[MacAddress, ...]
    skipped: tuple[str, ...] = ()
    product: str | None = None
    product_name: str | None = None
    release: str | None = None
    iso_release: str | None = None
    schema_version: str | None = None
    serial: str | None = None
    uuid: str | None = None
    model: str | None = None
    upper_case_macs: bool = False

    @property
    def release_label(self) -> str | None:
        """
        C{9.1-1}, or as much of it as was sent.
        """
        if self.release and self.iso_release:
            return f"{self.release}-{self.iso_release}"
        return self.release


def json_object(body: bytes, limit: int = MAX_REQUEST_BYTES) -> dict[str, Any]:
    """
    A request body that must be a JSON object in UTF-8, whatever its headers say.

    @raise BadInstallerRequest: saying what the body is instead.
    """
    if len(body) > limit:
        raise BadInstallerRequest(f"request body is larger than {limit} bytes")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInstallerRequest(f"request body is not UTF-8 (byte {e.start})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInstallerRequest(f"request body is not valid JSON: {e}") from None
    except (ValueError, RecursionError):
        # Integers beyond Python's digit limit, or nesting beyond the recursion limit.
        raise BadInstallerRequest("request body is not acceptable JSON") from None
    if not isinstance(document, dict):
        raise BadInstallerRequest(f"request body must be a JSON object, not {json_type(document)}")
    return document


def parse_installer_request(body: bytes) -> InstallerRequest:
    """
    Read the installer's system information.

    @raise BadInstallerRequest: for a body that is not UTF-8 JSON, not an object, without
        a list of C{network_interfaces}, with more than L{MAX_INTERFACES} of them, or
        with an interface without a valid MAC.
    """
    document = json_object(body)
    if "network_interfaces" not in document:
        raise BadInstallerRequest("request body has no network_interfaces")
    interfaces = document["network_interfaces"]
    if not isinstance(interfaces, list):
        raise BadInstallerRequest(
            f"network_interfaces must be a list, not {json_type(interfaces)}"
        )
    if len(interfaces) > MAX_INTERFACES:
        raise BadInstallerRequest(
            f"network_interfaces lists {len(interfaces)} interfaces; "
            f"at most {MAX_INTERFACES} are accepted"
        )

    # A dict keeps the first-seen order and finds a duplicate in constant time.
    macs: dict[MacAddress, None] = {}
    skipped: list[str] = []
    upper_case = False
    for index, interface in enumerate(interfaces):
        where = f"network_interfaces[{index}]"
        if not isinstance(interface, dict):
            raise BadInstallerRequest(f"{where} must be an object, not {json_type(interface)}")
        mac_text = interface.get("mac")
        if not isinstance(mac_text, str):
            problem = "has no mac" if mac_text is None else "mac must be a string"
            raise BadInstallerRequest(f"{where} {problem}")
        try:
            mac = MacAddress.parse(mac_text)
        except MacAddressError:
            if is_other_hardware_address(mac_text):
                # Interface names have at most 15 characters; the rest is not a name.
                link = text_field(interface, "link", limit=32) or "?"
                skipped.append(f"{link} {mac_text.strip()}")
                continue
            raise BadInstallerRequest(
                f"{where}.mac {describe(mac_text)} is not a MAC address"
            ) from None
        if mac_text != mac_text.lower():
            upper_case = True
        macs.setdefault(mac)
    if not macs:
        raise BadInstallerRequest("network_interfaces lists no MAC address")

    product = table_field(document, "product")
    iso = table_field(document, "iso")
    system = table_field(table_field(document, "dmi"), "system")
    return InstallerRequest(
        macs=tuple(macs),
        skipped=tuple(skipped),
        product=text_field(product, "product"),
        product_name=text_field(product, "fullname"),
        release=text_field(iso, "release"),
        iso_release=text_field(iso, "isorelease"),
        schema_version=text_field(table_field(document, "$schema"), "version"),
        serial=text_field(system, "serial"),
        uuid=text_field(system, "uuid"),
        model=text_field(system, "name"),
        upper_case_macs=upper_case,
    )


def table_field(document: dict[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key)
    return value if isinstance(value, dict) else {}


def text_field(table: dict[str, Any], key: str, limit: int = 128) -> str | None:
    """
    A descriptive string field, kept short (C{limit} characters) and printable; anything
    else is absent.
    """
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), "a value")
