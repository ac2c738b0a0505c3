"""
The proxyDHCP service: ports 67 and 4011 on every IPv4 address (DHCP broadcasts reach
only sockets bound to the wildcard address), bound before twistd drops privileges.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorFDSet
from zope.interface import implementer

from pxepilot.dhcp.proxy import DHCP_SERVER_PORT, PXE_PORT, ProxyDHCPServer
from pxepilot.events import IEvents
from pxepilot.health import ComponentHealth, IHealthCheck
from pxepilot.listening import ListeningService
from pxepilot.udp import AddressedPort


class _ProxyPort(ListeningService):
    kind = "proxyDHCP"

    def __init__(self, reactor: IReactorFDSet, server: ProxyDHCPServer, port: int) -> None:
        self._reactor = reactor
        self.server = server
        self.port_number = port

    def _listen(self) -> AddressedPort:
        port = AddressedPort(self.port_number, self.server, "", reactor=self._reactor)
        port.startListening()
        return port


class ProxyDHCPService(MultiService):
    """
    proxyDHCP on its two ports.

    @ivar outcomes: Packets of both ports by what became of them.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        boot_script_url: Callable[[str], str],
        fallback_address: Callable[[], str | None],
        events: IEvents | None = None,
        ports: tuple[int, int] = (DHCP_SERVER_PORT, PXE_PORT),
    ) -> None:
        super().__init__()
        self.outcomes: Counter[str] = Counter()
        self.ports: list[_ProxyPort] = []
        for number, protocol_port in zip(ports, (DHCP_SERVER_PORT, PXE_PORT), strict=True):
            server = ProxyDHCPServer(
                protocol_port, boot_script_url, fallback_address, self.outcomes, events
            )
            listener = _ProxyPort(reactor, server, number)
            listener.setServiceParent(self)
            self.ports.append(listener)


@implementer(IHealthCheck)
@frozen
class ProxyDHCPHealth:
    service: ProxyDHCPService
    name: str = "proxy_dhcp"

    def check(self) -> ComponentHealth:
        listening = all(port.listening for port in self.service.ports)
        details: dict[str, Any] = {
            "listening": listening,
            "packets": dict(sorted(self.service.outcomes.items())),
        }
        if not listening and self.service.running:
            return ComponentHealth("unavailable", details)
        return ComponentHealth("ok", details)
