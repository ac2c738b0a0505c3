"""
A service that listens for HTTP on an endpoint description and can say where.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.python.failure import Failure

from pxepilot.logs import logger

log = logger(__name__)


class HTTPListener(Service):
    """
    Listens on C{description} (such as C{tcp:8080:interface=192.0.2.1}) while running.

    It binds in L{privilegedStartService}, before twistd drops privileges, and a bind
    error stops start-up instead of leaving a server that answers nothing.
    """

    def __init__(self, reactor: Any, description: str, factory: IProtocolFactory) -> None:
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self._port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._port is None:
            self._listen()

    def _listen(self) -> None:
        outcome: list[IListeningPort | Failure] = []
        serverFromString(self._reactor, self.description).listen(self.factory).addBoth(
            outcome.append
        )
        # Stream server endpoints on TCP listen synchronously; anything else would leave
        # start-up with no way to report a failure.
        assert outcome, f"{self.description} did not listen synchronously"
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        self._port = outcome[0]
        address = self._port.getHost()
        log.info(
            "HTTP listening on {host}:{port}",
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )

    def address(self) -> Any:
        """
        The address it listens on, once started.
        """
        assert self._port is not None, "not listening"
        return self._port.getHost()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        stopped = port.stopListening()
        return stopped if isinstance(stopped, Deferred) else succeed(None)
