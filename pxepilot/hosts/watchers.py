"""
What TFTP and asset downloads tell the ledger. Neither says which MAC address asks, so
each finds it from the client's IP address (L{HostLedger.mac_at}); a client it cannot
place is only counted.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from pxepilot.hosts.ledger import HostLedger
from pxepilot.hosts.model import EventKind
from pxepilot.http.files import DownloadEnded
from pxepilot.metrics import Metrics
from pxepilot.tftp.server import FinishedTransfer
from pxepilot.tftp.transfer import OutcomeKind


def tftp_watcher(ledger: HostLedger) -> Callable[[FinishedTransfer], None]:
    def finished(transfer: FinishedTransfer) -> None:
        # Firmware asks for a file's size first and stops: not an event of its own.
        if transfer.outcome in (OutcomeKind.PROBE, OutcomeKind.SHUTDOWN):
            return
        mac = ledger.mac_at(transfer.client)
        if mac is None:
            return
        ledger.note(
            mac,
            EventKind.TFTP,
            f"TFTP {transfer.file}: {transfer.outcome.value}, {transfer.bytes} bytes "
            f"in {transfer.seconds:.1f} s",
            file=transfer.file,
            outcome=transfer.outcome.value,
            bytes=transfer.bytes,
            seconds=round(transfer.seconds, 3),
            client=transfer.client,
        )

    return finished


def download_watcher(
    ledger: HostLedger | None,
    metrics: Metrics,
    clock: IReactorTime,
    client_of: Callable[[IRequest], str],
) -> Callable[[IRequest, str, int], DownloadEnded]:
    def started(request: IRequest, path: str, length: int) -> DownloadEnded:
        began = clock.seconds()
        client = client_of(request)
        mac = ledger.mac_at(client) if ledger is not None else None
        if ledger is not None and mac is not None:
            ledger.note(
                mac,
                EventKind.DOWNLOAD_STARTED,
                f"download of {path} started ({length} bytes)",
                file=path,
                bytes=length,
                client=client,
            )

        def ended(sent: int, complete: bool) -> None:
            seconds = clock.seconds() - began
            metrics.asset_downloads.labels("complete" if complete else "incomplete").inc()
            metrics.asset_bytes.inc(sent)
            if ledger is None or mac is None:
                return
            rate = f", {sent / seconds / 1e6:.0f} MB/s" if seconds > 0 else ""
            ledger.note(
                mac,
                EventKind.DOWNLOAD_ENDED,
                f"download of {path} {'completed' if complete else 'broken off'}: "
                f"{sent} of {length} bytes in {seconds:.1f} s{rate}",
                file=path,
                bytes=sent,
                expected=length,
                seconds=round(seconds, 3),
                complete=complete,
                client=client,
            )

        return ended

    return started
