"""
C{pxe-pilot check}: every answer file checked as an installer version would check it,
without a server; as lines for a person, or as one JSON document for a CI job
(C{--json}). Also the assets whose installers pin another certificate than pxe-pilot's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any, TextIO

from attrs import frozen

from pxepilot.answers.check import check_answer
from pxepilot.answers.files import (
    DEFAULT_NAME,
    DEFAULT_TEMPLATE,
    HOSTS_DIR,
    AnswersUnavailable,
    DirectoryAnswerFiles,
)
from pxepilot.answers.lines import key_lines
from pxepilot.answers.lint import Finding, errors, lint_range
from pxepilot.answers.template import INVENTORY_NAME, TEMPLATE_SUFFIX, TemplateError, renderings
from pxepilot.answers.versions import InstallerVersion, VersionRange
from pxepilot.boot.health import AssetsHealth
from pxepilot.tls import TLSSetupError
from pxepilot.tls_command import TLSCommandError, certificate_report


@frozen
class CheckedFile:
    """
    One answer file as C{pxe-pilot check} found it.

    @ivar name: Its name in the answers directory (C{default.toml}, C{hosts/<file>}).
    @ivar path: Where it is.
    @ivar findings: What the installer would find in it.
    @ivar password: The key and line of a root password in plain text, if any.
    @ivar unreadable: Why it cannot be read, if it cannot.
    """

    name: str
    path: Path
    findings: tuple[Finding, ...] = ()
    password: tuple[str, int | None] | None = None
    unreadable: str | None = None

    @property
    def rejected(self) -> bool:
        return self.unreadable is not None or bool(errors(self.findings))


class CheckError(Exception):
    """
    There are no answer files to check; the message says why.
    """


def check_files(
    path: Path, versions: VersionRange, product: str | None
) -> tuple[list[str], list[CheckedFile]]:
    """
    Every answer file in a directory (or the one file), checked for C{versions}; and
    the names in C{hosts/} that are not MAC addresses.

    @raise CheckError: when the directory cannot be read or holds no answer file.
    """
    unrecognised: list[str] = []
    if path.is_file():
        named = [(path.name, path)]
    else:
        try:
            listing = DirectoryAnswerFiles(path).listing()
        except AnswersUnavailable as e:
            raise CheckError(f"{path}: {e}") from None
        names = (
            ([DEFAULT_NAME] if listing.default_present else [])
            + ([DEFAULT_TEMPLATE] if listing.default_template_present else [])
            + [f.name for f in listing.host_files]
            + [f.name for f in listing.identity_files if f.key is not None]
        )
        named = [(name, path / name) for name in names]
        unrecognised = list(listing.unrecognised) + [
            f.name for f in listing.useless_identity_files()
        ]
    checked = []
    for name, file in named:
        try:
            data = file.read_bytes()
        except OSError as e:
            checked.append(CheckedFile(name, file, unreadable=e.strerror or str(e)))
            continue
        if name.endswith(TEMPLATE_SUFFIX):
            checked += _check_template(name, file, data, path / INVENTORY_NAME, versions, product)
        else:
            checked.append(_check_one(name, file, data, versions, product))
    return unrecognised, checked


def _check_one(
    name: str, file: Path, data: bytes, versions: VersionRange, product: str | None
) -> CheckedFile:
    problem = check_answer(data)
    if problem is not None:
        finding = Finding("error", "", problem.message, line=problem.line)
        return CheckedFile(name, file, (finding,))
    findings = tuple(lint_range(data, versions, product))
    return CheckedFile(name, file, findings, plain_password(data))


def _check_template(
    name: str,
    file: Path,
    data: bytes,
    inventory: Path,
    versions: VersionRange,
    product: str | None,
) -> list[CheckedFile]:
    """
    A template checked as rendered for every inventory host, one result per host.
    """
    try:
        made = renderings(data, inventory.read_bytes())
    except OSError as e:
        return [CheckedFile(name, file, unreadable=f"{INVENTORY_NAME}: {e.strerror or e}")]
    except TemplateError as e:
        return [CheckedFile(name, file, (Finding("error", "", str(e), line=e.line),))]
    if not made:
        return [CheckedFile(name, file, unreadable=f"{INVENTORY_NAME} lists no [[host]]")]
    checked = []
    for host, rendered in made:
        named = f"{name} for {host}"
        if isinstance(rendered, TemplateError):
            finding = Finding("error", "", str(rendered), line=rendered.line)
            checked.append(CheckedFile(named, file, (finding,)))
        else:
            checked.append(_check_one(named, file, rendered, versions, product))
    return checked


def never_served(name: str) -> str:
    """
    Why a file in the answers directory is never served.
    """
    if name.startswith(f"{HOSTS_DIR}/"):
        return "the file name is not a MAC address"
    return "the file name is a firmware placeholder or malformed, which names no machine"


def check(path: Path, version: InstallerVersion, product: str | None, out: TextIO) -> int:
    """
    Print every finding in an answers directory (or one file); the exit status: 1 when
    an installer would reject a file or the files cannot be read, else 0.
    """
    versions = VersionRange.exactly(version)
    try:
        unrecognised, checked = check_files(path, versions, product)
    except CheckError as e:
        print(f"pxe-pilot: error: {e}", file=sys.stderr)
        return 1
    for name in unrecognised:
        print(f"{name}: warning: {never_served(name)}; never served", file=out)
    if not checked:
        print(f"pxe-pilot: error: {path}: no default.toml and no hosts/*.toml", file=sys.stderr)
        return 1
    rejected = warned = 0
    for item in checked:
        if item.unreadable is not None:
            print(f"{item.name}: error: cannot be read: {item.unreadable}", file=out)
        for finding in item.findings:
            print(finding.describe(item.name), file=out)
        if item.password is not None:
            print(password_line(item.name, *item.password), file=out)
        rejected += item.rejected
        warned += len(item.findings) - len(errors(item.findings))
    verdict = f"{rejected} of {len(checked)} would be rejected" if rejected else "all accepted"
    print(
        f"{len(checked)} file{'s' if len(checked) != 1 else ''} checked for installer "
        f"{versions}: {verdict}, {warned} warning{'s' if warned != 1 else ''}",
        file=out,
    )
    return 1 if rejected else 0


def check_json(arguments: argparse.Namespace, version: InstallerVersion, out: TextIO) -> int:
    """
    C{pxe-pilot check --json}: the findings of every file and every mismatched asset as
    one JSON document, for a CI job to read; the exit status as without C{--json}.
    """
    versions = VersionRange.exactly(version)
    path = Path(arguments.answers)
    error = None
    unrecognised: list[str] = []
    checked: list[CheckedFile] = []
    try:
        unrecognised, checked = check_files(path, versions, arguments.product)
    except CheckError as e:
        error = str(e)
    if error is None and not checked:
        error = f"{path}: no default.toml and no hosts/*.toml"
    if error is not None:
        print(f"pxe-pilot: error: {error}", file=sys.stderr)
    assets = pinning_problems(arguments.assets, arguments.state, arguments.tls_cert)
    files = [_file_json(item, str(versions)) for item in checked]
    files += [
        {
            "file": name,
            "path": str(path / name),
            "accepted": True,
            "served": False,
            "findings": [
                {
                    "severity": "warning",
                    "key": "",
                    "line": None,
                    "message": f"{never_served(name)}; never served",
                    "fix": "name it after a MAC address, such as hosts/b0-7b-25-c1-0a-10.toml"
                    if name.startswith(f"{HOSTS_DIR}/")
                    else "name it after the machine's own serial number, UUID or model",
                    "versions": str(versions),
                }
            ],
        }
        for name in unrecognised
    ]
    rejected = sum(item.rejected for item in checked)
    report = {
        "installer_version": str(versions),
        "product": arguments.product,
        "accepted": error is None and not rejected and not assets,
        "error": error,
        "checked": len(checked),
        "rejected": rejected,
        "files": files,
        "assets": [{"path": str(where), "message": message} for where, message in assets],
    }
    print(json.dumps(report, indent=2), file=out)
    return 0 if report["accepted"] else 1


def _file_json(item: CheckedFile, versions: str) -> dict[str, Any]:
    findings = [{**finding.as_json(), "versions": versions} for finding in item.findings]
    if item.unreadable is not None:
        findings.append(
            {
                "severity": "error",
                "key": "",
                "line": None,
                "message": f"cannot be read: {item.unreadable}",
                "fix": "",
                "versions": versions,
            }
        )
    if item.password is not None:
        key, line = item.password
        findings.append(
            {
                "severity": "warning",
                "key": f"global.{key}",
                "line": line,
                "message": "the root password is in plain text: anyone who reads the file, "
                "or is served the answer, can log in as root",
                "fix": "write root-password-hashed instead, made with: openssl passwd -6",
                "versions": versions,
                "security": True,
            }
        )
    return {
        "file": item.name,
        "path": str(item.path),
        "accepted": not item.rejected,
        "served": True,
        "findings": findings,
    }


def plain_password(data: bytes) -> tuple[str, int | None] | None:
    """
    The key (as spelled) and line of a root password written in plain text, if any.
    """
    text = data.decode("utf-8")
    table = tomllib.loads(text).get("global")
    if not isinstance(table, dict):
        return None
    spelled = next((key for key in ("root-password", "root_password") if key in table), None)
    if spelled is None:
        return None
    return spelled, key_lines(text).get(f"global.{spelled}")


def password_line(name: str, spelled: str, line: int | None) -> str:
    """
    A warning for a root password written in plain text: the installer accepts it, but
    anyone who reads the file, or is served the answer, can log in as root.
    """
    where = f"{name}:{line}" if line else name
    return (
        f"{where}: security warning: [global.{spelled}] is the root password in plain text "
        "(the installer accepts it, and so can anyone who reads the file or is served the "
        "answer); write root-password-hashed instead, made with: openssl passwd -6 "
        "(or: mkpasswd -m sha-512)"
    )


def check_pinning(assets: Path, state: Path, tls_cert: Path | None, out: TextIO) -> int:
    """
    Print every asset whose installers pin another certificate than pxe-pilot's (they
    could not fetch an answer over HTTPS); the exit status: 1 if any does.
    """
    problems = pinning_problems(assets, state, tls_cert)
    for where, message in problems:
        print(f"{where}: error: {message}", file=out)
    return 1 if problems else 0


def pinning_problems(assets: Path, state: Path, tls_cert: Path | None) -> list[tuple[Path, str]]:
    """
    Every asset whose installers pin another certificate than pxe-pilot's, with why.
    Nothing is compared without an assets directory or a certificate.
    """
    if not assets.is_dir():
        return []
    try:
        served = certificate_report(tls_cert, state, assets)["fingerprint"]
    except (TLSCommandError, TLSSetupError):
        return []
    mismatched = (
        AssetsHealth(assets, served).check().details.get("pinned_to_another_certificate", [])
    )
    return [
        (
            assets / version,
            f"its installers pin another certificate than pxe-pilot's ({served}): they "
            "cannot fetch an answer over HTTPS; rebuild it with pxe-pilot-builder (it pins "
            "the running server by itself)",
        )
        for version in mismatched
    ]
