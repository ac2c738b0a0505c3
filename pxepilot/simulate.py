"""
What a machine would get if it asked for its answer now, without asking: the request its
installer would send, and pxe-pilot's answer to it, decided by the same functions as
C{POST /answer} (L{pxepilot.answers.service.AnswerService.resolve} then
L{pxepilot.answers.decision.decide_answer}) but recorded nowhere.

The Proxmox tool C{proxmox-auto-install-assistant} answers the same question offline
for its own answer sources; pxe-pilot's routes, the C{pxe-pilot simulate} command and
its offline form all go through L{simulate}.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from pxepilot.answers.decision import Decision, Installed, Refuse, Serve, decide_answer
from pxepilot.answers.identity import Identity, Rule
from pxepilot.answers.lint import Finding, errors
from pxepilot.answers.request import InstallerRequest
from pxepilot.answers.service import AnswerService, Changing, Invalid, NoAnswer, Resolution, Served
from pxepilot.answers.versions import (
    Gates,
    InstallerVersion,
    VersionRange,
    installer_versions,
)
from pxepilot.hosts.ledger import installed_by_identity
from pxepilot.hosts.model import Host
from pxepilot.macs import MacAddress

PRODUCTS = {
    "pve": "Proxmox VE",
    "pbs": "Proxmox Backup Server",
    "pmg": "Proxmox Mail Gateway",
    "pdm": "Proxmox Datacenter Manager",
}

_RULE_NAMES = {Rule.UUID: "system UUID", Rule.SERIAL: "serial number", Rule.MODEL: "model"}

# What a 9.2 or later installer sends in C{Accept}; older ones send none.
JSON_ACCEPT = "application/json, application/toml;q=0.5"


class StateUnreadable(Exception):
    """
    The state database cannot be read; the message says why and where.
    """


def installer_body(
    macs: Sequence[MacAddress],
    version: InstallerVersion,
    product: str = "pve",
    serial: str | None = None,
    uuid: str | None = None,
    model: str | None = None,
) -> tuple[bytes, str | None]:
    """
    The system information installer C{version} of C{product} would POST for a machine
    with C{macs}, in that version's shape (8.2 sends no C{$schema}; 9.2 and later
    upper-case MAC addresses and a JSON C{Accept}); and that C{Accept} header.

    The ISO release is the one that carries C{version}: Proxmox VE X.Y carries installer
    X.Y, Backup Server X.Y installer X+5.Y. Mail Gateway and Datacenter Manager releases
    follow neither, so theirs is left out, as pxe-pilot judges their requests by shape.
    """
    upper = version >= Gates.JSON_REQUEST
    document: dict[str, Any] = {}
    if version >= Gates.REQUEST_SCHEMA:
        document["$schema"] = {"version": "1.0"}
    document["product"] = {"fullname": PRODUCTS[product], "product": product}
    offset = {"pve": 0, "pbs": 5}.get(product)
    if offset is not None:
        document["iso"] = {
            "release": f"{version.major - offset}.{version.minor}",
            "isorelease": "1",
        }
    document["dmi"] = {"system": {"serial": serial or "", "uuid": uuid or "", "name": model or ""}}
    document["network_interfaces"] = [
        {"link": f"nic{index}", "mac": str(mac).upper() if upper else str(mac)}
        for index, mac in enumerate(macs)
    ]
    return json.dumps(document).encode("utf-8"), JSON_ACCEPT if upper else None


@frozen
class InstallOnce:
    """
    What install-once says of the machine.

    @ivar known: Whether the hosts' states were at hand (not offline without them).
    @ivar enabled: Whether install-once is on.
    @ivar installed: The installed host among the machine's MACs, if any.
    """

    known: bool
    enabled: bool
    installed: Installed | None = None

    @property
    def refuses(self) -> bool:
        return self.enabled and self.installed is not None

    def as_json(self) -> dict[str, Any]:
        installed = self.installed
        return {
            "known": self.known,
            "enabled": self.enabled,
            "installed": None
            if installed is None
            else {"mac": str(installed.mac), "at": installed.at},
            "refuses": self.refuses,
        }


@frozen
class Simulation:
    """
    pxe-pilot's answer to a machine, and why.

    @ivar installer: The request, as pxe-pilot read it.
    @ivar versions: The installer versions pxe-pilot judges the request to come from.
    @ivar decision: What C{POST /answer} would answer, install-once included.
    @ivar checked: What the machine's answer file meets, whatever install-once says:
        what it would be served once re-armed. Decided under C{--answer-check warn}, so
        that a file's findings are there whether or not the server would refuse it.
    @ivar resolution: The answer file found for the machine.
    @ivar install_once: What install-once says of it.
    @ivar host: The host pxe-pilot knows the machine by, if it knows one.
    """

    installer: InstallerRequest
    versions: VersionRange
    decision: Decision
    checked: Decision
    resolution: Resolution
    install_once: InstallOnce
    host: Host | None = None

    @property
    def accepted(self) -> bool:
        """
        Whether the machine would be served an answer its installer accepts.
        """
        return isinstance(self.decision, Serve) and not self.decision.rejected

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.checked.findings if isinstance(self.checked, Serve) else ()

    @property
    def source(self) -> str | None:
        resolution = self.resolution
        return None if isinstance(resolution, NoAnswer) else resolution.source

    def why(self) -> str:
        """
        Why this file, or none, in one line for a person.
        """
        resolution = self.resolution
        macs = self.installer.macs
        searched = "its MAC address" if len(macs) == 1 else f"any of its {len(macs)} MAC addresses"
        if isinstance(resolution, NoAnswer):
            return f"no host file for {searched} and no default.toml"
        if isinstance(resolution, Served) and resolution.rule is Rule.DEFAULT:
            return f"no host file for {searched}: the default"
        if isinstance(resolution, Served) and resolution.mac is None:
            return f"no host file for {searched}: the file of its {_RULE_NAMES[resolution.rule]}"
        if isinstance(resolution, Served) and resolution.mac is not None:
            index = macs.index(resolution.mac)
            before = (
                f"; the NICs listed before it ({', '.join(str(m) for m in macs[:index])}) "
                "have none"
                if index
                else ""
            )
            return f"the host file of {resolution.mac}, its NIC {index + 1} of {len(macs)}{before}"
        if isinstance(resolution, Invalid):
            return f"chosen, but cannot be served: {resolution.describe()}"
        assert isinstance(resolution, Changing)
        return f"chosen, but still being written: asked again in {resolution.retry_after} s"

    def as_json(self) -> dict[str, Any]:
        installer = self.installer
        decision = self.decision
        matched = self.resolution.mac if isinstance(self.resolution, Served) else None
        return {
            "accepted": self.accepted,
            "status": decision.code if isinstance(decision, Refuse) else 200,
            "outcome": decision.outcome if isinstance(decision, Refuse) else "served",
            "reason": decision.reason if isinstance(decision, Refuse) else None,
            "file": self.source,
            "why": self.why(),
            "matched_mac": None if matched is None else str(matched),
            "rule": self.resolution.rule.value if isinstance(self.resolution, Served) else None,
            "installer_version": str(self.versions),
            "checked": isinstance(self.checked, Serve),
            "findings": [finding.as_json() for finding in self.findings],
            "errors": len(errors(self.findings)),
            "install_once": self.install_once.as_json(),
            "host": None
            if self.host is None
            else {"mac": str(self.host.mac), "state": self.host.state.value},
            "request": {
                "macs": [str(mac) for mac in installer.macs],
                "product": installer.product,
                "release": installer.release_label,
                "serial": installer.serial,
                "uuid": installer.uuid,
                "model": installer.model,
            },
        }


def simulate(
    installer: InstallerRequest,
    accept: str | None,
    resolution: Resolution,
    hosts: Mapping[MacAddress, Host] | None,
    install_once: bool,
    answer_check: str,
) -> Simulation:
    """
    What C{POST /answer} would answer C{installer}, and why: a pure function.

    @param resolution: The answer file found for its MACs.
    @param hosts: Every host pxe-pilot knows, by MAC; L{None} when they are not at hand
        (offline without the state), so install-once cannot be judged.
    @param install_once: Whether install-once is on.
    @param answer_check: The server's C{--answer-check}: C{refuse} or C{warn}.
    """
    known = hosts is not None
    installed = None
    if install_once and hosts is not None:
        # As the answer route: the first of its MACs whose host is installed, else the
        # installed host of its UUID or serial number.
        installed = next(
            (
                Installed(host.mac, host.installed_at)
                for mac in installer.macs
                if (host := hosts.get(mac)) is not None and host.installed
            ),
            None,
        )
        same = installed_by_identity(hosts.values(), installer.uuid, installer.serial)
        if installed is None and same is not None:
            installed = Installed(same.mac, same.installed_at)
    decision = decide_answer(installer, accept, installed, resolution, answer_check)
    checked = (
        decision
        if isinstance(decision, Serve)
        else decide_answer(installer, accept, None, resolution, "warn")
    )
    return Simulation(
        installer,
        installer_versions(installer, accept),
        decision,
        checked,
        resolution,
        InstallOnce(known, install_once, installed),
        _known_as(installer.macs, hosts or {}),
    )


def _known_as(macs: Sequence[MacAddress], hosts: Mapping[MacAddress, Host]) -> Host | None:
    """
    The host a machine is known by: its most recently active known MAC's, as the
    ledger identifies it.
    """
    known = [hosts[mac] for mac in macs if mac in hosts]
    return max(known, key=lambda host: host.last_event.at) if known else None


async def evaluate(
    answers: AnswerService,
    installer: InstallerRequest,
    accept: str | None,
    hosts: Mapping[MacAddress, Host] | None,
    install_once: bool,
    answer_check: str,
) -> Simulation:
    """
    L{simulate} with the answer file found as the answer route finds it (a file being
    written is waited for, as there).

    @raise AnswersUnavailable: when the answers directory cannot be read.
    """
    identity = Identity.of(installer.uuid, installer.serial, installer.model)
    resolution = await answers.resolve(installer.macs, identity)
    return simulate(installer, accept, resolution, hosts, install_once, answer_check)


def read_hosts(database: Path) -> dict[MacAddress, Host]:
    """
    Every host in a pxe-pilot state database, read without writing anything: the file
    is opened read-only, so a running pxe-pilot's database is never locked for writing
    or migrated.

    @raise StateUnreadable: when it is missing or not a pxe-pilot state database.
    """
    if not database.is_file():
        raise StateUnreadable(f"{database}: no pxe-pilot state database there")
    # Reading a database in WAL mode makes SQLite create its -wal and -shm files, which
    # a pxe-pilot running as another user could then not open. Without a -wal file
    # (pxe-pilot is stopped, everything is in the main file), it is read as immutable,
    # which creates nothing; with one, pxe-pilot made them and they are its own.
    wal = database.with_name(f"{database.name}-wal")
    immutable = "&immutable=1" if not wal.exists() else ""
    try:
        db = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro{immutable}", uri=True)
    except sqlite3.Error as e:
        raise StateUnreadable(f"{database} cannot be opened: {e}") from None
    try:
        rows = db.execute("SELECT record FROM hosts").fetchall()
        hosts = [Host.from_json(json.loads(record)) for (record,) in rows]
    except (sqlite3.Error, ValueError, KeyError, TypeError) as e:
        raise StateUnreadable(
            f"{database} is not a readable pxe-pilot state database: {e}"
        ) from None
    finally:
        db.close()
    return {host.mac: host for host in hosts}
