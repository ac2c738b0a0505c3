"""
The host database's health check.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from zope.interface import implementer

from pxepilot.health import ComponentHealth, IHealthCheck
from pxepilot.hosts.ledger import HostLedger


@implementer(IHealthCheck)
@frozen
class HostsHealth:
    """
    The host database: degraded while events cannot be saved (installations go on,
    but what pxe-pilot learns of them would be lost on a restart).
    """

    ledger: HostLedger
    name: str = "hosts"

    def check(self) -> ComponentHealth:
        # No path: /health is open to anyone who can reach it.
        details: dict[str, Any] = {"hosts": len(self.ledger.hosts)}
        # Counted since start, so that saves failing now and then, between successful
        # ones that clear the error below, are still seen.
        if self.ledger.not_saved:
            details["events_not_saved"] = self.ledger.not_saved
        if self.ledger.last_failure is not None:
            details["error"] = f"events cannot be saved: {self.ledger.last_failure}"
            return ComponentHealth("degraded", details)
        return ComponentHealth("ok", details)
