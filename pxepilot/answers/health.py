"""
The answers directory's health check.
"""

from __future__ import annotations

from attrs import frozen
from zope.interface import implementer

from pxepilot.answers.files import AnswersUnavailable
from pxepilot.answers.service import AnswerService
from pxepilot.health import ComponentHealth, IHealthCheck


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
