"""
C{pxe-pilot}: the operator's command line, working against a running pxe-pilot.

    pxe-pilot hosts                  every known host and its state
    pxe-pilot status MAC|SERIAL      one host's state and timeline
    pxe-pilot reinstall MAC          re-arm an installed host
    pxe-pilot check [ANSWERS_DIR]    lint answer files for an installer version (offline);
                                     --json for CI
    pxe-pilot simulate --mac MAC     which answer a machine would get, and whether its
                                     installer accepts it (--answers DIR: offline)
    pxe-pilot tls                    the HTTPS certificate's fingerprint and the lines that
                                     pin it; --rotate for a new one (offline)
    pxe-pilot state export|import    the host ledger as JSON lines, from or into SQLite or
                                     PostgreSQL (offline)

The server is C{--url} (C{PXE_PILOT_URL}, default C{http://127.0.0.1:8080/}); its admin
token, when it has one, C{--admin-token} or, better, C{PXE_PILOT_ADMIN_TOKEN}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import treq
from hyperlink import EncodedURL
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from pxepilot._version import __version__
from pxepilot.answers.identity import model_key, serial_key, uuid_key
from pxepilot.answers.versions import NEWEST, InstallerVersion
from pxepilot.check_command import check, check_json, check_pinning
from pxepilot.hosts.page import age
from pxepilot.macs import MacAddress, MacAddressError, describe
from pxepilot.simulate_command import (
    SimulationUnavailable,
    offline,
    request_for,
    server_path,
    show,
)
from pxepilot.simulate_command import add_parser as add_simulate_parser
from pxepilot.state_command import add_parser as add_state_parser
from pxepilot.state_command import state
from pxepilot.tls import (
    PinnedPolicy,
    TLSSetupError,
    certificate_facts,
    generated_paths,
    normalise_fingerprint,
)
from pxepilot.tls_command import (
    DEFAULT_TLS_PORT,
    tls,
)

DEFAULT_URL = "http://127.0.0.1:8080/"
TIMEOUT = 30


class CommandError(Exception):
    """
    The command cannot be done; the message is the one line the user sees.
    """


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="pxe-pilot",
        description="See and steer the hosts a running pxe-pilot knows.",
    )
    top.add_argument("--version", action="version", version=f"pxe-pilot {__version__}")
    top.add_argument(
        "--url",
        default=os.environ.get("PXE_PILOT_URL") or DEFAULT_URL,
        help=f"pxe-pilot's HTTP address (env PXE_PILOT_URL) [default: {DEFAULT_URL}]",
    )
    top.add_argument(
        "--cert-fingerprint",
        default=os.environ.get("PXE_PILOT_CERT_FINGERPRINT") or None,
        metavar="FP",
        help="over https://, trust the server certificate with this SHA-256 fingerprint "
        "(env PXE_PILOT_CERT_FINGERPRINT) [default: the one pxe-pilot made in "
        "PXE_PILOT_STATE_DIR or ./state, if any; else the system's CAs]",
    )
    top.add_argument(
        "--admin-token",
        default=os.environ.get("PXE_PILOT_ADMIN_TOKEN") or None,
        help="the server's admin token (env PXE_PILOT_ADMIN_TOKEN, which others cannot read)",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    hosts = commands.add_parser("hosts", help="every known host and its state")
    hosts.add_argument("--json", action="store_true", help="print the server's JSON")
    status = commands.add_parser("status", help="one host's state and timeline")
    status.add_argument(
        "mac", metavar="MAC", help="its MAC address, or the serial number, UUID or model it sent"
    )
    status.add_argument("--json", action="store_true", help="print the server's JSON")
    reinstall = commands.add_parser(
        "reinstall", help="re-arm a host: its next network boot installs again"
    )
    reinstall.add_argument("mac", metavar="MAC")
    check = commands.add_parser(
        "check",
        help="check answer files as an installer version would (no server needed)",
    )
    check.add_argument(
        "answers",
        nargs="?",
        default=os.environ.get("PXE_PILOT_ANSWERS_DIR") or "answers",
        metavar="ANSWERS_DIR",
        help="an answers directory or one answer file (env PXE_PILOT_ANSWERS_DIR) "
        "[default: ./answers]",
    )
    check.add_argument(
        "--installer-version",
        default=f"{NEWEST.major}.{NEWEST.minor}",
        metavar="X.Y",
        help=f"the installer to check for, such as 8.4 or 9.1.2 [default: the newest "
        f"known, {NEWEST.major}.{NEWEST.minor}]",
    )
    check.add_argument(
        "--product",
        choices=("pve", "pbs", "pmg", "pdm"),
        help="the product installed (some settings are Proxmox VE's only)",
    )
    check.add_argument(
        "--assets",
        type=Path,
        default=Path(os.environ.get("PXE_PILOT_ASSETS_DIR") or "assets"),
        metavar="DIR",
        help="assets to compare with the HTTPS certificate, when both are there "
        "(env PXE_PILOT_ASSETS_DIR) [default: ./assets]",
    )
    check.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("PXE_PILOT_STATE_DIR") or "state"),
        metavar="DIR",
        help="where pxe-pilot keeps its generated certificate (env PXE_PILOT_STATE_DIR) "
        "[default: ./state]",
    )
    check.add_argument(
        "--tls-cert",
        type=Path,
        default=Path(os.environ["PXE_PILOT_TLS_CERT"])
        if os.environ.get("PXE_PILOT_TLS_CERT")
        else None,
        metavar="FILE",
        help="the certificate pxe-pilot is given instead (env PXE_PILOT_TLS_CERT)",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="print the findings as JSON, per file (for CI); the exit status is the same",
    )
    add_simulate_parser(commands)
    add_state_parser(commands)
    tls = commands.add_parser(
        "tls",
        help="the HTTPS certificate's fingerprint and the DHCP, DNS and builder lines "
        "that pin it; --rotate for a new one (no server needed)",
    )
    tls.add_argument(
        "--state",
        type=Path,
        default=os.environ.get("PXE_PILOT_STATE_DIR") or "state",
        metavar="DIR",
        help="pxe-pilot's state directory, which holds the generated certificate "
        "(env PXE_PILOT_STATE_DIR) [default: ./state]",
    )
    tls.add_argument(
        "--tls-cert",
        type=Path,
        default=os.environ.get("PXE_PILOT_TLS_CERT") or None,
        metavar="FILE",
        help="the operator's certificate pxe-pilot serves instead (env PXE_PILOT_TLS_CERT)",
    )
    tls.add_argument(
        "--assets",
        type=Path,
        default=os.environ.get("PXE_PILOT_ASSETS_DIR") or "assets",
        metavar="DIR",
        help="the assets directory, to find assets built with the fingerprint "
        "(env PXE_PILOT_ASSETS_DIR) [default: ./assets]",
    )
    tls.add_argument(
        "--url",
        dest="answer_url",
        metavar="URL",
        help=f"the answer URL to print in the lines [default: https://HOST:"
        f"{DEFAULT_TLS_PORT}/answer, HOST being PXE_PILOT_PUBLIC_URL's host or this "
        f"host's name]",
    )
    tls.add_argument(
        "--rotate",
        action="store_true",
        help="replace the generated certificate with a new one (refused while assets "
        "pin the current one, unless --force)",
    )
    tls.add_argument(
        "--force", action="store_true", help="rotate even though assets pin the certificate"
    )
    tls.add_argument("--json", action="store_true", help="print the facts as JSON")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parser().parse_args(argv)
    if arguments.command == "check":
        try:
            version = InstallerVersion.parse(arguments.installer_version)
        except ValueError as e:
            parser().error(f"--installer-version: {e}")
        if arguments.json:
            raise SystemExit(check_json(arguments, version, sys.stdout))
        answers = check(Path(arguments.answers), version, arguments.product, sys.stdout)
        pinning = check_pinning(arguments.assets, arguments.state, arguments.tls_cert, sys.stdout)
        raise SystemExit(answers or pinning)
    if arguments.command == "simulate":
        try:
            body, accept = request_for(arguments)
        except ValueError as e:
            parser().error(str(e))
        react(lambda reactor: ensureDeferred(_simulate(reactor, arguments, body, accept)))
    if arguments.command == "tls":
        raise SystemExit(tls(arguments, datetime.now(UTC), sys.stdout))
    if arguments.command == "state":
        raise SystemExit(state(arguments, sys.stdin, sys.stdout))
    if arguments.command == "status":
        try:
            arguments.mac = MacAddress.parse(arguments.mac)
        except MacAddressError:
            # Not a MAC address: a serial number, UUID or model the server looks up.
            if not any(key(arguments.mac) for key in (uuid_key, serial_key, model_key)):
                parser().error(
                    f"{describe(arguments.mac)} is not a MAC address, serial number, UUID or model"
                )
    elif "mac" in arguments:
        try:
            arguments.mac = MacAddress.parse(arguments.mac)
        except MacAddressError:
            parser().error(f"{describe(arguments.mac)} is not a MAC address")
    react(lambda reactor: ensureDeferred(_run(reactor, arguments, sys.stdout)))


async def _run(reactor: Any, arguments: argparse.Namespace, out: TextIO) -> None:
    try:
        await run(reactor, arguments, out)
    except CommandError as e:
        print(f"pxe-pilot: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


async def _simulate(
    reactor: Any, arguments: argparse.Namespace, body: bytes, accept: str | None
) -> None:
    # Not being able to say (exit 2) is not the same answer as "it would not be
    # served" (exit 1): a CI job must not mistake an unreachable server for a verdict.
    try:
        if arguments.answers is not None:
            report = await offline(reactor, arguments, body, accept)
        else:
            client = Client(
                arguments.url,
                arguments.admin_token,
                reactor,
                _pin_for(arguments.cert_fingerprint),
            )
            report = await client.call("POST", server_path(accept), body)
    except (CommandError, SimulationUnavailable) as e:
        print(f"pxe-pilot: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(show(report, arguments.json, sys.stdout))


async def run(reactor: Any, arguments: argparse.Namespace, out: TextIO) -> None:
    """
    Do one command, printing to C{out}.

    @raise CommandError: when it cannot be done.
    """
    client = Client(
        arguments.url, arguments.admin_token, reactor, _pin_for(arguments.cert_fingerprint)
    )
    if arguments.command == "hosts":
        report = await every_host(client)
        if arguments.json:
            print(json.dumps(report, indent=2), file=out)
        else:
            print_hosts(report.get("known_hosts", []), time.time(), out)
    elif arguments.command == "status":
        # A serial number or model may hold characters a URL path cannot.
        named = urllib.parse.quote(str(arguments.mac), safe=":")
        report = await client.call("GET", f"hosts/{named}/status")
        if arguments.json:
            print(json.dumps(report, indent=2), file=out)
        else:
            print_status(report, time.time(), out)
    else:
        report = await client.call("POST", f"hosts/{arguments.mac}/reinstall")
        print(
            f"{report['mac']} re-armed: its next network boot installs (state {report['state']})",
            file=out,
        )


async def every_host(client: Client) -> dict[str, Any]:
    """
    C{GET /hosts}, following its pages: the first page's report with every host in
    C{known_hosts}.

    @raise CommandError: when a page cannot be had, or the pages do not move on.
    """
    report = await client.call("GET", "hosts")
    hosts = list(report.get("known_hosts", []))
    after = report.pop("next", None)
    while after is not None:
        page = await client.call("GET", f"hosts?after={quote(str(after), safe=':')}")
        hosts.extend(page.get("known_hosts", []))
        following = page.get("next")
        if following is not None and str(following) <= str(after):
            raise CommandError(f"the server's pages of hosts do not move on after {after}")
        after = following
    report["known_hosts"] = hosts
    return report


def _uri(url: str) -> bytes:
    """
    C{url} as an HTTP request names it: a host name in its ASCII (IDNA) form, and an IPv6
    address as it is, in brackets (hyperlink, and so treq, would run it through IDNA and
    fail).

    @raise ValueError: when it is no URL.
    """
    parsed = EncodedURL.from_text(url)
    if ":" in parsed.host:
        return parsed.to_text().encode("ascii")
    return parsed.to_uri().to_text().encode("ascii")


class Client:
    """
    Calls a pxe-pilot's JSON routes.
    """

    def __init__(
        self, url: str, token: str | None, reactor: Any, pinned: str | None = None
    ) -> None:
        self._base = url if url.endswith("/") else url + "/"
        self._token = token
        self._reactor = reactor
        # Over HTTPS, pxe-pilot's own certificate is usually self-signed: trust it by
        # its fingerprint, as the installer does, rather than by a CA.
        self._agent = (
            Agent(reactor, contextFactory=PinnedPolicy(pinned))
            if pinned and self._base.startswith("https://")
            else Agent(reactor)
        )

    async def call(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        url = self._base + path
        # The header says the request is no browser's form (a state change asks for it
        # of Basic credentials; it costs bearer requests nothing).
        headers = Headers({b"accept": [b"application/json"], b"x-pxe-pilot-request": [b"1"]})
        if body is not None:
            headers.setRawHeaders(b"content-type", [b"application/json"])
        if self._token:
            headers.setRawHeaders(b"authorization", [f"Bearer {self._token}".encode()])
        try:
            producer = FileBodyProducer(BytesIO(body)) if body is not None else None
            asked = self._agent.request(method.encode("ascii"), _uri(url), headers, producer)
            asked.addTimeout(TIMEOUT, self._reactor)
            response = await asked
            body = await treq.content(response)
        except Exception as e:
            raise CommandError(f"cannot reach pxe-pilot at {self._base}: {_reason(e)}") from None
        try:
            report = json.loads(body)
        except ValueError:
            report = None
        if not isinstance(report, dict):
            raise CommandError(
                f"{url} answered {response.code} with something that is not pxe-pilot's JSON"
            )
        if response.code == 401:
            raise CommandError(
                "the server needs its admin token: --admin-token or PXE_PILOT_ADMIN_TOKEN"
            )
        if response.code >= 400:
            raise CommandError(f"{report.get('error', 'failed')} ({response.code})")
        return report


def _pin_for(given: str | None) -> str | None:
    """
    The fingerprint to trust over HTTPS: the one given, else that of the certificate
    pxe-pilot made in its state directory when this machine has it.

    @raise CommandError: for a fingerprint that is not one.
    """
    if given:
        try:
            return normalise_fingerprint(given)
        except ValueError as e:
            raise CommandError(f"--cert-fingerprint: {e}") from None
    state = Path(os.environ.get("PXE_PILOT_STATE_DIR") or "state")
    certificate = generated_paths(state)[0]
    try:
        return certificate_facts(certificate).fingerprint
    except (OSError, TLSSetupError):
        return None


def _reason(error: Exception) -> str:
    inner = getattr(error, "reasons", None)
    if inner:
        error = inner[0].value
    return str(error) or type(error).__name__


def print_hosts(hosts: list[dict[str, Any]], now: float, out: TextIO) -> None:
    if not hosts:
        print("no host has network-booted yet", file=out)
        return
    rows = [("MAC", "STATE", "SINCE", "PRODUCT", "FQDN", "ADDRESS", "LAST EVENT")]
    for host in sorted(hosts, key=lambda h: h["last_event"]["at"], reverse=True):
        installation = host.get("installation") or {}
        product = " ".join(
            filter(
                None,
                [installation.get("product") or host.get("product"), installation.get("version")],
            )
        )
        rows.append(
            (
                host["mac"],
                host["state"],
                age(now - host["since"]),
                product or "-",
                installation.get("fqdn") or "-",
                installation.get("address") or "-",
                host["last_event"]["summary"],
            )
        )
    _table(rows, out)


def print_status(host: dict[str, Any], now: float, out: TextIO) -> None:
    installation = host.get("installation") or {}
    print(f"{host['mac']}: {host['state']} since {age(now - host['since'])}", file=out)
    for label, value in (
        ("serial", host.get("serial")),
        ("uuid", host.get("uuid")),
        ("model", host.get("model")),
        ("answer", host.get("answer")),
        ("rule", host.get("rule")),
        ("fqdn", installation.get("fqdn")),
        ("address", installation.get("address")),
        ("installed", installation.get("version")),
    ):
        if value:
            print(f"  {label}: {value}", file=out)
    for event in host.get("timeline", []):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["at"]))
        print(f"  {stamp}  {event['kind']:<16} {event['summary']}", file=out)


def _table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
