"""
The assets directory's health check, and whether the answer URL built into each version
reaches this server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attrs import frozen
from zope.interface import implementer

from builder.answer_url import Unreachable, unreachable
from pxepilot.address import HTTPAddress
from pxepilot.boot.catalogue import Asset, scan
from pxepilot.health import ComponentHealth, IHealthCheck

NO_ASSETS = "no boot assets: run pxe-pilot-builder"

_DEFAULT_PORTS = {"http": 80, "https": 443}


@implementer(IHealthCheck)
@frozen
class AssetsHealth:
    """
    The assets directory: readable, and what the catalogue holds. It needs the operator
    when it holds no version, when a version cannot be served (its asset.json missing,
    invalid or not matching its files), and when a version's installers would ask
    somewhere else than this server for their answer (L{answer_url_problem}) or pin
    another certificate than the one it presents.

    Each of these is a sentence naming the version in C{reasons}.

    @ivar server_fingerprint: The certificate installers must pin, when they reach
        pxe-pilot's own HTTPS; L{None} for none to compare with.
    @ivar address: Where machines reach pxe-pilot, to compare the answer URLs with its
        ports; L{None} when it is served by another application's site, whose ports
        it does not know.
    @ivar proxied: Whether trusted proxies may forward other ports and paths to it.
    """

    path: Path
    server_fingerprint: str | None = None
    name: str = "assets"
    address: HTTPAddress | None = None
    proxied: bool = False

    def check(self) -> ComponentHealth:
        try:
            os.listdir(self.path)
        except OSError as e:
            return ComponentHealth("unavailable", {"directory": e.strerror or "unreadable"})
        catalogue = scan(self.path)
        reasons = [f"{key} cannot be served: {error}" for key, error in catalogue.problems]
        if not catalogue.assets and not catalogue.problems:
            reasons.append(NO_ASSETS)
        misdirected = []
        for asset in catalogue.assets:
            problem = self._answer_url_problem(asset)
            if problem is not None:
                misdirected.append(
                    {"version": asset.key, "answer_url": asset.answer_url, "error": problem}
                )
                reasons.append(
                    f"{asset.key}: its installers would ask {asset.answer_url} for their "
                    f"answer, but {problem}"
                )
        pinned_elsewhere = [
            asset.key
            for asset in catalogue.assets
            if (asset.answer_url or "").startswith("https://")
            and not _same_certificate(asset.cert_fingerprint, self.server_fingerprint)
        ]
        # Their installers accept only another certificate: every answer request they
        # make fails its TLS handshake.
        reasons += [
            f"{key}: its installers pin another certificate than pxe-pilot's: rebuild it "
            "with pxe-pilot-builder"
            for key in pinned_elsewhere
        ]
        details: dict[str, Any] = {
            "directory": "readable",
            "versions": [a.key for a in catalogue.assets],
            "invalid_versions": [{"version": k, "error": e} for k, e in catalogue.problems],
        }
        if misdirected:
            details["answer_url_problems"] = misdirected
        if pinned_elsewhere:
            details["pinned_to_another_certificate"] = pinned_elsewhere
        if reasons:
            details["reasons"] = reasons
            return ComponentHealth("degraded", details)
        return ComponentHealth("ok", details)

    def _answer_url_problem(self, asset: Asset) -> str | None:
        if asset.answer_url is None:
            return None
        return answer_url_problem(asset.answer_url, self.address, self.proxied)


def answer_url_problem(url: str, address: HTTPAddress | None, proxied: bool = False) -> str | None:
    """
    Why installers asking C{url} for their answer cannot reach this server, when that
    is certain; L{None} otherwise.

    A host name, or an address of another machine, may well lead here (DNS, NAT): only
    hosts no installer can reach anyone at are wrong. The scheme, port and path are
    compared with pxe-pilot's listeners and its public URL, unless C{address} is
    L{None} (pxe-pilot served by another application's site) or C{proxied} (trusted
    proxies may forward any port and path here).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "it is not a URL"
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return "it is not an http:// or https:// URL"
    unreachable = _unreachable_host(host)
    if unreachable is not None:
        return unreachable
    if address is None or proxied:
        return None
    asked = (scheme, port or _DEFAULT_PORTS[scheme])
    answered = _answer_endpoints(address)
    if answered is None:
        return None
    paths = answered.get(asked)
    if paths is None:
        listening = f"HTTP on port {address.port()}"
        https = address.https_port() or address.configured_https_port
        if https:
            listening += f" and HTTPS on port {https}"
        public = f", and is reached at {address.public_url}" if address.public_url else ""
        return (
            f"pxe-pilot listens for {listening}{public}, not {scheme.upper()} on port "
            f"{asked[1]} (behind a port mapping or a proxy, set --public-url)"
        )
    if parts.path not in paths:
        return f"pxe-pilot answers at {' or '.join(sorted(paths))}, not {parts.path or '/'}"
    return None


def _unreachable_host(host: str) -> str | None:
    # The builder refuses the same hosts when it bakes the URL in; this says so of
    # assets built with --force, or by other means.
    kind = unreachable(host)
    if kind is Unreachable.LOOPBACK_NAME:
        return f"{host} is the machine itself: each installer would ask itself"
    if kind is Unreachable.LOOPBACK:
        return f"{host} is a loopback address: each installer would ask itself"
    if kind is Unreachable.UNSPECIFIED:
        return f"{host} is no machine's address"
    if kind is Unreachable.LINK_LOCAL:
        return f"{host} is a link-local address, which installers configured by DHCP do not reach"
    return None


def _answer_endpoints(address: HTTPAddress) -> dict[tuple[str, int], set[str]] | None:
    """
    The scheme and port pairs pxe-pilot's answers are reached at, with the path on each;
    L{None} while a port is not known yet (asked for any free one, not yet listening).
    """
    http = address.port()
    https = address.https_port() or address.configured_https_port
    if not http:
        return None
    endpoints: dict[tuple[str, int], set[str]] = {("http", http): {"/answer"}}
    if https:
        endpoints[("https", https)] = {"/answer"}
    if address.public_url:
        public = urlsplit(address.public_url)
        scheme = public.scheme.lower()
        where = (scheme, public.port or _DEFAULT_PORTS.get(scheme, 0))
        base = public.path if public.path.endswith("/") else f"{public.path}/"
        endpoints.setdefault(where, set()).add(f"{base}answer")
    return endpoints


def _same_certificate(pinned: str | None, served: str | None) -> bool:
    """
    Whether an asset's pinned fingerprint is the served certificate's (an asset that
    pins none, or a server without HTTPS to compare with, is no mismatch).
    """
    if pinned is None or served is None:
        return True
    return pinned.replace(":", "").strip().lower() == served.replace(":", "").lower()
