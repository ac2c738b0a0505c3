"""
The proxyDHCP service: ports 67 and 4011 on every IPv4 address (DHCP broadcasts reach
only sockets bound to the wildcard address, or to the broadcast address itself), bound
before twistd drops privileges. When a DHCP server on the same host holds port 67 and
shares it, proxyDHCP answers the broadcasts beside it (see L{pxepilot.dhcp.sharing}).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFDSet
from zope.interface import implementer

from pxepilot.dhcp.proxy import DHCP_SERVER_PORT, PXE_PORT, ProxyDHCPServer, ShimOffer
from pxepilot.dhcp.sharing import PortHolder, listen_beside_dhcp_server, name_the_holder
from pxepilot.events import IEvents
from pxepilot.health import ComponentHealth, IHealthCheck
from pxepilot.listening import ListenFailed, ListeningService
from pxepilot.logs import logger
from pxepilot.udp import AddressedPort

log = logger(__name__)


class _ProxyPort(ListeningService):
    """
    One proxyDHCP port. The DHCP server port is shared with a DHCP server on the same
    host when it holds the port and allows it; a port held otherwise stops start-up
    with one line naming the holder.

    @ivar shared_with: The DHCP server whose port this one shares, once listening.
    """

    kind = "proxyDHCP"
    shared_with: PortHolder | None = None

    def __init__(self, reactor: IReactorFDSet, server: ProxyDHCPServer, port: int) -> None:
        self._reactor = reactor
        self.server = server
        self.port_number = port

    @property
    def _serves_dhcp_port(self) -> bool:
        return self.server.port_number == DHCP_SERVER_PORT

    def _listen(self) -> AddressedPort:
        if not self._serves_dhcp_port:
            port = AddressedPort(self.port_number, self.server, "", reactor=self._reactor)
            port.startListening()
            return port
        bound = listen_beside_dhcp_server(self._reactor, self.server, self.port_number)
        self.shared_with = bound.shared_with
        if bound.shared_with is not None:
            log.info(
                "proxyDHCP shares UDP port {port} with {holder} and answers broadcasts only; "
                "requests a relay sends to this host reach {holder} alone (for relayed "
                "networks, run pxe-pilot's proxyDHCP on another host)",
                port=self.port_number,
                holder=str(bound.shared_with),
            )
        return bound.port

    def _explained(self, failure: ListenFailed) -> ListenFailed:
        return name_the_holder(failure, shareable=self._serves_dhcp_port)

    def stopService(self) -> Deferred[None]:
        self.shared_with = None
        return super().stopService()


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
        http_boot_url: Callable[[str], str] | None = None,
        shim: ShimOffer | None = None,
    ) -> None:
        super().__init__()
        self.outcomes: Counter[str] = Counter()
        self.ports: list[_ProxyPort] = []
        for number, protocol_port in zip(ports, (DHCP_SERVER_PORT, PXE_PORT), strict=True):
            server = ProxyDHCPServer(
                protocol_port,
                boot_script_url,
                fallback_address,
                self.outcomes,
                events,
                http_boot_url=http_boot_url,
                shim=shim,
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
        shared = [port.shared_with for port in self.service.ports if port.shared_with]
        if shared:
            details["port_67"] = f"shared with {shared[0]}, broadcasts only"
        if not listening and self.service.running:
            return ComponentHealth("unavailable", details)
        return ComponentHealth("ok", details)
