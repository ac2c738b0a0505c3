"""
pxe-pilot's URL map: every route in one place, each handed to the routes of its
audience (the installer, a booting machine, the operator), and the error handlers that
turn what they raise into responses.

To add a route, write its handler on the audience's class (C{http/installer.py},
C{http/boot.py}, C{http/operator.py}) and add one line here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from attrs import frozen
from klein import Klein
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from pxepilot.http.boot import BootRoutes
from pxepilot.http.files import AssetFiles
from pxepilot.http.installer import InstallerRoutes
from pxepilot.http.ipxe_files import IpxeFiles
from pxepilot.http.operator import OperatorRoutes
from pxepilot.http.responses import Refused, header, json_body, refusal_body
from pxepilot.logs import logger

log = logger(__name__)


@frozen
class PxePilotRoutes:
    """
    pxe-pilot's HTTP routes.
    """

    app = Klein()

    installer: InstallerRoutes
    boot: BootRoutes
    operator: OperatorRoutes

    # -- the installer

    @app.route("/answer", methods=["POST"])
    async def answer(self, request: IRequest) -> bytes:
        return await self.installer.answer(request)

    @app.route("/webhook", methods=["POST"])
    async def webhook(self, request: IRequest) -> bytes:
        return await self.installer.webhook(request)

    # -- a booting machine

    @app.route("/boot.ipxe", methods=["GET"])
    def boot_ipxe(self, request: IRequest) -> bytes:
        return self.boot.boot_ipxe(request)

    @app.route("/menu.ipxe", methods=["GET"])
    def menu_ipxe(self, request: IRequest) -> bytes:
        return self.boot.menu_ipxe(request)

    @app.route("/assets/", branch=True, methods=["GET", "HEAD"])
    def assets(self, request: IRequest) -> AssetFiles:
        return self.boot.assets(request)

    @app.route("/ipxe/", branch=True, methods=["GET", "HEAD"])
    def ipxe_files(self, request: IRequest) -> IpxeFiles:
        return self.boot.ipxe_files(request)

    # -- the operator

    @app.route("/hosts", methods=["GET"])
    def hosts(self, request: IRequest) -> bytes:
        return self.operator.hosts_report(request)

    @app.route("/hosts/simulate", methods=["POST"])
    async def simulate(self, request: IRequest) -> bytes:
        return await self.operator.simulate(request)

    @app.route("/hosts/<string:mac_text>", methods=["GET"])
    async def host(self, request: IRequest, mac_text: str) -> bytes:
        return await self.operator.answer_for(request, mac_text)

    @app.route("/hosts/<string:mac_text>/status", methods=["GET"])
    async def host_status(self, request: IRequest, mac_text: str) -> bytes:
        return await self.operator.host_status(request, mac_text)

    @app.route("/hosts/<string:mac_text>/page", methods=["GET"])
    async def host_page(self, request: IRequest, mac_text: str) -> bytes:
        return await self.operator.host_page(request, mac_text)

    @app.route("/hosts/<string:mac_text>/reinstall", methods=["GET"])
    def confirm_reinstall(self, request: IRequest, mac_text: str) -> bytes:
        return self.operator.confirm(request, mac_text, "reinstall")

    @app.route("/hosts/<string:mac_text>/reinstall", methods=["POST"])
    async def reinstall(self, request: IRequest, mac_text: str) -> bytes:
        return await self.operator.reinstall(request, mac_text)

    @app.route("/hosts/<string:mac_text>/forget", methods=["GET"])
    def confirm_forget(self, request: IRequest, mac_text: str) -> bytes:
        return self.operator.confirm(request, mac_text, "forget")

    @app.route("/hosts/<string:mac_text>/forget", methods=["POST"])
    async def forget(self, request: IRequest, mac_text: str) -> bytes:
        return await self.operator.forget(request, mac_text)

    @app.route("/metrics", methods=["GET"])
    def metrics_page(self, request: IRequest) -> bytes:
        return self.operator.metrics_page(request)

    @app.route("/", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        return self.operator.status(request)

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        return self.operator.health(request)

    # -- errors

    @app.handle_errors(Refused)
    def refused(self, request: IRequest, failure: Failure) -> bytes:
        refusal = failure.value
        assert isinstance(refusal, Refused)
        # A person's browser that navigated here reads a page; programs, and the pages'
        # own script, read JSON.
        if "text/html" in (header(request, b"accept") or ""):
            return self.operator.refusal_page(request, refusal)
        return refusal_body(request, refusal)

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
    def internal_error(self, request: IRequest, failure: Failure) -> Any:
        log.failure(
            "unhandled error in {method} {uri}", failure, method=request.method, uri=request.uri
        )
        return json_body(request, {"error": "internal error; see pxe-pilot's log"}, 500)
