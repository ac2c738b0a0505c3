"""
pxe-pilot as a set of parts: the HTTP resource and the services behind it.

This is the embedding API. C{twistd pxe-pilot} uses it; so can another Twisted
application::

    from pxepilot import Config, PxePilot

    pilot = PxePilot(Config(answers_dir="/srv/answers", assets_dir="/srv/assets"))
    root.putChild(b"pxe", pilot.resource)          # under the host's own Site
    pilot.service.setServiceParent(application)    # TFTP and other background work

It is also the one place where the parts are wired together: each part is built with
what it needs, the event observers subscribe, and nothing is changed after.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attrs import Factory, define, field
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IReactorFDSet,
    IReactorFromThreads,
    IReactorSSL,
    IReactorTime,
)
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from pxepilot.address import HTTPAddress
from pxepilot.answers.files import DirectoryAnswerFiles
from pxepilot.answers.health import AnswersHealth
from pxepilot.answers.service import AnswerService
from pxepilot.boot.health import AssetsHealth
from pxepilot.boot.secure import (
    SHIM,
    GrubMenus,
    MenuSettings,
    SecureBootChoice,
    SecureBootFiles,
    SecureBootPieces,
)
from pxepilot.boot.tftp import BootFiles, tftp_base_url
from pxepilot.config import LISTEN_BACKLOG, Config
from pxepilot.dhcp.proxy import ShimOffer
from pxepilot.dhcp.service import ProxyDHCPHealth, ProxyDHCPService
from pxepilot.events import EventBus
from pxepilot.health import Disabled, IHealthCheck
from pxepilot.hosts.health import HostsHealth
from pxepilot.hosts.ledger import HostLedger, WorkerThread
from pxepilot.hosts.model import EventKind
from pxepilot.hosts.neighbours import neighbour_table_lookup
from pxepilot.hosts.recorder import LedgerRecorder
from pxepilot.hosts.shared import (
    ReportsNeedStore,
    SharedHosts,
    StoreHealth,
    open_store,
    postgres_watch,
)
from pxepilot.hosts.store import IHostStore
from pxepilot.hosts.tokens import KEY_FILE as WEBHOOK_SECRET_FILE
from pxepilot.hosts.tokens import HostTokens, load_or_create_secret
from pxepilot.http.app import PxePilotRoutes
from pxepilot.http.boot import BootRoutes
from pxepilot.http.forwarded import client_address
from pxepilot.http.installer import InstallerRoutes
from pxepilot.http.ipxe_files import HTTP_BOOT_FILE, IPXE_PATH
from pxepilot.http.listener import HTTPListener
from pxepilot.http.operator import OperatorRoutes
from pxepilot.http.secure import SecureOnly, TLSHealth
from pxepilot.http.site import PxePilotSite
from pxepilot.logs import logger
from pxepilot.macs import MacAddress
from pxepilot.metrics import Metrics
from pxepilot.tftp.files import ITFTPFiles, TFTPRoot
from pxepilot.tftp.negotiation import Limits
from pxepilot.tftp.server import TFTPServer, reactor_port_opener
from pxepilot.tftp.service import TFTPHealth, TFTPService
from pxepilot.tftp.sockets import transfer_poller
from pxepilot.tftp.transfer import RetransmitPolicy
from pxepilot.tls import (
    ServerCertificate,
    certificate_names,
    generated_paths,
    load_configured,
    load_or_create,
)

log = logger(__name__)

STATE_DATABASE = "pxe-pilot.sqlite3"

RunBlocking = Callable[[Callable[[], Any]], Deferred[Any]]


def _global_reactor() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


def _state_thread(pilot: PxePilot) -> RunBlocking:
    # Saving a host event waits for the disk: one worker thread of the reactor does it.
    return WorkerThread(IReactorFromThreads(pilot.reactor), "pxe-pilot-state")


def _address_of(pilot: PxePilot) -> HTTPAddress:
    config = pilot.config
    return HTTPAddress(config.public_url, config.port, config.interface, config.https_port)


def _give_to_owner(directory: Path, paths: Sequence[Path]) -> None:
    """
    Made as root (twistd binds its ports as root, then becomes another user), the
    state's files would belong to root: give them to the state directory's owner, the
    user pxe-pilot runs as, so that it can read them after a restart.
    """
    if os.geteuid() != 0:
        return
    owner = directory.stat()
    for path in paths:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if path.stat().st_uid != owner.st_uid:
                os.chown(path, owner.st_uid, owner.st_gid)


@define
class PxePilot:
    """
    One pxe-pilot instance built from a L{Config}.

    @ivar config: Its configuration.
    @ivar reactor: The reactor it runs on; the global one when not given. Its clock
        is all the HTTP side needs; TFTP and proxyDHCP also need it to provide
        C{IReactorFDSet}, and the default L{run_blocking} C{IReactorFromThreads}.
    @ivar http_address: Where machines reach its HTTP side, for what names that before
        HTTP does (TFTP's chain script, proxyDHCP); L{make_service}'s listener keeps it
        up to date.
    @ivar run_blocking: Runs the state database's blocking calls: a worker thread of
        the reactor by default; L{pxepilot.hosts.ledger.run_here} runs them in place
        (tests, tools).
    @ivar listeners: Whether machines reach it through the listeners L{make_service}
        adds, on the configured ports: the answer URLs built into the assets are then
        checked against those ports. An application serving L{resource} from a site of
        its own leaves it false.
    @ivar resource: The HTTP resource tree; mount it at the root of a site or under any
        prefix of another one.
    @ivar service: The services that run beside HTTP (the host ledger, named
        C{hosts}, and the TFTP server, named C{tftp}, when boot is enabled); start it
        with, or attach it to, the application's service tree. Stopping it waits until
        every host event is saved.
    @ivar certificate: What HTTPS presents: the configured certificate, or the one made
        once in the state directory; L{None} with HTTPS off.
    @ivar events: Where every part publishes what happens; the ledger and the metrics
        subscribe.
    @ivar ledger: Every host's state and timeline.
    @ivar metrics: What C{/metrics} shows.

    @raise pxepilot.hosts.store.StoreError: when the state database cannot be opened.
    """

    config: Config
    reactor: IReactorTime = field(factory=_global_reactor)
    http_address: HTTPAddress = field(default=Factory(_address_of, takes_self=True))
    run_blocking: RunBlocking = field(default=Factory(_state_thread, takes_self=True))
    listeners: bool = field(default=False, kw_only=True)
    answers: AnswerService = field(init=False)
    resource: IResource = field(init=False)
    service: MultiService = field(init=False)
    certificate: ServerCertificate | None = field(init=False)
    events: EventBus = field(init=False)
    ledger: HostLedger = field(init=False)
    metrics: Metrics = field(init=False)
    # What asset downloads let go first: the TFTP transfers' waiting blocks.
    _urgent: Callable[[], object] = field(init=False, default=lambda: None)

    def __attrs_post_init__(self) -> None:
        config = self.config
        self.certificate = self._certificate()
        self.answers = AnswerService(DirectoryAnswerFiles(config.answers_dir), self.reactor)
        store = open_store(config.state_dir / STATE_DATABASE, config.database_url)
        self.ledger = HostLedger(
            store,
            self.reactor,
            run_blocking=self.run_blocking,
            install_timeout=config.install_timeout,
            host_expiry=config.host_expiry,
            neighbours=neighbour_table_lookup(),
        )
        self.metrics = Metrics()
        self.metrics.watch_hosts(
            self.ledger.summary,
            lambda: self.ledger.counts[EventKind.INSTALLED],
            lambda: self.ledger.counts[EventKind.FAILED],
        )
        self.metrics.watch_host_records(
            self.ledger.forgotten,
            lambda: self.ledger.not_recorded,
            lambda: self.ledger.not_saved,
        )
        self.metrics.watch_host_backlog(
            lambda: len(self.ledger.backlog), lambda: self.ledger.dropped
        )
        self.events = EventBus()
        self.events.subscribe(self.metrics)
        self.events.subscribe(LedgerRecorder(self.ledger))

        self.service = MultiService()
        self.service.setName("pxe-pilot")
        self.ledger.setName("hosts")
        self.ledger.setServiceParent(self.service)
        shared = self._shared(store)
        checks: list[IHealthCheck] = [
            AnswersHealth(self.answers),
            AssetsHealth(
                config.assets_dir,
                None if self.http_address.tls_elsewhere() else self.fingerprint,
                address=self.http_address if self.listeners else None,
                proxied=bool(config.trusted_proxies),
            ),
            HostsHealth(self.ledger),
            self._tftp() if config.boot_enabled else Disabled("tftp"),
            self._proxy_dhcp() if config.proxy_dhcp else Disabled("proxy_dhcp"),
            TLSHealth(self.certificate, self.http_address.https_port, time.time),
            *shared,
        ]
        routes = ReportsNeedStore(self._routes(checks).app.resource(), self.ledger)
        self.resource = self.metrics.count_requests(routes)

    def _shared(self, store: IHostStore) -> list[IHealthCheck]:
        """
        With a store other instances share, the service that keeps the ledger up to
        date with their changes (named C{hosts-shared}), and the store's health check.
        """
        if self.config.database_url is None:
            return []
        from pxepilot.hosts.postgres import PostgresHostStore

        assert isinstance(store, PostgresHostStore)
        shared = SharedHosts(
            self.ledger, store.hosts, store.load, postgres_watch(store), self.reactor, store.origin
        )
        shared.setName("hosts-shared")
        shared.setServiceParent(self.service)
        return [StoreHealth(self.ledger)]

    @property
    def fingerprint(self) -> str | None:
        """
        The HTTPS certificate's SHA-256 fingerprint, as installers pin it.
        """
        return self.certificate.fingerprint if self.certificate is not None else None

    def _certificate(self) -> ServerCertificate | None:
        """
        @raise TLSSetupError: when the configured or the generated certificate cannot be
            used; the message is one line naming the file.
        """
        config = self.config
        if not config.https_enabled:
            return None
        if config.tls_cert is not None and config.tls_key is not None:
            certificate = load_configured(config.tls_cert, config.tls_key)
        else:
            names = certificate_names(config.interface, config.public_url)
            certificate = load_or_create(config.state_dir, names, datetime.now(UTC))
            cert, key = generated_paths(config.state_dir)
            _give_to_owner(config.state_dir, [cert.parent, cert, key])
        log.info(
            "HTTPS certificate ({origin}) SHA-256 {fingerprint}",
            origin=certificate.origin,
            fingerprint=certificate.fingerprint,
        )
        return certificate

    def _host_tokens(self) -> HostTokens | None:
        if not self.config.inject_webhook:
            return None
        secret = load_or_create_secret(self.config.state_dir)
        _give_to_owner(self.config.state_dir, [self.config.state_dir / WEBHOOK_SECRET_FILE])
        return HostTokens(secret)

    def _routes(self, checks: list[IHealthCheck]) -> PxePilotRoutes:
        config = self.config

        def client_of(request: IRequest) -> str:
            return client_address(request, config.trusted_proxies)

        secure = SecureOnly(config.require_tls, self.http_address, config.trusted_proxies)
        boot = BootRoutes(self.answers, self.ledger, self.events, config, self.reactor, client_of)
        boot.turns.urgent = self._urgent
        self.metrics.watch_downloads(lambda: boot.turns.active)
        installer = InstallerRoutes(
            self.answers,
            self.ledger,
            self.events,
            config,
            client_of,
            secure,
            self.http_address,
            self.fingerprint,
            self._host_tokens(),
        )
        operator = OperatorRoutes(
            self.answers,
            self.ledger,
            self.metrics,
            tuple(checks),
            config,
            client_of,
            secure,
            self.fingerprint,
        )
        return PxePilotRoutes(installer=installer, boot=boot, operator=operator)

    def _tftp(self) -> IHealthCheck:
        config = self.config
        network = IReactorFDSet(self.reactor)
        poller = transfer_poller(network)
        if poller is not None:
            # Asset downloads and HTTP requests let waiting TFTP blocks go first.
            self._urgent = poller.doRead
        server = TFTPServer(
            files=self._secure_boot_files(
                BootFiles(TFTPRoot(config.tftp_root), tftp_base_url(self.http_address))
            ),
            clock=self.reactor,
            open_port=reactor_port_opener(network, poller),
            interface=config.interface or "",
            limits=Limits(
                max_blksize=config.tftp_max_blksize, max_windowsize=config.tftp_max_windowsize
            ),
            policy=RetransmitPolicy(max_duration=config.tftp_max_transfer_time),
            max_transfers=config.tftp_max_transfers,
            max_per_client=config.tftp_max_per_client,
            events=self.events,
        )
        self.metrics.watch_tftp(
            server.outcomes, lambda: server.bytes_sent, lambda: len(server.transfers)
        )
        service = TFTPService(network, server, config.tftp_port, config.interface or "")
        service.setName("tftp")
        service.setServiceParent(self.service)
        return TFTPHealth(service, config.tftp_root)

    def _secure_boot_files(self, files: ITFTPFiles) -> ITFTPFiles:
        """
        The Secure Boot chain's TFTP files (shim, GRUB, GRUB's menus, the assets'
        kernels and initrds) in front of C{files}.
        """
        config = self.config

        def installed_at(mac: MacAddress) -> float | None:
            host = self.ledger.host(mac)
            return host.installed_at if host is not None else None

        settings = MenuSettings(
            config.menu_default,
            config.menu_timeout,
            config.kernel_args,
            config.answer_check,
            config.install_once,
            config.asset_url,
        )
        menus = GrubMenus(
            self.answers,
            config.assets_dir,
            settings,
            self.reactor,
            tftp_base_url(self.http_address),
            installed_at,
            self.events,
        )
        return SecureBootFiles(files, self._secure_boot_pieces(), menus)

    def _secure_boot_pieces(self) -> SecureBootPieces:
        return SecureBootPieces(self.config.secure_boot_dir, self.config.assets_dir)

    def _proxy_dhcp(self) -> IHealthCheck:
        address = self.http_address
        proxy = ProxyDHCPService(
            IReactorFDSet(self.reactor),
            lambda local: f"{address.base_url(local)}boot.ipxe",
            address.own_ipv4,
            self.events,
            http_boot_url=lambda local: f"{address.base_url(local)}{HTTP_BOOT_FILE}",
            shim=ShimOffer(
                SecureBootChoice(
                    self.config.secure_boot,
                    self.answers,
                    self._secure_boot_pieces(),
                    reason_of=self._signed_chain_reason,
                ).wanted,
                lambda local: f"{address.base_url(local)}{IPXE_PATH}{SHIM}",
            ),
        )
        proxy.setName("proxy-dhcp")
        proxy.setServiceParent(self.service)
        self.metrics.watch_proxy_dhcp(proxy.outcomes)
        return ProxyDHCPHealth(proxy)

    def _signed_chain_reason(self, mac: MacAddress) -> str | None:
        host = self.ledger.host(mac)
        return host.signed_chain_reason() if host is not None else None

    def site(self) -> PxePilotSite:
        """
        A site serving L{resource} at its root, as C{twistd pxe-pilot} runs it, its
        deadlines on L{reactor} and its trusted proxies exempt from the per-address
        connection limit.
        """
        return PxePilotSite(
            self.resource,
            trusted_proxies=self.config.trusted_proxies,
            urgent=self._urgent,
            reactor=self.reactor,
        )


def make_service(config: Config, reactor: IReactorTime | None = None) -> IService:
    """
    Everything C{twistd pxe-pilot} runs: the HTTP listener (named C{http}), the HTTPS
    listener (named C{https}) unless it is off, and the services of L{PxePilot} (named
    C{pxe-pilot}).

    @raise pxepilot.tls.TLSSetupError: when the HTTPS certificate cannot be used.
    """
    if reactor is None:
        pilot = PxePilot(config, listeners=True)
    else:
        pilot = PxePilot(config, reactor, listeners=True)
    top = MultiService()
    pilot.service.setServiceParent(top)
    site = pilot.site()
    pilot.metrics.watch_http_connections(site.gate.counts, lambda: site.gate.open)
    http = HTTPListener(
        serverFromString(pilot.reactor, config.http_endpoint()),
        site,
        pilot.http_address.listening,
        gate=site.gate,
    )
    http.setName("http")
    http.setServiceParent(top)
    if pilot.certificate is not None:
        https = HTTPListener(
            SSL4ServerEndpoint(
                IReactorSSL(pilot.reactor),
                config.https_port,
                pilot.certificate.context_factory(),
                backlog=LISTEN_BACKLOG,
                interface=config.interface or "",
            ),
            site,
            pilot.http_address.https_listening,
            kind="HTTPS",
            gate=site.gate,
        )
        https.setName("https")
        https.setServiceParent(top)
    return top
