"""
pxe-pilot as a set of parts: the HTTP resource and the services behind it.

This is the embedding API. C{twistd pxe-pilot} uses it; so can another Twisted
application::

    from pxepilot import Config, PxePilot

    pilot = PxePilot(Config(answers_dir="/srv/answers", assets_dir="/srv/assets"))
    root.putChild(b"pxe", pilot.resource)          # under the host's own Site
    pilot.service.setServiceParent(application)    # TFTP and other background work
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from attrs import define, field
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Site

from pxepilot.answers.files import DirectoryAnswerFiles
from pxepilot.answers.service import AnswerService
from pxepilot.boot.tftp import BootFiles, tftp_base_url
from pxepilot.config import Config
from pxepilot.dhcp.service import ProxyDHCPHealth, ProxyDHCPService
from pxepilot.health import AnswersHealth, AssetsHealth, Disabled, HostsHealth, IHealthCheck
from pxepilot.hosts.ledger import HostLedger, WorkerThread, run_here
from pxepilot.hosts.neighbours import arp_table_lookup
from pxepilot.hosts.store import SQLiteHostStore
from pxepilot.hosts.watchers import tftp_watcher
from pxepilot.http.app import PxePilotRoutes
from pxepilot.http.listener import HTTPListener
from pxepilot.http.site import PxePilotSite
from pxepilot.metrics import Metrics
from pxepilot.tftp.files import TFTPRoot
from pxepilot.tftp.negotiation import Limits
from pxepilot.tftp.server import TFTPServer, reactor_port_opener
from pxepilot.tftp.service import TFTPHealth, TFTPService
from pxepilot.tftp.transfer import RetransmitPolicy

STATE_DATABASE = "pxe-pilot.sqlite3"


def _global_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@define
class PxePilot:
    """
    One pxe-pilot instance built from a L{Config}.

    @ivar config: Its configuration.
    @ivar reactor: The reactor it runs on; the global one when not given.
    @ivar resource: The HTTP resource tree; mount it at the root of a site or under any
        prefix of another one.
    @ivar service: The services that run beside HTTP (the host ledger, named
        C{hosts}, and the TFTP server, named C{tftp}, when boot is enabled); start it
        with, or attach it to, the application's service tree. Stopping it waits until
        every host event is saved.
    @ivar ledger: Every host's state and timeline.
    @ivar metrics: What C{/metrics} shows.

    @raise pxepilot.hosts.store.StoreError: when the state database cannot be opened.
    """

    config: Config
    reactor: Any = field(factory=_global_reactor)
    # The HTTP port machines reach pxe-pilot on, for scripts served over TFTP;
    # make_service points it at the listener's real port.
    http_port: Callable[[], int] | None = field(default=None)
    answers: AnswerService = field(init=False)
    resource: IResource = field(init=False)
    service: MultiService = field(init=False)
    ledger: HostLedger = field(init=False)
    metrics: Metrics = field(init=False)

    def __attrs_post_init__(self) -> None:
        clock: IReactorTime = self.reactor
        config = self.config
        self.answers = AnswerService(DirectoryAnswerFiles(config.answers_dir), clock)
        self.metrics = Metrics()
        database = config.state_dir / STATE_DATABASE
        self.ledger = HostLedger(
            SQLiteHostStore(database),
            clock,
            run_blocking=self._blocking_runner(),
            install_timeout=config.install_timeout,
            neighbours=arp_table_lookup(),
        )
        self.metrics.watch_ledger(self.ledger)
        checks: list[IHealthCheck] = [
            AnswersHealth(self.answers),
            AssetsHealth(config.assets_dir),
            HostsHealth(self.ledger),
        ]
        self.service = MultiService()
        self.service.setName("pxe-pilot")
        self.ledger.setName("hosts")
        self.ledger.setServiceParent(self.service)
        if config.boot_enabled:
            tftp = self._tftp_service()
            tftp.setServiceParent(self.service)
            checks.append(TFTPHealth(tftp, config.tftp_root))
        else:
            checks.append(Disabled("tftp"))
        if config.proxy_dhcp:
            proxy = ProxyDHCPService(self.reactor, self._boot_script_url, self._own_address)
            proxy.setName("proxy-dhcp")
            proxy.setServiceParent(self.service)
            checks.append(ProxyDHCPHealth(proxy))
            self.metrics.watch_proxy_dhcp(proxy.outcomes)
        else:
            checks.append(Disabled("proxy_dhcp"))
        routes = PxePilotRoutes(
            answers=self.answers,
            config=config,
            health_checks=tuple(checks),
            ledger=self.ledger,
            metrics=self.metrics,
        )
        self.metrics.watch_downloads(lambda: routes.turns.active)
        self.resource = self.metrics.count_requests(routes.app.resource())

    def _blocking_runner(self) -> Callable[[Callable[[], Any]], Deferred[Any]]:
        # Saving a host event waits for the disk: a worker thread of the reactor does it.
        # A reactor without threads (a test's Clock) has it done in place.
        if IReactorThreads.providedBy(self.reactor):
            return WorkerThread(self.reactor, "pxe-pilot-state")
        return run_here

    def _tftp_service(self) -> TFTPService:
        config = self.config
        files = BootFiles(
            TFTPRoot(config.tftp_root),
            tftp_base_url(config.public_url, self._http_port),
        )
        server = TFTPServer(
            files=files,
            clock=self.reactor,
            open_port=reactor_port_opener(self.reactor),
            interface=config.interface or "",
            limits=Limits(
                max_blksize=config.tftp_max_blksize, max_windowsize=config.tftp_max_windowsize
            ),
            policy=RetransmitPolicy(max_duration=config.tftp_max_transfer_time),
            max_transfers=config.tftp_max_transfers,
            max_per_client=config.tftp_max_per_client,
            on_finished=tftp_watcher(self.ledger),
        )
        self.metrics.watch_tftp(lambda: server)
        service = TFTPService(self.reactor, server, config.tftp_port, config.interface or "")
        service.setName("tftp")
        return service

    def _boot_script_url(self, local: str) -> str:
        base = self.config.public_url or f"http://{local}:{self._http_port()}/"
        return f"{base}boot.ipxe"

    def _own_address(self) -> str | None:
        """
        pxe-pilot's address where the system cannot say which one a request came to.
        """
        if self.config.interface and ":" not in self.config.interface:
            return self.config.interface
        host = urlsplit(self.config.public_url or "").hostname
        try:
            return str(ipaddress.IPv4Address(host or ""))
        except ValueError:
            return None

    def _http_port(self) -> int:
        return self.http_port() if self.http_port is not None else self.config.port

    def site(self) -> Site:
        """
        A site serving L{resource} at its root, as C{twistd pxe-pilot} runs it.
        """
        return PxePilotSite(self.resource)


def make_service(config: Config, reactor: Any = None) -> IService:
    """
    Everything C{twistd pxe-pilot} runs: the HTTP listener (named C{http}) and the
    services of L{PxePilot} (named C{pxe-pilot}).
    """
    pilot = PxePilot(config) if reactor is None else PxePilot(config, reactor)
    top = MultiService()
    pilot.service.setServiceParent(top)
    http = HTTPListener(pilot.reactor, config.http_endpoint(), pilot.site())
    http.setName("http")
    pilot.http_port = lambda: http.address().port if http.listening else config.port
    http.setServiceParent(top)
    return top
