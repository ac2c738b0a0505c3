"""
The routes for the operator: hosts and answer files, re-arming and forgetting, the
status page and each host's page, metrics and health; and the check every route that
changes something passes, against requests a browser is made to send from another site
(L{forged_because}).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Collection, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from attrs import field, frozen
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from pxepilot._version import __version__
from pxepilot.answers.decision import invalid_json
from pxepilot.answers.files import AnswersUnavailable
from pxepilot.answers.identity import model_key, serial_key, uuid_key
from pxepilot.answers.lint import errors, lint_range
from pxepilot.answers.request import (
    MAX_REQUEST_BYTES,
    BadInstallerRequest,
    parse_installer_request,
)
from pxepilot.answers.service import AnswerService, Changing, Invalid, Served
from pxepilot.answers.versions import NEWEST, InstallerVersion, VersionRange
from pxepilot.boot.policy import inspect_sidecars
from pxepilot.config import Config
from pxepilot.health import ComponentHealth, IHealthCheck, overall_status
from pxepilot.hosts.host_page import (
    ACTIONS,
    FORGET,
    PAGE_EVENTS,
    REARM,
    AnswerCheck,
    confirmation_page,
    host_page,
    installer_of,
)
from pxepilot.hosts.layout import Overview, content_security_policy, error_page
from pxepilot.hosts.ledger import HostLedger
from pxepilot.hosts.model import Event, Host
from pxepilot.hosts.page import status_page
from pxepilot.http.auth import presented_token, token_matches
from pxepilot.http.forms import FormTokens, form_token, see_other
from pxepilot.http.forwarded import public_base
from pxepilot.http.responses import Refused, header, json_body, query, toml_body
from pxepilot.http.secure import SecureOnly
from pxepilot.logs import logger
from pxepilot.macs import MacAddress, MacAddressError, describe
from pxepilot.metrics import CONTENT_TYPE as METRICS_TYPE
from pxepilot.metrics import Metrics
from pxepilot.simulate import evaluate

log = logger(__name__)

# Basic as well as Bearer, so that a browser asks its user for the token.
_ASK_FOR_TOKEN = (
    (b"www-authenticate", b'Bearer realm="pxe-pilot"'),
    (b"www-authenticate", b'Basic realm="pxe-pilot", charset="UTF-8"'),
)


# What the operator's own clients send with a change (the pxe-pilot command, and the
# status page's script): a header no page of another site can add without the CORS
# preflight pxe-pilot never grants.
INTENT_HEADER = b"x-pxe-pilot-request"

# The content types a page of any site may send without a preflight; a form's among them.
_SIMPLE_TYPES = frozenset(
    {"", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)

# C{GET /hosts}: hosts per page, unless C{?limit=} asks for another number up to the most.
HOSTS_PAGE = 500
MOST_HOSTS_PAGE = 1000


def origin_of(url: str) -> str | None:
    """
    The origin of C{url} as a browser writes it in C{Origin}: C{scheme://host}, with
    C{:port} only when it is not the scheme's default, in lower case; L{None} for what
    is not an http or https URL.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == {"http": 80, "https": 443}[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def forged_because(
    *,
    fetch_site: str | None,
    origin: str | None,
    own_origins: Collection[str],
    basic: bool,
    content_type: str | None,
    intent: bool,
    form_token: bool = False,
) -> str | None:
    """
    Why a request that would change something may have been sent by a browser on
    behalf of another site (cross-site request forgery), or L{None} when nothing says
    so. A browser attaches the Basic credentials it was given for pxe-pilot to every
    request to pxe-pilot, whichever page makes it; re-arming a host that way wipes its
    disk at its next network boot. Each rule below refuses what a browser sends for
    another site; none refuses a program such as the C{pxe-pilot} command or curl.

    1. C{Sec-Fetch-Site} is C{cross-site} or C{same-site}. Current browsers send it
       with every request and no page can change it. C{same-site} is refused too: a
       page of another host of the same site (a wiki beside pxe-pilot) is as foreign
       as any. C{same-origin} and C{none} (an address typed or bookmarked) pass, and a
       request without it (a program, an older browser) is left to the next rules.

    2. C{Origin} is there and is none of C{own_origins}: pxe-pilot's origin as the
       request addressed it, and that of C{--public-url}. Browsers send it with every
       POST and every cross-origin request; C{null} (a sandboxed frame, a redirect from
       elsewhere) matches nothing.

    3. The request is authenticated by Basic credentials, with a content type a form
       may have, without the L{INTENT_HEADER} and without a valid form token.
       Basic credentials are what a browser keeps and adds by itself, so an older
       browser that sends neither header above would still carry them on a form posted
       from another site. Another site's page cannot add a header of its own, nor send
       JSON, without a CORS preflight, which pxe-pilot never grants; nor can it read
       the token of pxe-pilot's confirmation page (L{pxepilot.http.forms}), which is
       how a browser without JavaScript re-arms or forgets a host. A bearer token is
       never added by a browser by itself: whoever sends one chose to, so bearer
       requests need no more than the rules above.

    @param fetch_site: The request's C{Sec-Fetch-Site}.
    @param origin: The request's C{Origin}.
    @param own_origins: The origins that are pxe-pilot's own (L{origin_of}).
    @param basic: Whether the request is authenticated by Basic credentials.
    @param content_type: The request's C{Content-Type}.
    @param intent: Whether the request has the L{INTENT_HEADER}.
    @param form_token: Whether the request carries a valid token of pxe-pilot's own
        confirmation page for what it asks.
    """
    site = (fetch_site or "").strip().lower()
    if site in ("cross-site", "same-site"):
        return f"a request from another site (Sec-Fetch-Site: {site})"
    if origin is not None and origin_of(origin) not in own_origins:
        return f"a request from another origin ({origin.strip()[:100] or 'empty'})"
    media = (content_type or "").split(";")[0].strip().lower()
    if basic and media in _SIMPLE_TYPES and not intent and not form_token:
        return (
            "a browser's request without the X-PXE-Pilot-Request header (send "
            "X-PXE-Pilot-Request: 1, or use Authorization: Bearer; a form of pxe-pilot's "
            "page whose token expired needs the page loaded again)"
        )
    return None


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
    @ivar fingerprint: The HTTPS certificate's SHA-256 fingerprint; L{None} without
        HTTPS.
    @ivar forms: Makes and checks the tokens of the pages' forms.
    """

    answers: AnswerService
    hosts: HostLedger
    metrics: Metrics
    health_checks: Sequence[IHealthCheck]
    config: Config
    client_of: Callable[[IRequest], str]
    secure: SecureOnly
    fingerprint: str | None = None
    forms: FormTokens = field(factory=FormTokens)

    def _admin_only(self, request: IRequest) -> None:
        """
        @raise Refused: 403 over plain HTTP when TLS is required; 401 when an admin token
            is set and C{request} does not present it.
        """
        self.secure.check(request)
        token = self.config.admin_token
        if token is not None and not token_matches(request, token):
            raise Refused(401, {"error": "this needs pxe-pilot's admin token"}, _ASK_FOR_TOKEN)

    def _change_only(self, request: IRequest, action: str, mac_text: str) -> None:
        """
        What every route that changes something checks first, the pages' actions
        included: the admin token, as on every operator route (without it nothing
        changes, whoever sent the request), then that no other site's page made a
        browser send it (L{forged_because}).

        @param action: What the route does to the host, as its form token names it.
        @param mac_text: The host, as the route's path names it.
        @raise Refused: as L{_admin_only}, or 403 for a request that may be forged.
        """
        self._admin_only(request)
        authorization = header(request, b"authorization") or ""
        reason = forged_because(
            fetch_site=header(request, b"sec-fetch-site"),
            origin=header(request, b"origin"),
            own_origins=self._own_origins(request),
            basic=authorization.strip().lower().startswith("basic "),
            content_type=header(request, b"content-type"),
            intent=bool((header(request, INTENT_HEADER) or "").strip()),
            form_token=self._form_token_valid(request, action, mac_text),
        )
        if reason is not None:
            log.warn(
                "{method} {path} from {client} refused (403): {reason}",
                method=request.method.decode("latin-1"),
                path=(getattr(request, "path", b"") or b"").decode("latin-1"),
                client=self.client_of(request),
                reason=reason,
            )
            raise Refused.because(403, f"refused: {reason}")

    def _form_token_valid(self, request: IRequest, action: str, mac_text: str) -> bool:
        """
        Whether C{request} carries a token of the confirmation page of C{action} on the
        host C{mac_text}, issued to the credential it presents, and still good.
        """
        token = form_token(request)
        if token is None:
            return False
        try:
            mac = MacAddress.parse(mac_text)
        except MacAddressError:
            return False
        return self.forms.valid(token, action, mac, presented_token(request), self.hosts.now())

    def _own_origins(self, request: IRequest) -> set[str]:
        """
        pxe-pilot's origins for C{request}: as the client addressed it (the C{Host}
        header, and what trusted proxies say), and C{--public-url}'s.
        """
        own = {origin_of(public_base(request, None, self.config.trusted_proxies))}
        if self.config.public_url:
            own.add(origin_of(self.config.public_url))
        return {origin for origin in own if origin is not None}

    def hosts_report(self, request: IRequest) -> bytes:
        """
        Every known host with its state, every answer file and boot settings file,
        whether it is valid, and which MAC it serves.

        Hosts come in pages, by MAC address: C{?limit=} hosts (L{HOSTS_PAGE}, at most
        L{MOST_HOSTS_PAGE}) after C{?after=}'s MAC; C{next}, when more follow, is the
        C{after} of the next page. C{states} counts every host.
        """
        self._admin_only(request)
        versions = _versions_asked(request)
        limit = _page_size(request)
        after_text = query(request, b"after")
        after = _mac(after_text) if after_text else None
        try:
            report = self.answers.inspect(versions)
            report["boot_settings"] = inspect_sidecars(self.answers.files, self.answers.listing())
        except AnswersUnavailable as e:
            raise Refused.because(503, str(e)) from None
        known, following = self.hosts.page(after, limit)
        report["known_hosts"] = [host.as_json() for host in known]
        report["states"] = dict(self.hosts.summary())
        if following is not None:
            report["next"] = str(following)
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
        if isinstance(resolution, Changing):
            raise Refused(
                503,
                {"error": f"{resolution.source} is being written right now"},
                [(b"retry-after", str(resolution.retry_after).encode())],
            )
        raise Refused.because(404, f"no host file for {mac} and no default.toml")

    async def simulate(self, request: IRequest) -> bytes:
        """
        What C{POST /answer} would answer the installer system information in the body
        (C{?accept=}: the C{Accept} header that installer sends), and why, as JSON
        (L{pxepilot.simulate.Simulation.as_json}). A dry run: no host is recorded, no
        event published, no answer counted.
        """
        self._admin_only(request)
        assert request.content is not None
        body = request.content.read(MAX_REQUEST_BYTES + 1)
        try:
            installer = parse_installer_request(body)
        except BadInstallerRequest as e:
            code = 413 if len(body) > MAX_REQUEST_BYTES else 400
            raise Refused.because(code, str(e)) from None
        try:
            simulation = await evaluate(
                self.answers,
                installer,
                query(request, b"accept", 256),
                self.hosts.hosts,
                self.config.install_once,
                self.config.answer_check,
            )
        except AnswersUnavailable as e:
            raise Refused.because(503, str(e)) from None
        return json_body(request, simulation.as_json())

    async def host_status(self, request: IRequest, mac_text: str) -> bytes:
        """
        A host's state and timeline, newest event last; the host named by its MAC
        address, or by the system UUID, serial number or model its installer sent.
        """
        self._admin_only(request)
        known = self._host_named(mac_text)
        limit = query(request, b"limit")
        count = int(limit) if limit and limit.isdigit() and 0 < int(limit) <= 500 else 100
        timeline = await self.hosts.timeline(known.mac, count)
        report = known.as_json()
        report["timeline"] = [event.as_json() for event in timeline]
        return json_body(request, report)

    async def reinstall(self, request: IRequest, mac_text: str) -> bytes:
        """
        Re-arm a host: its next network boot installs again. The host as JSON; to the
        confirmation page's form, a redirection to the host's page.
        """
        self._change_only(request, REARM.name, mac_text)
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
        if form_token(request) is not None:
            return see_other(request, f"page?done={REARM.name}")
        return json_body(request, host.as_json())

    async def forget(self, request: IRequest, mac_text: str) -> bytes:
        """
        Forget a host: its state and timeline, whatever its state. An installing host's
        installer carries on, and its report records the host again; an installed host
        forgotten installs again at its next network boot, as a new host does.
        """
        self._change_only(request, FORGET.name, mac_text)
        known = self._known_host(mac_text)
        client = self.client_of(request)
        try:
            host = await self.hosts.forget(known.mac)
        except KeyError:
            raise Refused.because(404, f"pxe-pilot has never seen {known.mac}") from None
        except Exception:
            log.failure("host {mac}: forgetting it could not be saved", mac=str(known.mac))
            raise Refused.because(500, "pxe-pilot could not save it; see its log") from None
        log.info(
            "host {mac} ({state}) forgotten by {client}",
            mac=str(host.mac),
            state=host.state.value,
            client=client,
        )
        if form_token(request) is not None:
            return see_other(request, f"../../?forgot={host.mac.canonical}")
        return json_body(request, {"mac": str(host.mac), "forgotten": True})

    async def host_page(self, request: IRequest, mac_text: str) -> bytes:
        """
        A host's page, for a person: its facts, its answer file's findings, its
        timeline, and links to re-arm or forget it.
        """
        self._admin_only(request)
        known = self._known_host(mac_text)
        timeline = await self.hosts.timeline(known.mac, PAGE_EVENTS + 1)
        check = await self._answer_check(known, timeline)
        done = ACTIONS.get(query(request, b"done") or "")
        notice = f"{done.done} {known.mac}." if done is not None else ""
        now = self.hosts.now()
        return self._page(
            request,
            lambda nonce: host_page(
                known, timeline, check, now, __version__, nonce=nonce, notice=notice
            ),
        )

    def confirm(self, request: IRequest, mac_text: str, action: str) -> bytes:
        """
        The page that asks before C{action} is done to a host, with the form that does
        it and the token that form needs.
        """
        self._admin_only(request)
        known = self._known_host(mac_text)
        chosen = ACTIONS[action]
        token = self.forms.issue(
            chosen.name, known.mac, presented_token(request), self.hosts.now()
        )
        return self._page(
            request,
            lambda nonce: confirmation_page(known, chosen, token, __version__, nonce=nonce),
        )

    async def _answer_check(self, host: Host, timeline: Sequence[Event]) -> AnswerCheck:
        """
        The answer file that matches C{host} now, checked for the installer it booted
        last (the newest known when none is on its timeline).
        """
        versions = _installer_range(installer_of(timeline))
        installer = str(versions)
        try:
            resolution = await self.answers.resolve([host.mac])
        except AnswersUnavailable as e:
            return AnswerCheck(None, installer, problem=f"the answers cannot be read: {e}")
        if isinstance(resolution, Served):
            findings = lint_range(resolution.answer, versions, host.product)
            return AnswerCheck(resolution.source, installer, findings)
        if isinstance(resolution, Invalid):
            return AnswerCheck(resolution.source, installer, problem=resolution.describe())
        if isinstance(resolution, Changing):
            return AnswerCheck(resolution.source, installer, problem="being written right now")
        return AnswerCheck(
            None, installer, problem="no host file for its MAC address and no default.toml"
        )

    def _page(self, request: IRequest, render: Callable[[str], bytes]) -> bytes:
        """
        Answer C{request} with a page that C{render} makes for a fresh nonce, under a
        policy that lets only the page's own style and script run.
        """
        nonce = secrets.token_urlsafe(16)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy", content_security_policy(nonce))
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"same-origin")
        return render(nonce)

    def refusal_page(self, request: IRequest, refused: Refused) -> bytes:
        """
        A refusal as a page, for a browser that navigated to a route: the status, why,
        and the way back.
        """
        request.setResponseCode(refused.code)
        headers = cast(Request, request).responseHeaders
        for name, value in refused.headers:
            headers.addRawHeader(name, value)
        message = str(refused.body.get("error", "refused"))
        path = (getattr(request, "path", b"") or b"/").decode("latin-1")
        home = "../" * (path.count("/") - 1) or "./"
        return self._page(
            request,
            lambda nonce: error_page(refused.code, message, __version__, nonce=nonce, home=home),
        )

    def _known_host(self, mac_text: str) -> Host:
        mac = _mac(mac_text)
        host = self.hosts.host(mac)
        if host is None:
            raise Refused.because(404, f"pxe-pilot has never seen {mac}")
        return host

    def _host_named(self, text: str) -> Host:
        """
        The one host C{text} names (L{HostLedger.find}).

        @raise Refused: 400 for text that can name no host, 404 when none, 409 with
            their MACs when several.
        """
        found = self.hosts.find(text)
        if not found:
            try:
                named = str(MacAddress.parse(text))
            except MacAddressError:
                if not any(key(text) for key in (uuid_key, serial_key, model_key)):
                    raise Refused.because(
                        400, f"{describe(text)} is not a MAC address, UUID, serial or model"
                    ) from None
                named = f"a host with MAC address, UUID, serial number or model {describe(text)}"
            raise Refused.because(404, f"pxe-pilot has never seen {named}")
        if len(found) > 1:
            macs = ", ".join(str(host.mac) for host in found[:10])
            raise Refused.because(409, f"{describe(text)} names several hosts: {macs}")
        return found[0]

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
        forgot = query(request, b"forgot")
        notice = ""
        if forgot:
            with contextlib.suppress(MacAddressError):
                notice = f"Forgot {MacAddress.parse(forgot)}."
        overview = self._overview()
        return self._page(
            request,
            lambda nonce: status_page(
                self.hosts.hosts.values(),
                self.hosts.now(),
                __version__,
                overview=overview,
                nonce=nonce,
                notice=notice,
            ),
        )

    def _checks(self) -> dict[str, ComponentHealth]:
        return {check.name: check.check() for check in self.health_checks}

    def _overview(self) -> Overview:
        """
        What the status page's summary line says: what C{/health} says, with where the
        directories are (the page is the operator's; C{/health} is anyone's).
        """
        checks = self._checks()
        if "tls" not in checks and self.fingerprint:
            checks["tls"] = ComponentHealth("ok", {"fingerprint": self.fingerprint})
        places = {
            "answers": str(self.config.answers_dir),
            "assets": str(self.config.assets_dir),
        }
        if self.config.boot_enabled:
            places["tftp"] = str(self.config.tftp_root)
        return Overview(overall_status(checks.values()), checks, places)

    def health(self, request: IRequest) -> bytes:
        """
        Whether pxe-pilot can do its work: 200 when it can, 503 when a component it
        depends on cannot.
        """
        checks = self._checks()
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


def _page_size(request: IRequest) -> int:
    """
    How many hosts a page of C{GET /hosts} holds: C{?limit=}, else L{HOSTS_PAGE}.

    @raise Refused: 400 for a limit that is not a number from 1 to L{MOST_HOSTS_PAGE}.
    """
    text = query(request, b"limit")
    if text is None:
        return HOSTS_PAGE
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MOST_HOSTS_PAGE:
        raise Refused.because(400, f"?limit= is a number of hosts from 1 to {MOST_HOSTS_PAGE}")
    return int(text)


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


def _installer_range(installer: str | None) -> VersionRange:
    """
    The installer versions an asset directory (C{proxmox-ve/9.1-1}) holds: Proxmox VE's
    releases are its installer's; for other products, or none, the newest known.
    """
    if installer is not None:
        product, _, release = installer.partition("/")
        if product == "proxmox-ve":
            try:
                version = InstallerVersion.parse(release.split("-")[0])
            except ValueError:
                pass
            else:
                return VersionRange.exactly(InstallerVersion(version.major, version.minor))
    return VersionRange.exactly(InstallerVersion(NEWEST.major, NEWEST.minor))
