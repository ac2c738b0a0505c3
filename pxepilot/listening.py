"""
A service that owns one listening port and can say where it listens.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort

from pxepilot.logs import logger

log = logger(__name__)


class ListeningService(Service):
    """
    Binds in L{privilegedStartService}, before twistd drops privileges (TFTP's port 69
    needs root), or in L{startService} when started without it, as in an embedding
    application. A bind error propagates and stops start-up, instead of leaving a
    server that answers nothing.

    @cvar kind: What listens, for the log line (C{HTTP}, C{TFTP}).
    """

    kind = "?"
    _port: IListeningPort | None = None

    def _listen(self) -> IListeningPort:
        """
        Bind and return the port.
        """
        raise NotImplementedError

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._start_listening()

    def startService(self) -> None:
        super().startService()
        if self._port is None:
            self._start_listening()

    def _start_listening(self) -> None:
        self._port = self._listen()
        address = self._port.getHost()
        log.info(
            "{kind} listening on {host}:{port}",
            kind=self.kind,
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )

    @property
    def listening(self) -> bool:
        return self._port is not None

    def address(self) -> Any:
        """
        The address it listens on, once started.
        """
        assert self._port is not None, "not listening"
        return self._port.getHost()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self._port = self._port, None
        stopped = port.stopListening() if port is not None else None
        return stopped if isinstance(stopped, Deferred) else succeed(None)
