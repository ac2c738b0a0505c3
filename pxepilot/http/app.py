"""
The HTTP routes: the installer's answer endpoint and the inspection API.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from attrs import define, field, frozen
from klein import Klein
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from pxepilot._version import __version__
from pxepilot.answers.files import AnswersUnavailable
from pxepilot.answers.lint import (
    NEWEST,
    InstallerVersion,
    VersionRange,
    errors,
    installer_versions,
    lint_range,
)
from pxepilot.answers.request import (
    MAX_REQUEST_BYTES,
    BadInstallerRequest,
    InstallerRequest,
    parse_installer_request,
)
from pxepilot.answers.service import AnswerService, Invalid, NoAnswer, Served, choose_source
from pxepilot.boot.catalogue import scan
from pxepilot.boot.ipxe import (
    LOCAL,
    MIN_MEMORY_MIB,
    Machine,
    boot_script,
    menu_script,
    smbios_memory_mib,
)
from pxepilot.boot.policy import BootSettings, choose, host_settings, inspect_sidecars
from pxepilot.config import Config, IPNetwork
from pxepilot.health import IHealthCheck, overall_status
from pxepilot.hosts.ledger import HostLedger
from pxepilot.hosts.model import EventKind, Host
from pxepilot.hosts.page import status_page
from pxepilot.hosts.watchers import download_watcher
from pxepilot.hosts.webhook import MAX_WEBHOOK_BYTES, BadWebhook, parse_webhook
from pxepilot.http.auth import token_matches
from pxepilot.http.files import AssetFiles, DownloadWatcher, Turns
from pxepilot.http.forwarded import client_address, public_base
from pxepilot.logs import logger
from pxepilot.macs import MacAddress, MacAddressError, describe
from pxepilot.metrics import CONTENT_TYPE as METRICS_TYPE
from pxepilot.metrics import Metrics

log = logger(__name__)

TOML_TYPE = b"application/toml; charset=utf-8"
JSON_TYPE = b"application/json"
SOURCE_HEADER = b"X-PXE-Pilot-Source"


# Twisted knows no reason phrase for these.
_REASONS = {422: b"Unprocessable Content", 413: b"Content Too Large"}

REARM_HINT = "to install it again: pxe-pilot reinstall {mac} (or POST /hosts/{mac}/reinstall)"


@frozen
class Refusal:
    """
    Why an answer request is refused: its status, log outcome, timeline summary,
    reason, and the file concerned.
    """

    code: int
    outcome: str
    summary: str
    reason: str
    source: str | None = None


# The answers metric's label for each refusal's log outcome.
_ANSWER_METRIC = {
    "installed": "installed",
    "rejected-answer": "rejected",
    "invalid-answer": "invalid",
    "no-answer": "no-answer",
}


def json_body(request: IRequest, data: Any, code: int = 200) -> bytes:
    """
    Answer C{request} with C{data} as JSON.
    """
    request.setResponseCode(code, _REASONS.get(code))
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(data, indent=2).encode("utf-8") + b"\n"


def toml_body(request: IRequest, served: Served) -> bytes:
    """
    Answer C{request} with an answer file, byte for byte.
    """
    request.setHeader(b"content-type", TOML_TYPE)
    # Answer files hold root passwords: no cache may keep them.
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(SOURCE_HEADER, served.source.encode("utf-8"))
    return served.data


@define
class PxePilotRoutes:
    """
    pxe-pilot's HTTP routes.

    @ivar answers: Finds answer files.
    @ivar health_checks: The components C{/health} reports on.
    @ivar turns: Shares the reactor among the asset downloads.
    @ivar ledger: Every host's state; L{None} to keep none (no install-once either).
    @ivar metrics: What C{/metrics} shows.
    @ivar trusted_proxies: Peers whose C{X-Forwarded-For} is believed.
    """

    app = Klein()

    answers: AnswerService
    config: Config = field(factory=Config)
    health_checks: Sequence[IHealthCheck] = field(factory=tuple)
    turns: Turns = field(factory=Turns)
    ledger: HostLedger | None = None
    metrics: Metrics = field(factory=Metrics)
    _downloads: DownloadWatcher = field(init=False)

    def __attrs_post_init__(self) -> None:
        clock = self.answers.clock
        self._downloads = download_watcher(
            self.ledger,
            self.metrics,
            clock,
            lambda request: client_address(request, self.trusted_proxies),
        )

    def _note(self, mac: MacAddress | None, kind: EventKind, summary: str, **detail: Any) -> None:
        if self.ledger is not None and mac is not None:
            self.ledger.note(mac, kind, summary, **detail)

    async def _record(
        self, mac: MacAddress, kind: EventKind, summary: str, **detail: Any
    ) -> Host | None:
        """
        Record an event and wait until it is saved; L{None} when it could not be (the
        failure is logged).
        """
        if self.ledger is None:
            return None
        try:
            return await self.ledger.record(mac, kind, summary, **detail)
        except Exception:
            log.failure("host {mac}: the event could not be saved", mac=str(mac))
            return None

    def _refuse_admin(self, request: IRequest) -> bytes | None:
        """
        A 401 answer when an admin token is set and C{request} does not present it.
        """
        token = self.config.admin_token
        if token is None or token_matches(request, token):
            return None
        # Basic as well as Bearer, so that a browser asks its user for the token.
        request.setHeader(b"www-authenticate", b'Bearer realm="pxe-pilot"')
        cast(Request, request).responseHeaders.addRawHeader(
            b"www-authenticate", b'Basic realm="pxe-pilot", charset="UTF-8"'
        )
        return json_body(request, {"error": "this needs pxe-pilot's admin token"}, 401)

    @property
    def trusted_proxies(self) -> Sequence[IPNetwork]:
        return self.config.trusted_proxies

    @app.route("/answer", methods=["POST"])
    async def answer(self, request: IRequest) -> bytes:
        """
        The Proxmox installer's answer request: system information in, TOML out.
        """
        client = client_address(request, self.trusted_proxies)
        token = self.config.answer_token
        if token is not None and not token_matches(request, token):
            log.warn(
                "answer request from {client} refused (401): no valid answer token",
                client=client,
                outcome="unauthorized",
            )
            self.metrics.answers.labels("unauthorized").inc()
            return json_body(
                request,
                {
                    "error": "this pxe-pilot requires its answer token: build the ISO with "
                    "pxe-pilot-builder --answer-token (installers 9.2 and later send it)"
                },
                401,
            )
        assert request.content is not None
        body = request.content.read(MAX_REQUEST_BYTES + 1)
        try:
            installer = parse_installer_request(body)
        except BadInstallerRequest as e:
            code = 413 if len(body) > MAX_REQUEST_BYTES else 400
            log.warn(
                "answer request from {client} refused ({code}): {reason}",
                client=client,
                code=code,
                reason=str(e),
                outcome="bad-request",
            )
            self.metrics.answers.labels("bad-request").inc()
            return json_body(request, {"error": str(e)}, code)

        fields = _describe_installer(client, installer)
        identity = {
            "serial": installer.serial,
            "uuid": installer.uuid,
            "product": installer.product,
            "client": client,
        }
        installed = self._installed(installer.macs)
        if installed is not None:
            when = _utc(installed.installed_at)
            reason = f"{installed.mac} was installed on {when}; " + REARM_HINT.format(
                mac=installed.mac
            )
            return await self._refuse_answer(
                request,
                Refusal(409, "installed", "answer refused: already installed", reason),
                installed.mac,
                {"error": reason},
                fields,
                identity,
                level="warn",
            )

        try:
            resolution = await self.answers.resolve(installer.macs)
        except AnswersUnavailable as e:
            log.error(
                "{request_summary}: 503, {reason}", reason=str(e), outcome="unavailable", **fields
            )
            self.metrics.answers.labels("unavailable").inc()
            return json_body(request, {"error": f"pxe-pilot cannot read its answers: {e}"}, 503)

        fallback = installer.macs[0]
        if isinstance(resolution, Served) and resolution.mac is not None:
            fallback = resolution.mac
        mac = self.ledger.identify(installer.macs, fallback) if self.ledger else fallback
        if isinstance(resolution, Served):
            versions = installer_versions(installer, _header(request, b"accept"))
            findings = lint_range(resolution.data, versions, installer.product)
            rejected = errors(findings)
            if rejected:
                problems = "; ".join(f.describe(resolution.source) for f in rejected)
                reason = f"installer {versions} would reject {resolution.source}: {problems}"
                if self.config.answer_check == "refuse":
                    return await self._refuse_answer(
                        request,
                        Refusal(
                            422,
                            "rejected-answer",
                            f"answer {resolution.source} would be rejected by installer "
                            f"{versions}",
                            reason,
                            resolution.source,
                        ),
                        mac,
                        {
                            "error": reason,
                            "file": resolution.source,
                            "installer_version": str(versions),
                            "findings": [f.as_json() for f in findings],
                        },
                        fields,
                        identity,
                    )
            # One log line per answer: what was served, and what the check found.
            if rejected:
                log.warn(
                    "{request_summary}: served {source}, which installer {versions} would "
                    "reject (--answer-check warn): {problems}",
                    source=resolution.source,
                    versions=str(versions),
                    problems=problems,
                    outcome="served",
                    **fields,
                )
            else:
                warnings = "; ".join(f.describe(resolution.source) for f in findings)
                log.info(
                    "{request_summary}: served {source}{warnings}",
                    source=resolution.source,
                    warnings=f" (for installer {versions}: {warnings})" if warnings else "",
                    outcome="served",
                    **fields,
                )
            self.metrics.answers.labels("served").inc()
            await self._record(
                mac,
                EventKind.ANSWER_SERVED,
                f"answer {resolution.source} served",
                file=resolution.source,
                **identity,
            )
            return toml_body(request, resolution)
        if isinstance(resolution, Invalid):
            refusal = Refusal(
                422,
                "invalid-answer",
                f"answer {resolution.source} is invalid",
                resolution.describe(),
                resolution.source,
            )
            return await self._refuse_answer(
                request, refusal, mac, _invalid_json(resolution), fields, identity
            )
        assert isinstance(resolution, NoAnswer)
        reason = "no host file for these MAC addresses and no default.toml"
        return await self._refuse_answer(
            request,
            Refusal(404, "no-answer", "no answer file", reason),
            mac,
            {"error": f"no answer for {fields['mac_text']}: {reason}"},
            fields,
            identity,
            level="warn",
        )

    async def _refuse_answer(
        self,
        request: IRequest,
        refusal: Refusal,
        mac: MacAddress,
        body: dict[str, Any],
        fields: dict[str, Any],
        identity: dict[str, Any],
        level: str = "error",
    ) -> bytes:
        """
        Refuse an answer request: one log line, the metric, the host's timeline, and
        the body the installer prints.
        """
        getattr(log, level)(
            "{request_summary}: {code}, {reason}",
            code=refusal.code,
            reason=refusal.reason,
            source=refusal.source,
            outcome=refusal.outcome,
            **fields,
        )
        self.metrics.answers.labels(_ANSWER_METRIC[refusal.outcome]).inc()
        detail = {"file": refusal.source} if refusal.source else {}
        await self._record(
            mac,
            EventKind.ANSWER_REFUSED,
            refusal.summary,
            code=refusal.code,
            reason=refusal.reason,
            **detail,
            **identity,
        )
        return json_body(request, body, refusal.code)

    def _installed(self, macs: Sequence[MacAddress]) -> Host | None:
        """
        The installed host among C{macs} when install-once holds it back.
        """
        if self.ledger is None or not self.config.install_once:
            return None
        for mac in macs:
            host = self.ledger.host(mac)
            if host is not None and host.installed:
                return host
        return None

    @app.route("/webhook", methods=["POST"])
    async def webhook(self, request: IRequest) -> bytes:
        """
        The installer's post-installation report: the host is installed.
        """
        client = client_address(request, self.trusted_proxies)
        assert request.content is not None
        body = request.content.read(MAX_WEBHOOK_BYTES + 1)
        try:
            report = parse_webhook(body)
        except BadWebhook as e:
            code = 413 if len(body) > MAX_WEBHOOK_BYTES else 400
            log.warn(
                "installation report from {client} refused ({code}): {reason}",
                client=client,
                code=code,
                reason=str(e),
            )
            return json_body(request, {"error": str(e)}, code)
        if self.ledger is None:
            return json_body(request, {"error": "this pxe-pilot keeps no host states"}, 404)
        mac = self.ledger.identify(report.macs, report.macs[0])
        installation = report.installation
        what = " ".join(filter(None, [installation.product, installation.version])) or "Proxmox"
        where = installation.fqdn or "unknown FQDN"
        try:
            host = await self.ledger.record(
                mac,
                EventKind.INSTALLED,
                f"installed {what} as {where}",
                installation=installation.as_json(),
                serial=report.serial,
                uuid=report.uuid,
                product=installation.product,
                client=client,
            )
        except Exception:
            log.failure("host {mac}: the installation report could not be saved", mac=str(mac))
            return json_body(
                request, {"error": "pxe-pilot could not save the report; see its log"}, 500
            )
        return json_body(request, {"mac": str(mac), "state": host.state.value})

    @app.route("/hosts", methods=["GET"])
    def hosts(self, request: IRequest) -> bytes:
        """
        Every known host with its state, every answer file and boot settings file,
        whether it is valid, and which MAC it serves.
        """
        refused = self._refuse_admin(request)
        if refused is not None:
            return refused
        versions = _versions_asked(request)
        if isinstance(versions, bytes):
            return versions
        try:
            report = self.answers.inspect(versions)
            report["boot_settings"] = inspect_sidecars(self.answers.files, self.answers.listing())
        except AnswersUnavailable as e:
            return json_body(request, {"error": str(e)}, 503)
        if self.ledger is not None:
            known = sorted(self.ledger.hosts.values(), key=lambda host: str(host.mac))
            report["known_hosts"] = [host.as_json() for host in known]
            report["states"] = dict(self.ledger.summary())
        return json_body(request, report)

    @app.route("/boot.ipxe", methods=["GET"])
    def boot_ipxe(self, request: IRequest) -> bytes:
        """
        The boot script: it fetches the menu, saying which machine asks.
        """
        base = public_base(request, self.config.public_url, self.trusted_proxies)
        if self.ledger is not None:
            client = client_address(request, self.trusted_proxies)
            self._note(
                self.ledger.mac_at(client),
                EventKind.SCRIPT,
                "boot.ipxe fetched",
                script="boot.ipxe",
                client=client,
            )
        return script_body(request, boot_script(f"{base}menu.ipxe"))

    @app.route("/menu.ipxe", methods=["GET"])
    def menu_ipxe(self, request: IRequest) -> bytes:
        """
        The menu, made from the assets catalogue for the machine that asks.
        """
        base = public_base(request, self.config.public_url, self.trusted_proxies)
        machine = _machine(request)
        catalogue = scan(self.config.assets_dir)
        try:
            listing = self.answers.listing()
        except AnswersUnavailable:
            listing = None
        host = None
        has_answer = False
        if listing is not None and machine.mac is not None:
            has_answer = choose_source(listing, [machine.mac]) is not None
            host, problem = host_settings(self.answers.files, listing, machine.mac)
            if problem:
                log.warn("boot settings ignored: {problem}", problem=problem)
        elif listing is not None:
            has_answer = listing.default_present
        settings = self.config
        known = self.ledger.host(machine.mac) if self.ledger and machine.mac else None
        installed = None
        if settings.install_once and known is not None and known.installed_at is not None:
            installed = f"installed on {_utc(known.installed_at)}"
        choice = choose(
            catalogue.assets,
            has_answer,
            host,
            BootSettings(settings.menu_default),
            settings.menu_timeout,
            installed=installed,
        )
        asset_url = settings.asset_url or f"{base}assets/"
        menu_url = f"{base}menu.ipxe?{_echo_query(request)}"
        client = client_address(request, self.trusted_proxies)
        if self.ledger is not None and machine.mac is not None:
            self.ledger.saw_address(client, machine.mac)
            local = choice.default == LOCAL
            self._note(
                machine.mac,
                EventKind.LOCAL_BOOT if local else EventKind.SCRIPT,
                f"menu: {choice.reason}" if local else f"menu: {choice.default} ({choice.reason})",
                script="menu.ipxe",
                default=choice.default,
                reason=choice.reason,
                platform=machine.platform,
                memory_mib=machine.memory_mib,
                client=client,
            )
        log.info(
            "menu for {mac} at {client} ({platform}, {memory} MiB): {reason}",
            mac=str(machine.mac) if machine.mac else "unknown MAC",
            client=client,
            platform=machine.platform or "unknown firmware",
            memory=machine.memory_mib or "?",
            reason=choice.reason,
            default=choice.default,
        )
        if machine.memory_mib is not None and machine.memory_mib < MIN_MEMORY_MIB:
            log.warn(
                "{mac} has {memory} MiB of memory; the installer needs {needed} MiB",
                mac=str(machine.mac) if machine.mac else "unknown MAC",
                memory=machine.memory_mib,
                needed=MIN_MEMORY_MIB,
            )
        return script_body(
            request,
            menu_script(
                catalogue.assets, asset_url, menu_url, machine, choice, settings.kernel_args
            ),
        )

    @app.route("/assets/", branch=True, methods=["GET", "HEAD"])
    def assets(self, request: IRequest) -> AssetFiles:
        """
        The assets directory, as a static file server would serve it.
        """
        return AssetFiles(self.config.assets_dir, self.turns, self._downloads)

    @app.route("/hosts/<string:mac_text>", methods=["GET"])
    async def host(self, request: IRequest, mac_text: str) -> bytes:
        """
        The answer file a machine with this MAC address would receive, with what the
        installer (C{?installer-version=}, the newest known by default) would find wrong
        in it: as headers on the TOML, or as JSON for a client that accepts JSON.
        """
        refused = self._refuse_admin(request)
        if refused is not None:
            return refused
        try:
            mac = MacAddress.parse(mac_text)
        except MacAddressError:
            return json_body(request, {"error": f"{describe(mac_text)} is not a MAC address"}, 400)
        versions = _versions_asked(request)
        if isinstance(versions, bytes):
            return versions
        try:
            resolution = await self.answers.resolve([mac])
        except AnswersUnavailable as e:
            return json_body(request, {"error": str(e)}, 503)
        if isinstance(resolution, Served):
            findings = lint_range(resolution.data, versions)
            found = errors(findings)
            if "application/json" in (_header(request, b"accept") or ""):
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
            return json_body(request, _invalid_json(resolution), 422)
        return json_body(request, {"error": f"no host file for {mac} and no default.toml"}, 404)

    @app.route("/hosts/<string:mac_text>/status", methods=["GET"])
    async def host_status(self, request: IRequest, mac_text: str) -> bytes:
        """
        A host's state and timeline, newest event last.
        """
        refused = self._refuse_admin(request)
        if refused is not None:
            return refused
        known = self._known_host(request, mac_text)
        if isinstance(known, bytes):
            return known
        assert self.ledger is not None
        limit = _query(request, b"limit")
        count = int(limit) if limit and limit.isdigit() and 0 < int(limit) <= 500 else 100
        timeline = await self.ledger.timeline(known.mac, count)
        report = known.as_json()
        report["timeline"] = [event.as_json() for event in timeline]
        return json_body(request, report)

    @app.route("/hosts/<string:mac_text>/reinstall", methods=["POST"])
    async def reinstall(self, request: IRequest, mac_text: str) -> bytes:
        """
        Re-arm a host: its next network boot installs again.
        """
        refused = self._refuse_admin(request)
        if refused is not None:
            return refused
        known = self._known_host(request, mac_text)
        if isinstance(known, bytes):
            return known
        assert self.ledger is not None
        client = client_address(request, self.trusted_proxies)
        try:
            host = await self.ledger.rearm(known.mac)
        except Exception:
            log.failure("host {mac}: re-arming could not be saved", mac=str(known.mac))
            return json_body(request, {"error": "pxe-pilot could not save it; see its log"}, 500)
        log.info(
            "host {mac} re-armed for installation by {client}", mac=str(host.mac), client=client
        )
        return json_body(request, host.as_json())

    def _known_host(self, request: IRequest, mac_text: str) -> Host | bytes:
        try:
            mac = MacAddress.parse(mac_text)
        except MacAddressError:
            return json_body(request, {"error": f"{describe(mac_text)} is not a MAC address"}, 400)
        host = self.ledger.host(mac) if self.ledger is not None else None
        if host is None:
            return json_body(request, {"error": f"pxe-pilot has never seen {mac}"}, 404)
        return host

    @app.route("/metrics", methods=["GET"])
    def metrics_page(self, request: IRequest) -> bytes:
        """
        Counters and gauges in Prometheus' text format.
        """
        refused = self._refuse_admin(request)
        if refused is not None:
            return refused
        request.setHeader(b"content-type", METRICS_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return self.metrics.exposition()

    @app.route("/", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        """
        The status page, for a person.
        """
        refused = self._refuse_admin(request)
        if refused is not None:
            return refused
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        hosts = list(self.ledger.hosts.values()) if self.ledger is not None else []
        counts = self.ledger.summary() if self.ledger is not None else {}
        now = self.ledger.now() if self.ledger is not None else 0.0
        return status_page(hosts, counts, now, __version__)

    @app.route("/health", methods=["GET"])
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

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        return json_body(request, {"error": "not found"}, 404)

    @app.handle_errors(RequestRedirect)
    def redirect(self, request: IRequest, failure: Failure) -> bytes:
        # The router's own redirects (/assets to /assets/, doubled slashes merged),
        # which the catch-all below would turn into errors. The location is given as a
        # path: the router builds its absolute URL from the client's Host header.
        moved = failure.value
        assert isinstance(moved, RequestRedirect)
        parts = urlsplit(moved.new_url)
        location = parts.path + (f"?{parts.query}" if parts.query else "")
        request.setHeader(b"location", location.encode("utf-8"))
        return json_body(request, {"location": location}, 308)

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        request.setHeader(b"allow", ", ".join(sorted(allowed)).encode("ascii"))
        return json_body(request, {"error": "method not allowed"}, 405)

    @app.handle_errors(Exception)
    def internal_error(self, request: IRequest, failure: Failure) -> bytes:
        log.failure(
            "unhandled error in {method} {uri}", failure, method=request.method, uri=request.uri
        )
        return json_body(request, {"error": "internal error; see pxe-pilot's log"}, 500)


def script_body(request: IRequest, script: str) -> bytes:
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return script.encode("utf-8")


def _query(request: IRequest, name: bytes, limit: int = 64) -> str | None:
    args: dict[bytes, list[bytes]] = getattr(request, "args", {}) or {}
    values = args.get(name)
    if not values:
        return None
    return values[0].decode("latin-1")[:limit]


def _machine(request: IRequest) -> Machine:
    mac = None
    text = _query(request, b"mac")
    if text:
        with contextlib.suppress(MacAddressError):
            mac = MacAddress.parse(text)
    platform = _query(request, b"platform")
    memory = _query(request, b"memsize")
    if memory and re.fullmatch("[0-9]{1,8}", memory):
        memory_mib: int | None = int(memory)
    else:
        memory_mib = smbios_memory_mib(_query(request, b"memdevs", 4096) or "")
    return Machine(
        mac=mac,
        platform=platform if platform in ("efi", "pcbios") else None,
        memory_mib=memory_mib,
    )


def _echo_query(request: IRequest) -> str:
    """
    The menu's own query, rebuilt from what was understood, to come back to after a
    failure.
    """
    machine = _machine(request)
    parts = []
    if machine.mac:
        parts.append(f"mac={machine.mac}")
    if machine.platform:
        parts.append(f"platform={machine.platform}")
    if machine.memory_mib:
        parts.append(f"memsize={machine.memory_mib}")
    return "&".join(parts)


def _describe_installer(client: str, installer: InstallerRequest) -> dict[str, Any]:
    """
    The fields every answer log event carries.
    """
    macs = [str(mac) for mac in installer.macs]
    product = installer.product or "unknown product"
    release = installer.release_label or "unknown release"
    skipped = f"; skipped {', '.join(installer.skipped)}" if installer.skipped else ""
    return {
        "client": client,
        "product": installer.product,
        "release": installer.release_label,
        "macs": macs,
        "mac_text": ", ".join(macs),
        "serial": installer.serial,
        "uuid": installer.uuid,
        "request_summary": (
            f"answer request from {client} ({product} {release}; MACs {', '.join(macs)}{skipped})"
        ),
    }


def _versions_asked(request: IRequest) -> VersionRange | bytes:
    """
    The installer version a request asks about (C{?installer-version=9.1}); the newest
    known when it names none.
    """
    text = _query(request, b"installer-version")
    if not text:
        return VersionRange.exactly(InstallerVersion(NEWEST.major, NEWEST.minor))
    try:
        return VersionRange.exactly(InstallerVersion.parse(text))
    except ValueError as e:
        return json_body(request, {"error": str(e)}, 400)


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def _utc(at: float | None) -> str:
    if at is None:
        return "an unknown date"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def _invalid_json(invalid: Invalid) -> dict[str, Any]:
    return {
        "error": invalid.describe(),
        "file": invalid.source,
        "line": invalid.problem.line,
        "column": invalid.problem.column,
    }
