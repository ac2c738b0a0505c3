"""
A service that owns one listening port and can say where it listens.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

from pxepilot.logs import logger

log = logger(__name__)


class ListenFailed(CannotListenError):
    """
    A listening service could not bind its port. It is the L{CannotListenError} it
    stands for, and says in one line what listens, where and why.

    @ivar kind: What could not listen (C{HTTP}, C{TFTP}, ...).
    """

    def __init__(self, kind: str, interface: str, port: int, cause: BaseException) -> None:
        super().__init__(interface, port, cause)
        self.kind = kind

    @property
    def errno(self) -> int | None:
        return getattr(self.socketError, "errno", None)

    @property
    def address(self) -> str:
        """
        C{host:port}, the host being C{0.0.0.0} for every IPv4 address.
        """
        host = self.interface or "0.0.0.0"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def why(self) -> str:
        """
        The address and what is wrong with it, for a person.
        """
        cause = getattr(self.socketError, "strerror", None) or str(self.socketError)
        if self.errno == errno.EADDRINUSE:
            return f"{self.address} is already in use ({cause})"
        if self.errno == errno.EADDRNOTAVAIL:
            return f"{self.address} is not an address of this machine ({cause})"
        if self.errno in (errno.EACCES, errno.EPERM) and 0 < self.port < 1024:
            return (
                f"{self.address} needs root or CAP_NET_BIND_SERVICE, as every port below "
                f"1024 does ({cause})"
            )
        return f"{self.address} cannot be bound ({cause})"

    def __str__(self) -> str:
        return f"{self.kind} cannot listen: {self.why()}"


class ListeningService(Service):
    """
    Binds in L{privilegedStartService}, before twistd drops privileges (TFTP's port 69
    needs root), or in L{startService} when started without it, as in an embedding
    application. A bind error propagates as L{ListenFailed} and stops start-up,
    instead of leaving a server that answers nothing.

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
        try:
            self._port = self._listen()
        except CannotListenError as e:
            failure = ListenFailed(self.kind, e.interface, e.port, e.socketError)
            raise self._explained(failure) from e
        address = self._port.getHost()
        host = str(getattr(address, "host", "?"))
        log.info(
            "{kind} listening on {host}:{port}",
            kind=self.kind,
            host=f"[{host}]" if ":" in host else host,
            port=getattr(address, "port", "?"),
        )

    def _explained(self, failure: ListenFailed) -> ListenFailed:
        """
        What start-up reports for C{failure}: a service that can say more (who holds
        the port, say) returns a more telling one.
        """
        return failure

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
