"""
The HTTP routes: the installer's answer endpoint and the inspection API.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from attrs import define, field
from klein import Klein
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from pxepilot._version import __version__
from pxepilot.answers.files import AnswersUnavailable
from pxepilot.answers.request import (
    MAX_REQUEST_BYTES,
    BadInstallerRequest,
    InstallerRequest,
    parse_installer_request,
)
from pxepilot.answers.service import AnswerService, Invalid, NoAnswer, Served, choose_source
from pxepilot.boot.catalogue import scan
from pxepilot.boot.ipxe import (
    MIN_MEMORY_MIB,
    Machine,
    boot_script,
    menu_script,
    smbios_memory_mib,
)
from pxepilot.boot.policy import BootSettings, choose, host_settings, inspect_sidecars
from pxepilot.config import Config, IPNetwork
from pxepilot.health import IHealthCheck, overall_status
from pxepilot.http.files import AssetFiles, Turns
from pxepilot.http.forwarded import client_address, public_base
from pxepilot.logs import logger
from pxepilot.macs import MacAddress, MacAddressError, describe

log = logger(__name__)

TOML_TYPE = b"application/toml; charset=utf-8"
JSON_TYPE = b"application/json"
SOURCE_HEADER = b"X-PXE-Pilot-Source"


# Twisted knows no reason phrase for these.
_REASONS = {422: b"Unprocessable Content", 413: b"Content Too Large"}


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
    @ivar trusted_proxies: Peers whose C{X-Forwarded-For} is believed.
    """

    app = Klein()

    answers: AnswerService
    config: Config = field(factory=Config)
    health_checks: Sequence[IHealthCheck] = field(factory=tuple)
    turns: Turns = field(factory=Turns)

    @property
    def trusted_proxies(self) -> Sequence[IPNetwork]:
        return self.config.trusted_proxies

    @app.route("/answer", methods=["POST"])
    async def answer(self, request: IRequest) -> bytes:
        """
        The Proxmox installer's answer request: system information in, TOML out.
        """
        client = client_address(request, self.trusted_proxies)
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
            return json_body(request, {"error": str(e)}, code)

        fields = _describe_installer(client, installer)
        try:
            resolution = await self.answers.resolve(installer.macs)
        except AnswersUnavailable as e:
            log.error(
                "{request_summary}: 503, {reason}", reason=str(e), outcome="unavailable", **fields
            )
            return json_body(request, {"error": f"pxe-pilot cannot read its answers: {e}"}, 503)

        if isinstance(resolution, Served):
            log.info(
                "{request_summary}: served {source}",
                source=resolution.source,
                outcome="served",
                **fields,
            )
            return toml_body(request, resolution)
        if isinstance(resolution, Invalid):
            reason = resolution.describe()
            log.error(
                "{request_summary}: 422, {reason}",
                source=resolution.source,
                reason=reason,
                outcome="invalid-answer",
                **fields,
            )
            return json_body(request, _invalid_json(resolution), 422)
        assert isinstance(resolution, NoAnswer)
        reason = "no host file for these MAC addresses and no default.toml"
        log.warn("{request_summary}: 404, {reason}", reason=reason, outcome="no-answer", **fields)
        return json_body(request, {"error": f"no answer for {fields['mac_text']}: {reason}"}, 404)

    @app.route("/hosts", methods=["GET"])
    def hosts(self, request: IRequest) -> bytes:
        """
        Every answer file and boot settings file, whether it is valid, and which MAC it
        serves.
        """
        try:
            report = self.answers.inspect()
            report["boot_settings"] = inspect_sidecars(self.answers.files, self.answers.listing())
        except AnswersUnavailable as e:
            return json_body(request, {"error": str(e)}, 503)
        return json_body(request, report)

    @app.route("/boot.ipxe", methods=["GET"])
    def boot_ipxe(self, request: IRequest) -> bytes:
        """
        The boot script: it fetches the menu, saying which machine asks.
        """
        base = public_base(request, self.config.public_url, self.trusted_proxies)
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
        choice = choose(
            catalogue.assets,
            has_answer,
            host,
            BootSettings(settings.menu_default),
            settings.menu_timeout,
        )
        asset_url = settings.asset_url or f"{base}assets/"
        menu_url = f"{base}menu.ipxe?{_echo_query(request)}"
        client = client_address(request, self.trusted_proxies)
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
        return AssetFiles(self.config.assets_dir, self.turns)

    @app.route("/hosts/<string:mac_text>", methods=["GET"])
    async def host(self, request: IRequest, mac_text: str) -> bytes:
        """
        The answer file a machine with this MAC address would receive.
        """
        try:
            mac = MacAddress.parse(mac_text)
        except MacAddressError:
            return json_body(request, {"error": f"{describe(mac_text)} is not a MAC address"}, 400)
        try:
            resolution = await self.answers.resolve([mac])
        except AnswersUnavailable as e:
            return json_body(request, {"error": str(e)}, 503)
        if isinstance(resolution, Served):
            return toml_body(request, resolution)
        if isinstance(resolution, Invalid):
            return json_body(request, _invalid_json(resolution), 422)
        return json_body(request, {"error": f"no host file for {mac} and no default.toml"}, 404)

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


def _invalid_json(invalid: Invalid) -> dict[str, Any]:
    return {
        "error": invalid.describe(),
        "file": invalid.source,
        "line": invalid.problem.line,
        "column": invalid.problem.column,
    }
