"""
The assets directory's health check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from attrs import frozen
from zope.interface import implementer

from pxepilot.boot.catalogue import scan
from pxepilot.health import ComponentHealth, IHealthCheck


@implementer(IHealthCheck)
@frozen
class AssetsHealth:
    """
    The assets directory: readable, and what the catalogue holds; a version that cannot
    be served (its asset.json missing, invalid or not matching its files) needs the
    operator.
    """

    path: Path
    server_fingerprint: str | None = None
    name: str = "assets"

    def check(self) -> ComponentHealth:
        try:
            os.listdir(self.path)
        except OSError as e:
            return ComponentHealth("unavailable", {"directory": e.strerror or "unreadable"})
        catalogue = scan(self.path)
        pinned_elsewhere = [
            asset.key
            for asset in catalogue.assets
            if (asset.answer_url or "").startswith("https://")
            and not _same_certificate(asset.cert_fingerprint, self.server_fingerprint)
        ]
        details: dict[str, Any] = {
            "directory": "readable",
            "versions": [a.key for a in catalogue.assets],
            "invalid_versions": [{"version": k, "error": e} for k, e in catalogue.problems],
        }
        if pinned_elsewhere:
            # Their installers accept only another certificate: every answer request
            # they make fails its TLS handshake.
            details["pinned_to_another_certificate"] = pinned_elsewhere
        degraded = catalogue.problems or pinned_elsewhere
        return ComponentHealth("degraded" if degraded else "ok", details)


def _same_certificate(pinned: str | None, served: str | None) -> bool:
    """
    Whether an asset's pinned fingerprint is the served certificate's (an asset that
    pins none, or a server without HTTPS to compare with, is no mismatch).
    """
    if pinned is None or served is None:
        return True
    return pinned.replace(":", "").strip().lower() == served.replace(":", "").lower()
