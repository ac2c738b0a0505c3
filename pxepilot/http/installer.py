"""
The routes the Proxmox installer calls: its answer request and its post-installation
report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from attrs import frozen
from twisted.web.iweb import IRequest

from pxepilot.address import HTTPAddress
from pxepilot.answers.decision import Installed, Refuse, Serve, decide_answer
from pxepilot.answers.files import AnswersUnavailable
from pxepilot.answers.identity import Identity
from pxepilot.answers.inject import webhook_section
from pxepilot.answers.request import (
    MAX_REQUEST_BYTES,
    BadInstallerRequest,
    InstallerRequest,
    parse_installer_request,
)
from pxepilot.answers.service import AnswerService, Served
from pxepilot.config import Config
from pxepilot.events import AnswerRefused, AnswerServed, IEvents, InstallationReported
from pxepilot.hosts.ledger import HostLedger
from pxepilot.hosts.store import REPORT_LATER, REPORT_RETRY_SECONDS, StoreUnavailable
from pxepilot.hosts.tokens import HostTokens, webhook_verdict
from pxepilot.hosts.webhook import MAX_WEBHOOK_BYTES, BadWebhook, parse_webhook
from pxepilot.http.auth import token_matches
from pxepilot.http.forwarded import public_base
from pxepilot.http.responses import Refused, header, json_body, toml_body
from pxepilot.http.secure import SecureOnly
from pxepilot.logs import clip, logger, shorten
from pxepilot.macs import MacAddress

log = logger(__name__)

T = TypeVar("T")

_UNAUTHORISED_ANSWER = (
    "this pxe-pilot requires its answer token: build the ISO with "
    "pxe-pilot-builder --answer-token (installers 9.2 and later send it)"
)


@frozen
class InstallerRoutes:
    """
    C{POST /answer} and C{POST /webhook}.

    @ivar answers: Finds answer files.
    @ivar hosts: What is known of every host: install-once and which MAC a machine is
        known by.
    @ivar events: Told of every answer served or refused and every installation report.
    @ivar client_of: The client's address, as far as the request's proxies are believed.
    """

    answers: AnswerService
    hosts: HostLedger
    events: IEvents
    config: Config
    client_of: Callable[[IRequest], str]
    secure: SecureOnly
    address: HTTPAddress
    fingerprint: str | None = None
    host_tokens: HostTokens | None = None

    async def answer(self, request: IRequest) -> bytes:
        """
        The Proxmox installer's answer request: system information in, TOML out.
        """
        self.secure.check(request)
        client = self.client_of(request)
        token = self.config.answer_token
        if token is not None and not token_matches(request, token):
            log.warn(
                "answer request from {client} refused (401): no valid answer token",
                client=client,
                outcome="unauthorized",
            )
            self._refused_unknown(client, 401, "unauthorized", _UNAUTHORISED_ANSWER)
            raise Refused.because(401, _UNAUTHORISED_ANSWER)
        try:
            installer = _read_body(
                request, MAX_REQUEST_BYTES, parse_installer_request, "answer request", client
            )
        except Refused as refused:
            self._refused_unknown(client, refused.code, "bad-request", refused.body["error"])
            raise

        fields = _describe_installer(client, installer)
        installed = self._installed(installer)
        resolution = None
        if installed is None:
            try:
                resolution = await self.answers.resolve(
                    installer.macs, Identity.of(installer.uuid, installer.serial, installer.model)
                )
            except AnswersUnavailable as e:
                log.error(
                    "{request_summary}: 503, {reason}",
                    reason=str(e),
                    outcome="unavailable",
                    **fields,
                )
                self._refused_unknown(client, 503, "unavailable", str(e))
                raise Refused.because(503, f"pxe-pilot cannot read its answers: {e}") from None
        decision = decide_answer(
            installer,
            header(request, b"accept"),
            installed,
            resolution,
            self.config.answer_check,
        )
        if installed is not None:
            mac = installed.mac
        else:
            matched = resolution.mac if isinstance(resolution, Served) else None
            mac = self.hosts.identify(installer.macs, matched or installer.macs[0])
        identity = {
            "serial": installer.serial,
            "uuid": installer.uuid,
            "model": installer.model,
            "product": installer.product,
            "client": client,
        }
        if isinstance(resolution, Served):
            identity["rule"] = resolution.rule.value
        if isinstance(decision, Refuse):
            return await self._refuse(request, decision, mac, fields, identity)
        served = decision.served
        if self.config.inject_webhook:
            served, identity = self._with_webhook(request, decision, installer, mac, identity)
        self._log_served(decision, fields)
        await self._deliver(AnswerServed(client, mac, served.source, identity), mac)
        return toml_body(request, served)

    def _with_webhook(
        self,
        request: IRequest,
        serve: Serve,
        installer: InstallerRequest,
        mac: MacAddress,
        identity: dict[str, Any],
    ) -> tuple[Served, dict[str, Any]]:
        """
        The answer with a post-installation webhook to pxe-pilot added when it has
        none, and what the host's timeline keeps of that (never the token).
        """
        served = serve.served
        if served.parsed is None:
            return served, identity
        host = request.getRequestHostname().decode("latin-1")
        base = self.address.https_base_url(host) or public_base(
            request, self.config.public_url, self.config.trusted_proxies
        )
        token = self.host_tokens.for_host(mac) if self.host_tokens is not None else None
        # Behind a proxy that terminates TLS, the installer meets the proxy's certificate,
        # which pxe-pilot cannot pin: the installer then trusts its CAs.
        pinned = base.startswith("https://") and not self.address.tls_elsewhere()
        fingerprint = self.fingerprint if pinned else None
        injected = webhook_section(
            served.parsed, serve.versions, installer.product, f"{base}webhook", fingerprint, token
        )
        if injected is None:
            return served, identity
        # The installer of this version may not take a token (before 9.2): then none
        # was issued, and its report is accepted without one.
        issued = token is not None and b"auth-token" in injected[len(served.data) :]
        return (
            attrs.evolve(served, data=injected),
            {**identity, "webhook": "injected", "webhook_token": issued},
        )

    def _installed(self, installer: InstallerRequest) -> Installed | None:
        """
        The installed host among the request's MACs when install-once holds it back;
        else the installed host with its system UUID or serial number, so that a
        machine whose network card was replaced or reordered is still held back.
        """
        if not self.config.install_once:
            return None
        for mac in installer.macs:
            host = self.hosts.host(mac)
            if host is not None and host.installed:
                return Installed(host.mac, host.installed_at)
        host = self.hosts.installed_by_identity(installer.uuid, installer.serial)
        if host is not None:
            return Installed(host.mac, host.installed_at)
        return None

    def _refused_unknown(self, client: str, code: int, outcome: str, reason: str) -> None:
        # Refused before any host could be named: counted, on no timeline.
        self.events.publish(AnswerRefused(client, None, code, outcome, reason, reason))

    async def _refuse(
        self,
        request: IRequest,
        refusal: Refuse,
        mac: MacAddress,
        fields: dict[str, Any],
        identity: dict[str, Any],
    ) -> bytes:
        """
        Refuse an answer request: one log line, the event, and the body the installer
        prints.
        """
        getattr(log, refusal.level)(
            "{request_summary}: {code}, {reason}",
            code=refusal.code,
            reason=refusal.reason,
            source=refusal.source,
            outcome=refusal.outcome,
            **fields,
        )
        refused = AnswerRefused(
            identity["client"],
            mac,
            refusal.code,
            refusal.outcome,
            refusal.summary,
            refusal.reason,
            refusal.source,
            identity,
        )
        await self._deliver(refused, mac)
        if refusal.retry_after is not None:
            request.setHeader(b"retry-after", str(refusal.retry_after).encode())
        return json_body(request, refusal.body, refusal.code)

    def _log_served(self, serve: Serve, fields: dict[str, Any]) -> None:
        # One log line per answer: what was served, and what the check found.
        source = serve.served.source
        if serve.rejected:
            log.warn(
                "{request_summary}: served {source}, which installer {versions} would "
                "reject (--answer-check warn): {problems}",
                source=source,
                versions=str(serve.versions),
                problems="; ".join(f.describe(source) for f in serve.rejected),
                outcome="served",
                **fields,
            )
            return
        warnings = "; ".join(f.describe(source) for f in serve.findings)
        log.info(
            "{request_summary}: served {source}{warnings}",
            source=source,
            warnings=f" (for installer {serve.versions}: {warnings})" if warnings else "",
            outcome="served",
            **fields,
        )

    async def _deliver(self, event: AnswerServed | AnswerRefused, mac: MacAddress) -> None:
        # The response waits until the event is durable: a machine told what to install
        # must still be known as installing after a crash or restart (its timeline, the
        # install timeout), and the wait stays short when a rack asks at once, because
        # the ledger makes everything recorded while the disk was busy durable in one
        # commit. The answer goes out even when its event cannot be saved (the
        # installation matters more than its timeline); the failure is logged, counted
        # and turns the hosts health degraded (pxepilot.hosts.health).
        try:
            await self.events.deliver(event)
        except Exception:
            log.failure("host {mac}: the event could not be saved", mac=str(mac))

    async def webhook(self, request: IRequest) -> bytes:
        """
        The installer's post-installation report: the host is installed.
        """
        self.secure.check(request)
        client = self.client_of(request)
        report = _read_body(
            request, MAX_WEBHOOK_BYTES, parse_webhook, "installation report", client
        )
        refusal = webhook_verdict(
            report.token,
            report.macs,
            self.config.webhook_token,
            self.host_tokens,
            self._token_issued,
        )
        if refusal is not None:
            log.warn(
                "installation report from {client} refused (401): {reason}",
                client=client,
                reason=refusal,
                macs=[str(mac) for mac in report.macs],
            )
            raise Refused.because(401, f"installation report refused: {refusal}")
        mac = self.hosts.identify(report.macs, report.macs[0])
        reported = InstallationReported(
            client, mac, report.installation.as_json(), report.serial, report.uuid
        )
        try:
            await self.events.deliver(reported)
        except StoreUnavailable:
            # Not stored, so not acknowledged: the installer sends it again.
            raise Refused(
                503,
                {"error": REPORT_LATER},
                [(b"retry-after", str(REPORT_RETRY_SECONDS).encode())],
            ) from None
        except Exception:
            log.failure("host {mac}: the installation report could not be saved", mac=str(mac))
            raise Refused.because(
                500, "pxe-pilot could not save the report; see its log"
            ) from None
        host = self.hosts.host(mac)
        assert host is not None, "a recorded host is known"
        return json_body(request, {"mac": str(mac), "state": host.state.value})

    def _token_issued(self, mac: MacAddress) -> bool:
        host = self.hosts.host(mac)
        return host is not None and host.webhook_token


def _read_body(
    request: IRequest, limit: int, parse: Callable[[bytes], T], what: str, client: str
) -> T:
    """
    The request's body, read as C{parse} reads it.

    @raise Refused: 413 for a body over C{limit} bytes, 400 for one C{parse} refuses
        (both logged, naming C{what} was refused).
    """
    assert request.content is not None
    body = request.content.read(limit + 1)
    try:
        return parse(body)
    except (BadInstallerRequest, BadWebhook) as e:
        code = 413 if len(body) > limit else 400
        log.warn(
            "{what} from {client} refused ({code}): {reason}",
            what=what,
            client=client,
            code=code,
            reason=str(e),
            outcome="bad-request",
        )
        raise Refused.because(code, str(e)) from None


def _describe_installer(client: str, installer: InstallerRequest) -> dict[str, Any]:
    """
    The fields every answer log event carries. The text ones are bounded whatever the
    request lists (a few MACs, then how many more); C{macs} holds them all, as many as
    the request may carry.
    """
    macs = [str(mac) for mac in installer.macs]
    product = clip(installer.product or "unknown product", 40)
    release = clip(installer.release_label or "unknown release", 40)
    skipped = f"; skipped {shorten(installer.skipped)}" if installer.skipped else ""
    mac_text = shorten(macs)
    return {
        "client": client,
        "product": installer.product,
        "release": installer.release_label,
        "macs": macs,
        "mac_text": mac_text,
        "serial": installer.serial,
        "uuid": installer.uuid,
        "model": installer.model,
        "request_summary": (
            f"answer request from {client} ({product} {release}; MACs {mac_text}{skipped})"
        ),
    }
