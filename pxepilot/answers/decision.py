"""
Whether an installer gets its answer: a pure decision from what it sent, the answer file
found for it and what is known of the host.

Everything here is a value in and a value out; the route does the reading, the logging
and the recording.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from attrs import field, frozen

from pxepilot.answers.lint import Finding, errors, lint_range
from pxepilot.answers.request import InstallerRequest
from pxepilot.answers.service import Changing, Invalid, NoAnswer, Resolution, Served
from pxepilot.answers.versions import VersionRange, installer_versions
from pxepilot.logs import shorten
from pxepilot.macs import MacAddress

REARM_HINT = "to install it again: pxe-pilot reinstall {mac} (or POST /hosts/{mac}/reinstall)"


@frozen
class Installed:
    """
    A host that install-once holds back: it was installed and not re-armed since.

    @ivar mac: The host, by the MAC address it is known by.
    @ivar at: When it reported its installation, in seconds since the epoch.
    """

    mac: MacAddress
    at: float | None


@frozen
class Serve:
    """
    Serve the answer file.

    @ivar served: The file.
    @ivar versions: The installer versions the request may come from.
    @ivar findings: What those installers would find in it.
    @ivar rejected: The findings they would reject it for; served all the same under
        C{--answer-check warn}.
    """

    served: Served
    versions: VersionRange
    findings: tuple[Finding, ...]
    rejected: tuple[Finding, ...]


@frozen
class Refuse:
    """
    Refuse the request.

    @ivar code: The HTTP status.
    @ivar outcome: Why, as one word, for the log and the metrics.
    @ivar summary: One line for the host's timeline.
    @ivar reason: What the installer is told, and the log says.
    @ivar body: The JSON body the installer prints.
    @ivar source: The answer file concerned, if any.
    @ivar level: How loud the log line is: an operator's own choices (an installed host,
        no file for it) warn; a broken answer file is an error.
    @ivar retry_after: Seconds after which the same request may succeed, if it may.
    """

    code: int
    outcome: str
    summary: str
    reason: str
    body: Mapping[str, Any] = field(factory=dict)
    source: str | None = None
    level: Literal["warn", "error"] = "error"
    retry_after: int | None = None


Decision = Serve | Refuse


def decide_answer(
    installer: InstallerRequest,
    accept: str | None,
    installed: Installed | None,
    resolution: Resolution | None,
    answer_check: str,
) -> Decision:
    """
    What an answer request gets.

    @param accept: The request's C{Accept} header, which narrows the installer version.
    @param installed: The installed host among the request's MACs, when install-once
        holds it back; it wins over everything else.
    @param resolution: The answer file found for the request (L{None} only with
        C{installed}).
    @param answer_check: C{refuse} a file the installer would reject, or C{warn} and
        serve it.
    """
    if installed is not None:
        reason = f"{installed.mac} was installed on {utc(installed.at)}; " + REARM_HINT.format(
            mac=installed.mac
        )
        return Refuse(
            409,
            "installed",
            "answer refused: already installed",
            reason,
            {"error": reason},
            None,
            "warn",
        )
    if isinstance(resolution, Served):
        return _check(installer, accept, resolution, answer_check)
    if isinstance(resolution, Changing):
        reason = (
            f"{resolution.source} is being written right now; it is served once it has "
            f"been still for a moment: ask again in {resolution.retry_after} s"
        )
        return Refuse(
            503,
            "changing",
            f"answer {resolution.source} was still being written",
            reason,
            {"error": reason, "file": resolution.source},
            resolution.source,
            "warn",
            resolution.retry_after,
        )
    if isinstance(resolution, Invalid):
        return Refuse(
            422,
            "invalid-answer",
            f"answer {resolution.source} is invalid",
            resolution.describe(),
            invalid_json(resolution),
            resolution.source,
        )
    assert isinstance(resolution, NoAnswer), "an answer request is resolved before it is decided"
    reason = "no host file for these MAC addresses and no default.toml"
    macs = shorten(installer.macs)
    return Refuse(
        404,
        "no-answer",
        "no answer file",
        reason,
        {"error": f"no answer for {macs}: {reason}"},
        level="warn",
    )


def _check(
    installer: InstallerRequest, accept: str | None, served: Served, answer_check: str
) -> Decision:
    versions = installer_versions(installer, accept)
    findings = tuple(lint_range(served.answer, versions, installer.product))
    rejected = tuple(errors(findings))
    if rejected and answer_check == "refuse":
        problems = "; ".join(f.describe(served.source) for f in rejected)
        reason = f"installer {versions} would reject {served.source}: {problems}"
        return Refuse(
            422,
            "rejected-answer",
            f"answer {served.source} would be rejected by installer {versions}",
            reason,
            {
                "error": reason,
                "file": served.source,
                "installer_version": str(versions),
                "findings": [f.as_json() for f in findings],
            },
            served.source,
        )
    return Serve(served, versions, findings, rejected)


def utc(at: float | None) -> str:
    """
    A moment for a person, in UTC to the minute.
    """
    if at is None:
        return "an unknown date"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def invalid_json(invalid: Invalid) -> dict[str, Any]:
    """
    Why a file cannot be served, as the installer and an operator get it.
    """
    return {
        "error": invalid.describe(),
        "file": invalid.source,
        "line": invalid.problem.line,
        "column": invalid.problem.column,
    }
