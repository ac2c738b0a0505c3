"""
What the host ledger makes of pxe-pilot's events: each becomes an entry in a host's
timeline.

TFTP, C{boot.ipxe} and asset downloads do not say which MAC address asks, so each is
placed by the client's IP address (L{HostLedger.mac_at}); one that cannot be placed is
left out of every timeline (the metrics still count it).
"""

from __future__ import annotations

from attrs import frozen
from twisted.internet.defer import Deferred
from zope.interface import implementer

from pxepilot.events import (
    AnswerRefused,
    AnswerServed,
    BootScriptServed,
    DownloadEnded,
    DownloadStarted,
    IEventObserver,
    InstallationReported,
    MenuServed,
    TransferFinished,
)
from pxepilot.hosts.ledger import HostLedger
from pxepilot.hosts.model import EventKind

# Firmware asks for a file's size first and stops; a shutdown ends transfers nobody
# failed: neither is an event of the host's.
_NOT_ON_THE_TIMELINE = frozenset({"probe", "shutdown"})


@implementer(IEventObserver)
@frozen
class LedgerRecorder:
    """
    Records events in C{ledger}. Answers and installation reports are waited for (a
    caller acknowledges only what is saved); the rest are saved in the background.
    """

    ledger: HostLedger

    def observe(self, event: object) -> Deferred[None] | None:
        match event:
            case TransferFinished():
                self._transfer(event)
            case DownloadStarted():
                self._download_started(event)
            case DownloadEnded():
                self._download_ended(event)
            case BootScriptServed():
                self._boot_script(event)
            case MenuServed():
                self._menu(event)
            case AnswerServed():
                return self._answer_served(event)
            case AnswerRefused():
                return self._answer_refused(event)
            case InstallationReported():
                return self._installed(event)
        return None

    def _transfer(self, event: TransferFinished) -> None:
        if event.outcome in _NOT_ON_THE_TIMELINE:
            return
        mac = self.ledger.mac_at(event.client)
        if mac is None:
            return
        self.ledger.note(
            mac,
            EventKind.TFTP,
            f"TFTP {event.file}: {event.outcome}, {event.bytes} bytes in {event.seconds:.1f} s",
            file=event.file,
            outcome=event.outcome,
            bytes=event.bytes,
            seconds=round(event.seconds, 3),
            client=event.client,
        )

    def _download_started(self, event: DownloadStarted) -> None:
        mac = self.ledger.mac_at(event.client)
        if mac is None:
            return
        self.ledger.note(
            mac,
            EventKind.DOWNLOAD_STARTED,
            f"download of {event.path} started ({event.length} bytes)",
            file=event.path,
            bytes=event.length,
            client=event.client,
        )

    def _download_ended(self, event: DownloadEnded) -> None:
        mac = self.ledger.mac_at(event.client)
        if mac is None:
            return
        seconds = event.seconds
        rate = f", {event.sent / seconds / 1e6:.0f} MB/s" if seconds > 0 else ""
        self.ledger.note(
            mac,
            EventKind.DOWNLOAD_ENDED,
            f"download of {event.path} {'completed' if event.complete else 'broken off'}: "
            f"{event.sent} of {event.length} bytes in {seconds:.1f} s{rate}",
            file=event.path,
            bytes=event.sent,
            expected=event.length,
            seconds=round(seconds, 3),
            complete=event.complete,
            client=event.client,
        )

    def _boot_script(self, event: BootScriptServed) -> None:
        mac = self.ledger.mac_at(event.client)
        if mac is None:
            return
        self.ledger.note(
            mac, EventKind.SCRIPT, "boot.ipxe fetched", script="boot.ipxe", client=event.client
        )

    def _menu(self, event: MenuServed) -> None:
        self.ledger.saw_address(event.client, event.mac)
        self.ledger.note(
            event.mac,
            EventKind.LOCAL_BOOT if event.local else EventKind.SCRIPT,
            f"menu: {event.reason}" if event.local else f"menu: {event.default} ({event.reason})",
            script="menu.ipxe",
            default=event.default,
            reason=event.reason,
            platform=event.platform,
            memory_mib=event.memory_mib,
            client=event.client,
        )

    def _answer_served(self, event: AnswerServed) -> Deferred[None]:
        saved = self.ledger.record(
            event.mac,
            EventKind.ANSWER_SERVED,
            f"answer {event.source} served",
            file=event.source,
            **event.identity,
        )
        return saved.addCallback(lambda _: None)

    def _answer_refused(self, event: AnswerRefused) -> Deferred[None] | None:
        if event.mac is None:
            return None
        detail = {"file": event.source} if event.source else {}
        saved = self.ledger.record(
            event.mac,
            EventKind.ANSWER_REFUSED,
            event.summary,
            code=event.code,
            reason=event.reason,
            **detail,
            **event.identity,
        )
        return saved.addCallback(lambda _: None)

    def _installed(self, event: InstallationReported) -> Deferred[None]:
        installation = event.installation
        what = (
            " ".join(filter(None, [installation.get("product"), installation.get("version")]))
            or "Proxmox"
        )
        where = installation.get("fqdn") or "unknown FQDN"
        saved = self.ledger.record(
            event.mac,
            EventKind.INSTALLED,
            f"installed {what} as {where}",
            installation=dict(installation),
            serial=event.serial,
            uuid=event.uuid,
            product=installation.get("product"),
            client=event.client,
        )
        return saved.addCallback(lambda _: None)
