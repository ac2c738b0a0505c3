"""
Health of pxe-pilot's components, as reported by C{GET /health}.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from attrs import field, frozen
from zope.interface import Attribute, Interface, implementer

from pxepilot.answers.files import AnswersUnavailable
from pxepilot.answers.service import AnswerService
from pxepilot.boot.catalogue import scan
from pxepilot.hosts.ledger import HostLedger

Status = Literal["ok", "degraded", "unavailable", "disabled"]


@frozen
class ComponentHealth:
    """
    How one component is doing.

    @ivar status: C{ok}; C{degraded} (working, but something needs the operator);
        C{unavailable} (not working: the service is unhealthy); C{disabled}.
    @ivar details: What the operator needs to know, JSON-ready.
    """

    status: Status
    details: Mapping[str, Any] = field(factory=dict)


class IHealthCheck(Interface):
    """
    One component that C{/health} reports on.
    """

    name = Attribute("The component's key in the report, such as C{answers}.")

    def check() -> ComponentHealth:
        """
        Look at the component now.
        """


def overall_status(components: Iterable[ComponentHealth]) -> Status:
    """
    C{unavailable} if any component is, else C{degraded} if any is, else C{ok}.
    """
    statuses = {c.status for c in components}
    if "unavailable" in statuses:
        return "unavailable"
    if "degraded" in statuses:
        return "degraded"
    return "ok"


@implementer(IHealthCheck)
@frozen
class AnswersHealth:
    """
    The answers directory: readable, default present and valid, host files valid, no
    two files for one MAC.
    """

    answers: AnswerService
    name: str = "answers"

    def check(self) -> ComponentHealth:
        try:
            report = self.answers.inspect()
        except AnswersUnavailable as e:
            return ComponentHealth("unavailable", {"directory": str(e)})
        default = report["default"]
        invalid = [h["file"] for h in report["hosts"] if not h["valid"]]
        if default["present"] and not default["valid"]:
            invalid.insert(0, default["file"])
        invalid += [u["file"] for u in report["unrecognised_files"]]
        conflicts = sorted({h["mac"] for h in report["hosts"] if h["conflicts_with"]})
        problems = bool(invalid or conflicts)
        return ComponentHealth(
            "degraded" if problems else "ok",
            {
                "directory": "readable",
                "default_present": default["present"],
                "default_valid": default.get("valid", False),
                "host_count": len({h["mac"] for h in report["hosts"]}),
                "invalid_files": invalid,
                "conflicting_macs": conflicts,
            },
        )


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


@implementer(IHealthCheck)
@frozen
class Disabled:
    """
    A component switched off by configuration.
    """

    name: str

    def check(self) -> ComponentHealth:
        return ComponentHealth("disabled")


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
        if self.ledger.last_failure is not None:
            details["error"] = f"events cannot be saved: {self.ledger.last_failure}"
            return ComponentHealth("degraded", details)
        return ComponentHealth("ok", details)
