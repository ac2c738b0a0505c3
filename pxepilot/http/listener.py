"""
The HTTP and HTTPS listeners: a service on a stream server endpoint.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.python.failure import Failure

from pxepilot.http.limits import ConnectionGate
from pxepilot.listening import ListeningService


def _ignore_port(port: int | None) -> None:
    pass


class HTTPListener(ListeningService):
    """
    Listens on C{endpoint} (TCP or TLS) while running.

    @param kind: C{HTTP} or C{HTTPS}, for the log line.
    @param listening: Told the port it listens on once it does, and L{None} once it
        stopped (see L{pxepilot.address.HTTPAddress.listening}).
    @param gate: Stops and starts the port near the process's descriptor limit (the
        site's own L{ConnectionGate}, shared by the HTTP and HTTPS listeners).
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        listening: Callable[[int | None], None] = _ignore_port,
        kind: str = "HTTP",
        gate: ConnectionGate | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self._tell = listening
        self.kind = kind
        self.gate = gate

    def _listen(self) -> IListeningPort:
        outcome: list[IListeningPort | Failure] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        # TCP and TLS server endpoints listen synchronously; anything else would leave
        # start-up with no way to report a failure.
        assert outcome, f"{self.endpoint} did not listen synchronously"
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        port = outcome[0]
        if self.gate is not None:
            self.gate.watch(port)
        self._tell(getattr(port.getHost(), "port", None))
        return port

    def stopService(self) -> Deferred[None]:
        self._tell(None)
        if self.gate is not None and self._port is not None:
            # Before it stops listening: the gate must not start it reading again.
            self.gate.unwatch(self._port)
        return super().stopService()
