"""
What pxe-pilot knows about each machine: its events and the state they lead to.

A host is keyed by the MAC address it network-boots with. Its state follows its events
through L{advance}, a pure function, so the same events always give the same state,
whether they arrive live or are replayed from the store.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs
from attrs import frozen

from pxepilot.macs import MacAddress


class HostState(enum.Enum):
    """
    Where a host is in its installation.
    """

    NEW = "new"  # seen, or re-armed, and nothing since
    BOOTING = "booting"  # network-booting: boot file, menu, kernel or initrd
    INSTALLING = "installing"  # an answer was served
    INSTALLED = "installed"  # the installer reported success (post-installation webhook)
    LOCAL_BOOT = "local-boot"  # its menu chose the local disk
    FAILED = "failed"  # installing, and then silent too long or booting again


class EventKind(enum.Enum):
    """
    What happened to a host.
    """

    TFTP = "tftp"  # a file over TFTP (detail: file, outcome, bytes, seconds)
    SCRIPT = "script"  # boot.ipxe or menu.ipxe fetched (detail: script, choice)
    DOWNLOAD_STARTED = "download-started"  # detail: file, bytes
    DOWNLOAD_ENDED = "download-ended"  # detail: file, bytes, seconds, complete
    ANSWER_SERVED = "answer-served"  # detail: file
    ANSWER_REFUSED = "answer-refused"  # detail: reason, code
    INSTALLED = "installed"  # the webhook (detail: what it reported)
    LOCAL_BOOT = "local-boot"  # the menu's default was the local disk (detail: reason)
    REARMED = "rearmed"  # an operator asked for a reinstallation
    FAILED = "failed"  # detail: reason


@frozen
class Event:
    """
    One thing that happened to one host.

    @ivar mac: The host.
    @ivar at: When, in seconds since the epoch.
    @ivar kind: What.
    @ivar summary: One line for a person.
    @ivar detail: The facts, as JSON-compatible values.
    """

    mac: MacAddress
    at: float
    kind: EventKind
    summary: str
    detail: Mapping[str, Any] = attrs.field(factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "kind": self.kind.value,
            "summary": self.summary,
            "detail": dict(self.detail),
        }

    @classmethod
    def from_json(cls, mac: MacAddress, data: Mapping[str, Any]) -> Event:
        return cls(
            mac=mac,
            at=float(data["at"]),
            kind=EventKind(data["kind"]),
            summary=str(data["summary"]),
            detail=dict(data.get("detail", {})),
        )


@frozen
class Installation:
    """
    What the installer reported after a successful installation.
    """

    fqdn: str | None = None
    address: str | None = None
    product: str | None = None
    version: str | None = None
    boot_mode: str | None = None
    filesystem: str | None = None
    machine_id: str | None = None
    macs: tuple[str, ...] = ()
    disks: tuple[Mapping[str, Any], ...] = ()
    ssh_host_keys: tuple[Mapping[str, str], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "fqdn": self.fqdn,
            "address": self.address,
            "product": self.product,
            "version": self.version,
            "boot_mode": self.boot_mode,
            "filesystem": self.filesystem,
            "machine_id": self.machine_id,
            "macs": list(self.macs),
            "disks": [dict(disk) for disk in self.disks],
            "ssh_host_keys": [dict(key) for key in self.ssh_host_keys],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Installation:
        return cls(
            fqdn=data.get("fqdn"),
            address=data.get("address"),
            product=data.get("product"),
            version=data.get("version"),
            boot_mode=data.get("boot_mode"),
            filesystem=data.get("filesystem"),
            machine_id=data.get("machine_id"),
            macs=tuple(data.get("macs", ())),
            disks=tuple(data.get("disks", ())),
            ssh_host_keys=tuple(data.get("ssh_host_keys", ())),
        )


@frozen
class Host:
    """
    One machine as pxe-pilot knows it.

    @ivar mac: The MAC address it network-boots with.
    @ivar state: Where it is.
    @ivar since: When it entered that state.
    @ivar first_seen: Its first event.
    @ivar last_event: Its latest event.
    @ivar serial: The DMI serial number its installer sent.
    @ivar uuid: The DMI UUID its installer sent.
    @ivar model: The DMI system product name its installer sent.
    @ivar rule: Which rule chose the answer file it was last served (C{mac}, C{uuid},
        C{serial}, C{model}, C{default}).
    @ivar product: The product its installer or its webhook named (C{pve}, ...).
    @ivar answer: The answer file it was last served.
    @ivar installed_at: When its installation was reported; L{None} when it is not, or
        no longer, installed.
    @ivar installation: What the installer reported.
    @ivar webhook_token: Whether its last answer carried a webhook token pxe-pilot
        added for it: its installation report must then carry that token.
    @ivar secure_boot_at: When its firmware last loaded the signed shim (over TFTP or
        HTTP): it boots through the Secure Boot chain; L{None} when it never did, or
        booted through iPXE since.
    @ivar ipxe_unchained_at: When its firmware last loaded a UEFI iPXE binary that then
        never asked for its boot script: iPXE did not run, most often because the
        firmware's Secure Boot refused it. L{None} once iPXE's boot script or shim was
        fetched.
    """

    mac: MacAddress
    state: HostState
    since: float
    first_seen: float
    last_event: Event
    serial: str | None = None
    uuid: str | None = None
    product: str | None = None
    answer: str | None = None
    model: str | None = None
    rule: str | None = None
    installed_at: float | None = None
    installation: Installation | None = None
    webhook_token: bool = False
    secure_boot_at: float | None = None
    ipxe_unchained_at: float | None = None

    @property
    def installed(self) -> bool:
        return self.installed_at is not None

    def signed_chain_reason(self) -> str | None:
        """
        Why this host should be sent the Secure Boot chain rather than iPXE, when its
        setting leaves it to pxe-pilot; L{None} when nothing says so.
        """
        if self.secure_boot_at is not None:
            return "it booted through the signed chain before"
        if self.ipxe_unchained_at is not None:
            return "iPXE was loaded but never asked for its boot script (Secure Boot refused it?)"
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "mac": str(self.mac),
            "state": self.state.value,
            "since": self.since,
            "first_seen": self.first_seen,
            "last_event": self.last_event.as_json(),
            "serial": self.serial,
            "uuid": self.uuid,
            "product": self.product,
            "answer": self.answer,
            "model": self.model,
            "rule": self.rule,
            "installed_at": self.installed_at,
            "installation": self.installation.as_json() if self.installation else None,
            "webhook_token": self.webhook_token,
            "secure_boot_at": self.secure_boot_at,
            "ipxe_unchained_at": self.ipxe_unchained_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Host:
        mac = MacAddress.parse(data["mac"])
        installation = data.get("installation")
        return cls(
            mac=mac,
            state=HostState(data["state"]),
            since=float(data["since"]),
            first_seen=float(data["first_seen"]),
            last_event=Event.from_json(mac, data["last_event"]),
            serial=data.get("serial"),
            uuid=data.get("uuid"),
            product=data.get("product"),
            answer=data.get("answer"),
            model=data.get("model"),
            rule=data.get("rule"),
            installed_at=data.get("installed_at"),
            installation=Installation.from_json(installation) if installation else None,
            webhook_token=bool(data.get("webhook_token", False)),
            secure_boot_at=data.get("secure_boot_at"),
            ipxe_unchained_at=data.get("ipxe_unchained_at"),
        )


# The signed shim's names, over TFTP (any directory) and over HTTP (/ipxe/): the
# firmware that loads it boots through the Secure Boot chain.
SHIM_NAMES = ("shimx64.efi", "ipxe/shimx64.efi")


def _secure_boot_at(host: Host, event: Event) -> float | None:
    """
    When C{host} last loaded shim, after C{event}: a complete transfer of shim is a
    boot through the signed chain, iPXE's boot script one through iPXE.
    """
    detail = event.detail
    file = str(detail.get("file", ""))
    over_tftp = event.kind is EventKind.TFTP and detail.get("outcome") == "complete"
    if over_tftp and file.rpartition("/")[2] == SHIM_NAMES[0]:
        return event.at
    over_http = event.kind is EventKind.DOWNLOAD_ENDED and detail.get("complete")
    if over_http and file in SHIM_NAMES:
        return event.at
    if event.kind is EventKind.SCRIPT and detail.get("script") == "boot.ipxe":
        return None
    return host.secure_boot_at


# iPXE's UEFI programs, as firmware loads them over TFTP (any directory) or HTTP (/ipxe/).
UEFI_IPXE_NAMES = frozenset({"ipxe.efi", "snponly.efi", "snp.efi"})


def _ipxe_unchained_at(host: Host, event: Event) -> float | None:
    """
    When C{host}'s firmware loaded a UEFI iPXE that has not asked for its boot script
    since, after C{event}.
    """
    detail = event.detail
    directory, _, name = str(detail.get("file", "")).rpartition("/")
    over_tftp = event.kind is EventKind.TFTP and detail.get("outcome") == "complete"
    over_http = (
        event.kind is EventKind.DOWNLOAD_ENDED and detail.get("complete") and directory == "ipxe"
    )
    if (over_tftp or over_http) and name in UEFI_IPXE_NAMES:
        return event.at
    if event.kind is EventKind.SCRIPT and detail.get("script") == "boot.ipxe":
        return None
    if (over_tftp or over_http) and name == SHIM_NAMES[0]:
        return None
    return host.ipxe_unchained_at


# Events that show a machine network-booting.
_BOOT_EVENTS = frozenset(
    {EventKind.TFTP, EventKind.SCRIPT, EventKind.DOWNLOAD_STARTED, EventKind.DOWNLOAD_ENDED}
)


def next_state(state: HostState, kind: EventKind) -> HostState:
    """
    The state a host in C{state} moves to on an event of C{kind}.

    A host installing that network-boots again without having reported success has
    failed (its installer rebooted, or someone reset it). A failed host stays failed
    while it boots towards an installer, until it is served an answer again, so its
    state does not hide the failure a moment after it was seen; if its menu boots the
    local disk instead, that is where it is.
    """
    if kind is EventKind.INSTALLED:
        return HostState.INSTALLED
    if kind is EventKind.REARMED:
        return HostState.NEW
    if kind is EventKind.FAILED:
        return HostState.FAILED
    if kind is EventKind.ANSWER_SERVED:
        return HostState.INSTALLING
    if kind is EventKind.ANSWER_REFUSED:
        return state
    if kind is EventKind.LOCAL_BOOT:
        return HostState.FAILED if state is HostState.INSTALLING else HostState.LOCAL_BOOT
    assert kind in _BOOT_EVENTS
    if state is HostState.INSTALLING:
        # Downloads carry on after the answer only in the installer's own environment
        # (never here: it fetches nothing more), so any boot event means a new boot.
        return HostState.FAILED
    if state in (HostState.FAILED, HostState.INSTALLED):
        return state
    return HostState.BOOTING


def advance(host: Host | None, event: Event) -> Host:
    """
    The host after C{event}; a host seen for the first time starts as C{new}.
    """
    if host is None:
        host = Host(
            mac=event.mac,
            state=HostState.NEW,
            since=event.at,
            first_seen=event.at,
            last_event=event,
        )
    state = next_state(host.state, event.kind)
    changes: dict[str, Any] = {"last_event": event, "state": state}
    # A new answer starts the install timeout afresh, even while installing.
    if state is not host.state or event.kind is EventKind.ANSWER_SERVED:
        changes["since"] = event.at
    detail = event.detail
    for name in ("serial", "uuid", "product", "model"):
        if detail.get(name):
            changes[name] = detail[name]
    if event.kind is EventKind.ANSWER_SERVED:
        changes["answer"] = detail.get("file")
        changes["rule"] = detail.get("rule")
        changes["webhook_token"] = bool(detail.get("webhook_token", False))
    elif event.kind is EventKind.INSTALLED:
        changes["installed_at"] = event.at
        changes["installation"] = Installation.from_json(detail.get("installation", {}))
    elif event.kind is EventKind.REARMED:
        changes["installed_at"] = None
    changes["secure_boot_at"] = _secure_boot_at(host, event)
    changes["ipxe_unchained_at"] = _ipxe_unchained_at(host, event)
    return attrs.evolve(host, **changes)
