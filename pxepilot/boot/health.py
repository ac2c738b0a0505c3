"""
The assets directory's health check.
"""

from __future__ import annotations

import os
from pathlib import Path

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
    name: str = "assets"

    def check(self) -> ComponentHealth:
        try:
            os.listdir(self.path)
        except OSError as e:
            return ComponentHealth("unavailable", {"directory": e.strerror or "unreadable"})
        catalogue = scan(self.path)
        details = {
            "directory": "readable",
            "versions": [a.key for a in catalogue.assets],
            "invalid_versions": [{"version": k, "error": e} for k, e in catalogue.problems],
        }
        return ComponentHealth("degraded" if catalogue.problems else "ok", details)
