"""
The routes for the operator: hosts and answer files, re-arming, the status page,
metrics and health.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.web.iweb import IRequest

from pxepilot._version import __version__
from pxepilot.answers.decision import invalid_json
from pxepilot.answers.files import AnswersUnavailable
from pxepilot.answers.lint import errors, lint_range
from pxepilot.answers.service import AnswerService, Invalid, Served
from pxepilot.answers.versions import NEWEST, InstallerVersion, VersionRange
from pxepilot.boot.policy import inspect_sidecars
from pxepilot.config import Config
from pxepilot.health import IHealthCheck, overall_status
from pxepilot.hosts.ledger import HostLedger
from pxepilot.hosts.model import Host
from pxepilot.hosts.page import status_page
from pxepilot.http.auth import token_matches
from pxepilot.http.responses import Refused, header, json_body, query, toml_body
from pxepilot.http.secure import SecureOnly
from pxepilot.logs import logger
from pxepilot.macs import MacAddress, MacAddressError, describe
from pxepilot.metrics import CONTENT_TYPE as METRICS_TYPE
from pxepilot.metrics import Metrics

log = logger(__name__)

# Basic as well as Bearer, so that a browser asks its user for the token.
_ASK_FOR_TOKEN = (
    (b"www-authenticate", b'Bearer realm="pxe-pilot"'),
    (b"www-authenticate", b'Basic realm="pxe-pilot", charset="UTF-8"'),
)


@frozen
class OperatorRoutes:
    """
    C{/hosts...}, C{/metrics}, C{/} and C{/health}; all but C{/health} need the admin
    token when one is set.

    @ivar answers: The answer files, for what a MAC would get and C{/hosts}.
    @ivar hosts: Every host's state and timeline.
    @ivar metrics: What C{/metrics} shows.
    @ivar health_checks: The components C{/health} reports on.
    @ivar client_of: The client's address, as far as the request's proxies are believed.
    """

    answers: AnswerService
    hosts: HostLedger
    metrics: Metrics
    health_checks: Sequence[IHealthCheck]
    config: Config
    client_of: Callable[[IRequest], str]
    secure: SecureOnly
    fingerprint: str | None = None

    def _admin_only(self, request: IRequest) -> None:
        """
        @raise Refused: 403 over plain HTTP when TLS is required; 401 when an admin token
            is set and C{request} does not present it.
        """
        self.secure.check(request)
        token = self.config.admin_token
        if token is not None and not token_matches(request, token):
            raise Refused(401, {"error": "this needs pxe-pilot's admin token"}, _ASK_FOR_TOKEN)

    def hosts_report(self, request: IRequest) -> bytes:
        """
        Every known host with its state, every answer file and boot settings file,
        whether it is valid, and which MAC it serves.
        """
        self._admin_only(request)
        versions = _versions_asked(request)
        try:
            report = self.answers.inspect(versions)
            report["boot_settings"] = inspect_sidecars(self.answers.files, self.answers.listing())
        except AnswersUnavailable as e:
            raise Refused.because(503, str(e)) from None
        known = sorted(self.hosts.hosts.values(), key=lambda host: str(host.mac))
        report["known_hosts"] = [host.as_json() for host in known]
        report["states"] = dict(self.hosts.summary())
        return json_body(request, report)

    async def answer_for(self, request: IRequest, mac_text: str) -> bytes:
        """
        The answer file a machine with this MAC address would receive, with what the
        installer (C{?installer-version=}, the newest known by default) would find wrong
        in it: as headers on the TOML, or as JSON for a client that accepts JSON.
        """
        self._admin_only(request)
        mac = _mac(mac_text)
        versions = _versions_asked(request)
        try:
            resolution = await self.answers.resolve([mac])
        except AnswersUnavailable as e:
            raise Refused.because(503, str(e)) from None
        if isinstance(resolution, Served):
            findings = lint_range(resolution.answer, versions)
            found = errors(findings)
            if "application/json" in (header(request, b"accept") or ""):
                return json_body(
                    request,
                    {
                        "mac": str(mac),
                        "file": resolution.source,
                        "installer_version": str(versions),
                        "accepted": not found,
                        "findings": [f.as_json() for f in findings],
                        "answer": resolution.data.decode("utf-8"),
                    },
                )
            request.setHeader(b"x-pxe-pilot-installer-version", str(versions).encode())
            request.setHeader(b"x-pxe-pilot-errors", str(len(found)).encode())
            request.setHeader(b"x-pxe-pilot-warnings", str(len(findings) - len(found)).encode())
            return toml_body(request, resolution)
        if isinstance(resolution, Invalid):
            raise Refused(422, invalid_json(resolution))
        raise Refused.because(404, f"no host file for {mac} and no default.toml")

    async def host_status(self, request: IRequest, mac_text: str) -> bytes:
        """
        A host's state and timeline, newest event last.
        """
        self._admin_only(request)
        known = self._known_host(mac_text)
        limit = query(request, b"limit")
        count = int(limit) if limit and limit.isdigit() and 0 < int(limit) <= 500 else 100
        timeline = await self.hosts.timeline(known.mac, count)
        report = known.as_json()
        report["timeline"] = [event.as_json() for event in timeline]
        return json_body(request, report)

    async def reinstall(self, request: IRequest, mac_text: str) -> bytes:
        """
        Re-arm a host: its next network boot installs again.
        """
        self._admin_only(request)
        known = self._known_host(mac_text)
        client = self.client_of(request)
        try:
            host = await self.hosts.rearm(known.mac)
        except Exception:
            log.failure("host {mac}: re-arming could not be saved", mac=str(known.mac))
            raise Refused.because(500, "pxe-pilot could not save it; see its log") from None
        log.info(
            "host {mac} re-armed for installation by {client}", mac=str(host.mac), client=client
        )
        return json_body(request, host.as_json())

    def _known_host(self, mac_text: str) -> Host:
        mac = _mac(mac_text)
        host = self.hosts.host(mac)
        if host is None:
            raise Refused.because(404, f"pxe-pilot has never seen {mac}")
        return host

    def metrics_page(self, request: IRequest) -> bytes:
        """
        Counters and gauges in Prometheus' text format.
        """
        self._admin_only(request)
        request.setHeader(b"content-type", METRICS_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return self.metrics.exposition()

    def status(self, request: IRequest) -> bytes:
        """
        The status page, for a person.
        """
        self._admin_only(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        hosts = list(self.hosts.hosts.values())
        return status_page(
            hosts, self.hosts.summary(), self.hosts.now(), __version__, self.fingerprint
        )

    def health(self, request: IRequest) -> bytes:
        """
        Whether pxe-pilot can do its work: 200 when it can, 503 when a component it
        depends on cannot.
        """
        checks = {check.name: check.check() for check in self.health_checks}
        status = overall_status(checks.values())
        report: dict[str, Any] = {"status": status, "version": __version__}
        for name, component in checks.items():
            report[name] = {"status": component.status, **component.details}
        return json_body(request, report, 503 if status == "unavailable" else 200)


def _mac(text: str) -> MacAddress:
    try:
        return MacAddress.parse(text)
    except MacAddressError:
        raise Refused.because(400, f"{describe(text)} is not a MAC address") from None


def _versions_asked(request: IRequest) -> VersionRange:
    """
    The installer version a request asks about (C{?installer-version=9.1}); the newest
    known when it names none.

    @raise Refused: 400 for a version that is not one.
    """
    text = query(request, b"installer-version")
    if not text:
        return VersionRange.exactly(InstallerVersion(NEWEST.major, NEWEST.minor))
    try:
        return VersionRange.exactly(InstallerVersion.parse(text))
    except ValueError as e:
        raise Refused.because(400, str(e)) from None
