"""
The HTTP listener: a service on a server endpoint description.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.python.failure import Failure

from pxepilot.listening import ListeningService


class HTTPListener(ListeningService):
    """
    Listens on C{description} (such as C{tcp:8080:interface=192.0.2.1}) while running.
    """

    kind = "HTTP"

    def __init__(self, reactor: Any, description: str, factory: IProtocolFactory) -> None:
        self._reactor = reactor
        self.description = description
        self.factory = factory

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
        return outcome[0]
