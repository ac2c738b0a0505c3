"""
Answer file templates: one model or default file for many machines, with each
machine's own values (FQDN, address, ...) taken from C{answers/inventory.toml}.

The syntax is one form only, C{key = {{ name }}}: a placeholder stands for a whole TOML
value and nothing else. The value is written as TOML (a string quoted and escaped), so
whatever an inventory holds, it can never add a key, a table or a line to the answer.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import tomli_w
from attrs import frozen

from pxepilot.answers.identity import Identity, serial_key, uuid_key
from pxepilot.macs import MacAddress, MacAddressError

TEMPLATE_SUFFIX = ".toml.tmpl"
INVENTORY_NAME = "inventory.toml"

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_ANY_PLACEHOLDER = re.compile(r"\{\{.*?\}\}")
# The only place a placeholder may stand: the whole value of a key, a comment after it.
_VALUE_LINE = re.compile(
    rf"^(?P<key>\s*[^\s=#\[][^=#]*=\s*)\{{\{{\s*(?P<name>{_NAME})\s*\}}\}}(?P<rest>\s*(#.*)?)$"
)


class TemplateError(Exception):
    """
    A template or an inventory that cannot make an answer; the message says why.

    @ivar line: The template's line, when the problem has one.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@frozen
class InventoryHost:
    """
    One C{[[host]]} of the inventory.

    @ivar label: How messages name it: its MAC, serial or UUID as written.
    @ivar mac: Its MAC address, if given.
    @ivar serial: Its serial number as a file stem (L{serial_key}), if given.
    @ivar uuid: Its system UUID as a file stem (L{uuid_key}), if given.
    @ivar values: Every key of the table, for the placeholders.
    """

    label: str
    mac: MacAddress | None
    serial: str | None
    uuid: str | None
    values: Mapping[str, Any]


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def parse_inventory(data: bytes) -> tuple[InventoryHost, ...]:
    """
    Read C{inventory.toml}: C{[[host]]} tables, each with at least one of C{mac},
    C{serial} and C{uuid}, and values that are strings, numbers, booleans or lists of
    them.

    @raise TemplateError: saying what is wrong and where.
    """
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise TemplateError(f"{INVENTORY_NAME} is not UTF-8 TOML: {e}") from None
    tables = document.get("host", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise TemplateError(f"{INVENTORY_NAME}: 'host' must be [[host]] tables")
    hosts = []
    for index, table in enumerate(tables):
        where = f"{INVENTORY_NAME}: [[host]] {index + 1}"
        for key, value in table.items():
            plain = _scalar(value) or (
                isinstance(value, list) and all(_scalar(item) for item in value)
            )
            if not plain:
                raise TemplateError(f"{where}: '{key}' must be a string, number or list")
        mac = None
        if "mac" in table:
            try:
                mac = MacAddress.parse(str(table["mac"]))
            except MacAddressError:
                raise TemplateError(
                    f"{where}: mac {table['mac']!r} is not a MAC address"
                ) from None
        serial = serial_key(str(table["serial"])) if "serial" in table else None
        uuid = uuid_key(str(table["uuid"])) if "uuid" in table else None
        if mac is None and serial is None and uuid is None:
            raise TemplateError(f"{where} has no mac, serial or uuid that names a machine")
        label = str(mac) if mac else str(table.get("serial") or table.get("uuid"))
        hosts.append(InventoryHost(label, mac, serial, uuid, dict(table)))
    return tuple(hosts)


def host_for(
    inventory: Sequence[InventoryHost], macs: Sequence[MacAddress], identity: Identity | None
) -> InventoryHost | None:
    """
    The inventory's host for a machine: by its MACs in the installer's order, then by
    UUID, then by serial number, as answer files are chosen.
    """
    for mac in macs:
        for host in inventory:
            if host.mac == mac:
                return host
    if identity is not None:
        for found in (
            [h for h in inventory if identity.uuid and h.uuid == identity.uuid],
            [h for h in inventory if identity.serial and h.serial == identity.serial],
        ):
            if found:
                return found[0]
    return None


def _toml_value(value: Any) -> str:
    # tomli-w quotes and escapes: a quote, a newline, "]" or "[table]" in the value
    # stays inside the string.
    return tomli_w.dumps({"v": value})[len("v = ") :].rstrip("\n")


def renderings(template: bytes, inventory: bytes) -> list[tuple[str, bytes | TemplateError]]:
    """
    C{template} rendered for every host of C{inventory}, each with its label: what
    C{pxe-pilot check} and C{GET /hosts} check.

    @raise TemplateError: when the inventory cannot be read.
    """
    try:
        text = template.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError("the template is not UTF-8") from None
    found: list[tuple[str, bytes | TemplateError]] = []
    for host in parse_inventory(inventory):
        try:
            found.append((host.label, render(text, host).encode("utf-8")))
        except TemplateError as e:
            found.append((host.label, e))
    return found


def render(template: str, host: InventoryHost) -> str:
    """
    The answer C{template} makes for C{host}.

    @raise TemplateError: for a placeholder where no value stands, or a name the host
        has no value for (naming the host and the key).
    """
    lines = []
    for number, line in enumerate(template.splitlines(keepends=True), start=1):
        ending = line[len(line.rstrip("\r\n")) :]
        text = line[: len(line) - len(ending)]
        if not _ANY_PLACEHOLDER.search(text):
            lines.append(line)
            continue
        match = _VALUE_LINE.match(text)
        if match is None:
            raise TemplateError(
                "a placeholder may only be a whole value: key = {{ name }}", number
            )
        name = match["name"]
        if name not in host.values:
            raise TemplateError(f"inventory host {host.label} has no value for '{name}'", number)
        lines.append(f"{match['key']}{_toml_value(host.values[name])}{match['rest']}{ending}")
    return "".join(lines)
