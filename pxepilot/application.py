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

from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Site

from pxepilot.answers.files import DirectoryAnswerFiles
from pxepilot.answers.service import AnswerService
from pxepilot.boot.tftp import BootFiles, tftp_base_url
from pxepilot.config import Config
from pxepilot.health import AnswersHealth, AssetsHealth, Disabled, IHealthCheck
from pxepilot.http.app import PxePilotRoutes
from pxepilot.http.listener import HTTPListener
from pxepilot.http.site import PxePilotSite
from pxepilot.tftp.files import TFTPRoot
from pxepilot.tftp.negotiation import Limits
from pxepilot.tftp.server import TFTPServer, reactor_port_opener
from pxepilot.tftp.service import TFTPHealth, TFTPService
from pxepilot.tftp.transfer import RetransmitPolicy


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
    @ivar service: The services that run beside HTTP (the TFTP server, named C{tftp},
        when boot is enabled); start it with, or attach it to, the application's
        service tree.
    """

    config: Config
    reactor: Any = field(factory=_global_reactor)
    # The HTTP port machines reach pxe-pilot on, for scripts served over TFTP;
    # make_service points it at the listener's real port.
    http_port: Callable[[], int] | None = field(default=None)
    answers: AnswerService = field(init=False)
    resource: IResource = field(init=False)
    service: MultiService = field(init=False)

    def __attrs_post_init__(self) -> None:
        clock: IReactorTime = self.reactor
        self.answers = AnswerService(DirectoryAnswerFiles(self.config.answers_dir), clock)
        checks: list[IHealthCheck] = [
            AnswersHealth(self.answers),
            AssetsHealth(self.config.assets_dir),
        ]
        self.service = MultiService()
        self.service.setName("pxe-pilot")
        if self.config.boot_enabled:
            tftp = self._tftp_service()
            tftp.setServiceParent(self.service)
            checks.append(TFTPHealth(tftp, self.config.tftp_root))
        else:
            checks.append(Disabled("tftp"))
        routes = PxePilotRoutes(
            answers=self.answers, config=self.config, health_checks=tuple(checks)
        )
        self.resource = routes.app.resource()

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
        )
        service = TFTPService(self.reactor, server, config.tftp_port, config.interface or "")
        service.setName("tftp")
        return service

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
