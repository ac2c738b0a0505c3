"""
The TFTP server as a service: binds its request port before twistd drops privileges,
logs a summary of what it turned away every few seconds while it runs, and on stop ends
every transfer and waits until their ports are closed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from pxepilot.health import ComponentHealth, IHealthCheck
from pxepilot.listening import ListeningService
from pxepilot.tftp.admission import SUMMARY_SECONDS
from pxepilot.tftp.server import TFTPServer
from pxepilot.udp import AddressedPort


class TFTPService(ListeningService):
    """
    Runs a L{TFTPServer} on C{port} of C{interface} (C{""}: every IPv4 address; C{::}:
    every IPv6 address and, dual-stack, every IPv4 one), and its summary line on the
    server's clock. On stop, every transfer ends (its client told) and the service
    waits until their ports are closed.
    """

    kind = "TFTP"

    def __init__(
        self, reactor: IReactorFDSet, server: TFTPServer, port: int, interface: str
    ) -> None:
        self._reactor = reactor
        self.server = server
        self.port_number = port
        self.interface = interface
        self._summary: LoopingCall | None = None

    def _listen(self) -> AddressedPort:
        port = AddressedPort(self.port_number, self.server, self.interface, reactor=self._reactor)
        port.startListening()
        return port

    def startService(self) -> None:
        super().startService()
        summary = LoopingCall(self.server.log_summary)
        summary.clock = self.server.clock
        # Nothing to sum up yet: the first line is due one interval from now.
        summary.start(SUMMARY_SECONDS, now=False)
        self._summary = summary

    def stopService(self) -> Deferred[Any]:
        stopped = super().stopService()
        summary, self._summary = self._summary, None
        if summary is not None and summary.running:
            summary.stop()
        ended = self.server.stop_all()
        # What was turned away since the last summary is not lost with the process.
        self.server.log_summary()
        return DeferredList([ended, stopped], consumeErrors=True)


@implementer(IHealthCheck)
@frozen
class TFTPHealth:
    """
    The TFTP server: listening, its root readable, and what it has done so far.
    """

    service: TFTPService
    root: Path
    name: str = "tftp"

    def check(self) -> ComponentHealth:
        server = self.service.server
        details: dict[str, Any] = {
            "listening": self.service.listening,
            "active_transfers": len(server.transfers),
            "transfers": dict(sorted(server.outcomes.items())),
            "bytes_sent": server.bytes_sent,
        }
        if self.service.listening:
            details["port"] = self.service.address().port
        try:
            os.listdir(self.root)
            details["root"] = "readable"
        except OSError as e:
            details["root"] = e.strerror or "unreadable"
            return ComponentHealth("unavailable", details)
        if not self.service.listening and self.service.running:
            return ComponentHealth("unavailable", details)
        return ComponentHealth("ok", details)
