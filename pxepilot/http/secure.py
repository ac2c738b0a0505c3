"""
C{--require-tls}: what carries secrets (answers, webhooks, the operator's routes) is
refused over plain HTTP, with the HTTPS URL to use instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.web.iweb import IRequest
from zope.interface import implementer

from pxepilot.address import HTTPAddress, plain_address
from pxepilot.config import IPNetwork
from pxepilot.health import ComponentHealth, IHealthCheck
from pxepilot.http.forwarded import is_secure
from pxepilot.http.responses import Refused
from pxepilot.logs import logger
from pxepilot.tls import ServerCertificate

log = logger(__name__)

EXPIRY_WARNING = 14 * 86400.0


@frozen
class SecureOnly:
    """
    Refuses plain HTTP when TLS is required.

    @ivar required: Whether it is (C{--require-tls}).
    @ivar address: Where the HTTPS side is, for the URL the refusal names.
    @ivar trusted_proxies: Proxies believed when they say they terminated TLS.
    """

    required: bool
    address: HTTPAddress
    trusted_proxies: Sequence[IPNetwork] = ()

    def check(self, request: IRequest) -> None:
        """
        @raise Refused: 403 naming the same resource's HTTPS URL, when TLS is required
            and C{request} came over plain HTTP.
        """
        if not self.required or is_secure(request, self.trusted_proxies):
            return
        host = request.getRequestHostname().decode("latin-1")
        base = self.address.https_base_url(host) or ""
        path = (getattr(request, "path", b"/") or b"/").decode("latin-1").lstrip("/")
        url = f"{base}{path}"
        log.warn(
            "{method} /{path} from {client} refused (403): TLS is required",
            method=request.method.decode("latin-1"),
            path=path,
            client=plain_address(str(getattr(request.getClientAddress(), "host", "unknown"))),
        )
        raise Refused(
            403,
            {"error": f"this pxe-pilot requires HTTPS here: use {url}", "https_url": url},
        )


@implementer(IHealthCheck)
@frozen
class TLSHealth:
    """
    The HTTPS side: its certificate's fingerprint (what installers pin), where it came
    from, when it expires, and whether HTTPS listens.

    @ivar certificate: The certificate served; L{None} with HTTPS off.
    @ivar listening_port: The port HTTPS listens on, L{None} while it does not.
    @ivar now: The time, to tell how long the certificate has left.
    """

    certificate: ServerCertificate | None
    listening_port: Callable[[], int | None]
    now: Callable[[], float]
    name: str = "tls"

    def check(self) -> ComponentHealth:
        certificate = self.certificate
        if certificate is None:
            return ComponentHealth("disabled")
        left = certificate.not_after.timestamp() - self.now()
        details: dict[str, Any] = {
            "fingerprint": certificate.fingerprint,
            "origin": certificate.origin,
            "not_after": certificate.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "port": self.listening_port(),
        }
        # Installers ignore expiry, but browsers, curl and the operator's monitoring do
        # not: a configured certificate running out needs the operator.
        if left < EXPIRY_WARNING:
            details["warning"] = (
                "the certificate has expired" if left <= 0 else "the certificate expires soon"
            )
            return ComponentHealth("degraded", details)
        return ComponentHealth("ok", details)
