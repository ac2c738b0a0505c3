"""
The HTTP listener: a service on a server endpoint description.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore
from twisted.python.failure import Failure

from pxepilot.listening import ListeningService


def _ignore_port(port: int | None) -> None:
    pass


class HTTPListener(ListeningService):
    """
    Listens on C{description} (such as C{tcp:8080:interface=192.0.2.1}) while running.

    @param listening: Told the port it listens on once it does, and L{None} once it
        stopped (see L{pxepilot.address.HTTPAddress.listening}).
    """

    kind = "HTTP"

    def __init__(
        self,
        reactor: IReactorCore,
        description: str,
        factory: IProtocolFactory,
        listening: Callable[[int | None], None] = _ignore_port,
    ) -> None:
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self._tell = listening

    def _listen(self) -> IListeningPort:
        outcome: list[IListeningPort | Failure] = []
        serverFromString(self._reactor, self.description).listen(self.factory).addBoth(
            outcome.append
        )
        # Stream server endpoints on TCP listen synchronously; anything else would leave
        # start-up with no way to report a failure.
        assert outcome, f"{self.description} did not listen synchronously"
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        port = outcome[0]
        self._tell(getattr(port.getHost(), "port", None))
        return port

    def stopService(self) -> Deferred[None]:
        self._tell(None)
        return super().stopService()
