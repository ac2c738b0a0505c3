"""
C{pxe-pilot simulate}: which answer a machine would get before it boots, from a running
pxe-pilot (C{POST /hosts/simulate}, which records nothing) or offline from an answers
directory, and whether its installer would accept it.

Exit status: 0 when the machine would be served an answer its installer accepts, 1 when
it would not (no file, a file the installer rejects, install-once), 2 when it cannot be
said (a usage error, an unreachable server, an unreadable directory).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from pxepilot.answers.decision import utc
from pxepilot.answers.files import AnswersUnavailable, DirectoryAnswerFiles
from pxepilot.answers.lint import Finding
from pxepilot.answers.request import BadInstallerRequest, parse_installer_request
from pxepilot.answers.service import AnswerService
from pxepilot.answers.versions import NEWEST, OLDEST, InstallerVersion
from pxepilot.config import ConfigError
from pxepilot.config_parsers import parse_answer_check, parse_bool
from pxepilot.macs import MacAddress, MacAddressError, describe
from pxepilot.simulate import PRODUCTS, StateUnreadable, evaluate, installer_body, read_hosts


class SimulationUnavailable(Exception):
    """
    The simulation cannot be run; the message is the one line the user sees.
    """


def add_parser(commands: Any) -> None:
    """
    The C{simulate} subcommand and its options, on C{commands} (argparse's subparsers).
    """
    simulate = commands.add_parser(
        "simulate",
        help="which answer a machine would get and whether its installer accepts it, "
        "before it boots (from the server, or offline with --answers)",
    )
    simulate.add_argument(
        "--mac",
        dest="macs",
        action="append",
        required=True,
        metavar="MAC",
        help="a MAC address of the machine; repeat in the order its installer lists them",
    )
    simulate.add_argument("--serial", help="its DMI system serial number")
    simulate.add_argument("--uuid", help="its DMI system UUID")
    simulate.add_argument("--model", help="its DMI system product name (PowerEdge R650)")
    simulate.add_argument(
        "--product", choices=sorted(PRODUCTS), default="pve", help="the product [default: pve]"
    )
    simulate.add_argument(
        "--installer-version",
        default=f"{NEWEST.major}.{NEWEST.minor}",
        metavar="X.Y",
        help=f"the installer that asks, {OLDEST} or later; its request has that version's "
        f"shape [default: the newest known, {NEWEST.major}.{NEWEST.minor}]",
    )
    simulate.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="the pxe-pilot to ask (as pxe-pilot --url; env PXE_PILOT_URL)",
    )
    simulate.add_argument(
        "--answers",
        type=Path,
        metavar="DIR",
        help="ask no server: decide from this answers directory",
    )
    simulate.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="with --answers: pxe-pilot's state directory, read (never written) to "
        "judge install-once; without it install-once is not known offline",
    )
    simulate.add_argument("--json", action="store_true", help="print the simulation as JSON")


def request_for(arguments: argparse.Namespace) -> tuple[bytes, str | None]:
    """
    The body and C{Accept} header the machine's installer would send.

    @raise ValueError: for an option that is not valid, saying which.
    """
    macs: list[MacAddress] = []
    for text in arguments.macs:
        try:
            macs.append(MacAddress.parse(text))
        except MacAddressError:
            raise ValueError(f"--mac: {describe(text)} is not a MAC address") from None
    try:
        version = InstallerVersion.parse(arguments.installer_version)
    except ValueError as e:
        raise ValueError(f"--installer-version: {e}") from None
    if version < OLDEST:
        raise ValueError(
            f"--installer-version: {version} has no automated installer; {OLDEST} is the first"
        )
    if arguments.state is not None and arguments.answers is None:
        raise ValueError("--state goes with --answers; a server reads its own state")
    return installer_body(
        macs, version, arguments.product, arguments.serial, arguments.uuid, arguments.model
    )


def server_path(accept: str | None) -> str:
    """
    The path of the server's simulation route, carrying the installer's C{Accept}.
    """
    return "hosts/simulate" + (f"?accept={quote(accept)}" if accept else "")


async def offline(
    reactor: Any, arguments: argparse.Namespace, body: bytes, accept: str | None
) -> dict[str, Any]:
    """
    The simulation from C{--answers} (and C{--state}), as the server would run it. The
    server's C{--install-once} and C{--answer-check} are read from their environment
    variables, as the server reads them.

    @raise SimulationUnavailable: when the answers or the state cannot be read.
    """
    # Only here: the server's module is heavy, and the other commands do not need it.
    from pxepilot.application import STATE_DATABASE

    try:
        install_once = parse_bool(os.environ.get("PXE_PILOT_INSTALL_ONCE") or "true")
        answer_check = parse_answer_check(os.environ.get("PXE_PILOT_ANSWER_CHECK") or "refuse")
    except ConfigError as e:
        raise SimulationUnavailable(str(e)) from None
    try:
        installer = parse_installer_request(body)
        hosts = (
            read_hosts(arguments.state / STATE_DATABASE) if arguments.state is not None else None
        )
        answers = AnswerService(DirectoryAnswerFiles(arguments.answers), reactor)
        simulation = await evaluate(answers, installer, accept, hosts, install_once, answer_check)
    except (BadInstallerRequest, StateUnreadable) as e:
        raise SimulationUnavailable(str(e)) from None
    except AnswersUnavailable as e:
        raise SimulationUnavailable(f"{arguments.answers}: {e}") from None
    return simulation.as_json()


def show(report: dict[str, Any], as_json: bool, out: TextIO) -> int:
    """
    Print a simulation (as C{POST /hosts/simulate} returns it); the exit status.
    """
    if as_json:
        print(json.dumps(report, indent=2), file=out)
    else:
        for line in describe_report(report):
            print(line, file=out)
    return 0 if report["accepted"] else 1


def describe_report(report: dict[str, Any]) -> list[str]:
    """
    A simulation for a person, a line each: the machine, the file and why, its findings,
    install-once, and the verdict.
    """
    request = report["request"]
    identity = ", ".join(
        f"{name} {request[name]}" for name in ("serial", "uuid", "model") if request.get(name)
    )
    lines = [
        f"machine: {request['product'] or 'unknown product'}, installer "
        f"{report['installer_version']}, MACs {', '.join(request['macs'])}"
        + (f" ({identity})" if identity else ""),
        f"answer file: {report['file'] or 'none'}"
        + (
            " (served once re-armed)"
            if report["outcome"] == "installed" and report["file"]
            else ""
        ),
        f"why: {report['why']}",
    ]
    source = report["file"] or ""
    for finding in report["findings"]:
        found = Finding(
            finding["severity"],
            finding["key"],
            finding["message"],
            finding["fix"],
            finding["line"],
        )
        lines.append(f"  {found.describe(source)}")
    if report["checked"]:
        count, failed = len(report["findings"]), report["errors"]
        summary = (
            f"{failed} error{'s' * (failed != 1)}, {count - failed} "
            f"warning{'s' * (count - failed != 1)}"
            if count
            else "none"
        )
        lines.append(f"findings for installer {report['installer_version']}: {summary}")
    lines.append(f"install once: {_install_once(report)}")
    if report["accepted"]:
        verdict = f"accepted: the installer is served {report['file']} and accepts it"
    elif report["status"] == 200:
        verdict = (
            f"not accepted: the installer is served {report['file']} (--answer-check warn) "
            "but rejects it"
        )
    elif report["outcome"] == "rejected-answer":
        # The reason repeats every finding, listed above already.
        verdict = (
            f"not accepted: refused (422): installer {report['installer_version']} would "
            f"reject {report['file']}"
        )
    else:
        verdict = f"not accepted: refused ({report['status']}): {report['reason']}"
    lines.append(verdict)
    return lines


def _install_once(report: dict[str, Any]) -> str:
    once = report["install_once"]
    if not once["enabled"]:
        return "off: installed hosts are served like any other"
    if not once["known"]:
        return "not known offline (give --state DIR to read the hosts' states)"
    installed = once["installed"]
    if installed is not None:
        return f"refuses it: {installed['mac']} was installed on {utc(installed['at'])}"
    host = report["host"]
    if host is None:
        return "not installed (pxe-pilot has never seen it)"
    return f"not installed (known as {host['mac']}, {host['state']})"
