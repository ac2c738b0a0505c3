"""
The TFTP server as a service: binds its request port before twistd drops privileges,
and on stop ends every transfer and waits until their ports are closed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from zope.interface import implementer

from pxepilot.health import ComponentHealth, IHealthCheck
from pxepilot.logs import logger
from pxepilot.tftp.server import RequestPort, TFTPServer

log = logger(__name__)


class TFTPService(Service):
    """
    Runs a L{TFTPServer} on C{port} of C{interface} (C{""}: every IPv4 address).
    """

    def __init__(self, reactor: Any, server: TFTPServer, port: int, interface: str) -> None:
        self._reactor = reactor
        self.server = server
        self.port_number = port
        self.interface = interface
        self._port: RequestPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._port is None:
            self._listen()

    def _listen(self) -> None:
        port = RequestPort(self.port_number, self.server, self.interface, reactor=self._reactor)
        port.startListening()
        self._port = port
        host = port.getHost()
        log.info("TFTP listening on {host}:{port}", host=host.host, port=host.port)

    @property
    def listening(self) -> bool:
        return self._port is not None

    def address(self) -> Any:
        """
        The request port's address, once started.
        """
        assert self._port is not None, "not listening"
        return self._port.getHost()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        port, self._port = self._port, None
        waits: list[Deferred[Any]] = [self.server.stop_all()]
        if port is not None:
            stopped = port.stopListening()
            if isinstance(stopped, Deferred):
                waits.append(stopped)
        return DeferredList(waits, consumeErrors=True)


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
