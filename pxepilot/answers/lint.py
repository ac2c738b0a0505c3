"""
Whether the Proxmox installer of a given version accepts an answer file.

The installer parses answers strictly (every table denies unknown fields) and then
checks locale, disks, e-mail, passwords, first-boot and network settings; one finding
and the machine stops in a debug shell in the data centre. This module mirrors those
rules per installer version, in pure Python, and says for each finding the file's line,
the key, and what to write instead: it walks the schema (L{pxepilot.answers.schema}),
then checks the rules across keys (L{pxepilot.answers.rules}).

An error is something the installer of that version refuses, and nothing else; what it
accepts but pxe-pilot would rather mention is a warning that says "the installer accepts
this", and what only the machine's network decides one that says "depends on the
network".
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from attrs import frozen

from pxepilot.answers.check import ParsedAnswer
from pxepilot.answers.lines import key_lines
from pxepilot.answers.recent import Recent
from pxepilot.answers.rules import apply_rules
from pxepilot.answers.schema import SCHEMA, Key
from pxepilot.answers.values import Context, Note, Problem, type_problem
from pxepilot.answers.versions import (
    Gates,
    InstallerVersion,
    VersionRange,
    label,
    previous,
    release_points,
    span_text,
)

Severity = Literal["error", "warning"]


@frozen
class Finding:
    """
    One reason an installer would reject (error) or complain about (warning) a file.

    @ivar key: The key's path, such as C{global.root-password}; empty for the file.
    @ivar line: 1-based line of the key, when it is in the file.
    @ivar message: What is wrong.
    @ivar fix: What to write instead.
    """

    severity: Severity
    key: str
    message: str
    fix: str = ""
    line: int | None = None

    def describe(self, name: str) -> str:
        where = f"{name}:{self.line}" if self.line else name
        key = f" [{self.key}]" if self.key else ""
        fix = f"; {self.fix}" if self.fix else ""
        return f"{where}: {self.severity}:{key} {self.message}{fix}"

    def as_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "key": self.key,
            "line": self.line,
            "message": self.message,
            "fix": self.fix,
        }


class _Checker:
    def __init__(self, context: Context, lines: Mapping[str, int]) -> None:
        self.context = context
        self.lines = lines
        self.findings: list[Finding] = []
        # Every known key the file sets, valid or not, by kebab-case path.
        self.present: set[str] = set()
        # How the file spells each of them.
        self.spelled: dict[str, str] = {}

    def add(
        self, severity: Severity, path: str, message: str, fix: str = "", written: str = ""
    ) -> None:
        """
        A finding about C{path} (kebab-case, as findings are compared across versions),
        at the line of C{written} (the key as the file spells it) or of C{path}.
        """
        written = written or self.spelled.get(path, path)
        line = self.lines.get(written) or self.lines.get(path)
        parent = written
        while line is None and "." in parent:
            parent = parent.rsplit(".", 1)[0]
            line = self.lines.get(parent)
        self.findings.append(Finding(severity, path, message, fix, line))

    def section(self, spec: Key, table: dict[str, Any], path: str) -> dict[str, Any]:
        """
        Check a table's keys and values; the values by kebab-case name.
        """
        version = self.context.version
        values: dict[str, Any] = {}
        # Keys given so far, by kebab-case name, whether their values were valid or not.
        given: set[str] = set()
        for name, value in table.items():
            written = f"{self.spelled.get(path, path)}.{name}" if path else name
            key = spec.child(name)
            if key is None:
                self.add("error", written, "unknown key", self._suggest(spec, name))
                continue
            where = f"{path}.{key.name}" if path else key.name
            self.present.add(where)
            self.spelled[where] = written
            spellings = key.spellings(version)
            if not spellings:
                self.add(
                    "error",
                    where,
                    f"needs installer {key.since} or later",
                    "remove it, or install with a newer ISO",
                    written,
                )
                continue
            if name not in spellings:
                other = next(iter(spellings))
                self.add(
                    "error",
                    where,
                    f"installer {label(version)} does not know the spelling {name!r}"
                    if name == key.name
                    else f"no installer knows the spelling {name!r}",
                    f"write {other!r}",
                    written,
                )
                continue
            if spellings[name] == "deprecated":
                self.add(
                    "warning",
                    where,
                    f"{name!r}: snake_case is deprecated since installer {Gates.KEBAB_CASE}",
                    f"write {key.name!r}",
                    written,
                )
            if key.name in given:
                self.add(
                    "error", where, f"{key.name} is given twice (in both spellings)", "", written
                )
                continue
            given.add(key.name)
            problem: Problem = type_problem(key.kind, value)
            if problem is None and key.values is not None and value not in key.values:
                problem = f"{value!r} is not one of {', '.join(sorted(key.values))}"
                if value.lower() in key.values:
                    problem = problem, f"write {value.lower()!r}"
            if problem is None and key.check is not None:
                problem = key.check(value, self.context)
            if isinstance(problem, Note):
                self.add("warning", where, problem.message, problem.fix, written)
            elif problem is not None:
                message, fix = problem if isinstance(problem, tuple) else (problem, "")
                self.add("error", where, message, fix, written)
                continue
            values[key.name] = value
            if key.kind == "section":
                values[key.name] = self.section(key, value, where)
        return values

    def _suggest(self, spec: Key, name: str) -> str:
        known = [key.name for key in spec.keys if key.spellings(self.context.version)]
        spelled = [
            spelling for key in spec.keys for spelling in key.spellings(self.context.version)
        ]
        close = difflib.get_close_matches(name.replace("_", "-"), known, n=1, cutoff=0.6)
        if close:
            right = next((s for s in spelled if s.replace("_", "-") == close[0]), close[0])
            return f"did you mean {right!r}?"
        where = f"[{spec.name}]" if spec.name else "the top level"
        return f"{where} takes {', '.join(spelled)}" if spelled else ""

    def required(self, path: str, *names: str) -> None:
        for name in names:
            where = f"{path}.{name}" if path else name
            if where not in self.present:
                self.add("error", where, "is required")


def lint_document(document: Mapping[str, Any], text: str, context: Context) -> list[Finding]:
    """
    The findings for a parsed answer file, as installer C{context.version} would see it.
    """
    return _findings(document, key_lines(text), context)


def _findings(
    document: Mapping[str, Any], lines: Mapping[str, int], context: Context
) -> list[Finding]:
    """
    The findings for a parsed answer file whose keys are on C{lines}.
    """
    checker = _Checker(context, lines)
    top = checker.section(SCHEMA, dict(document), "")
    apply_rules(checker, top, document)
    return sorted(checker.findings, key=lambda f: (f.line or 0, f.severity != "error", f.key))


def _parse(answer: bytes | ParsedAnswer) -> ParsedAnswer | Finding:
    """
    C{answer} parsed, unless it already is; or the one finding for bytes that are not
    UTF-8 TOML.

    Unlike L{pxepilot.answers.check.read_answer}, an empty document is parsed (and gets
    the findings of its missing keys) and a byte-order mark is a TOML error.
    """
    if isinstance(answer, ParsedAnswer):
        return answer
    try:
        text = answer.decode("utf-8")
        document = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError, RecursionError) as e:
        return Finding("error", "", f"not a TOML answer file: {e}")
    return ParsedAnswer(answer, text, document)


def lint(
    answer: bytes | ParsedAnswer, version: InstallerVersion, product: str | None = None
) -> list[Finding]:
    """
    The findings for an answer file: bytes that are not UTF-8 TOML give one.

    @param answer: The file's bytes, or the file already parsed (which is not parsed
        again).
    """
    parsed = _parse(answer)
    if isinstance(parsed, Finding):
        return [parsed]
    return lint_document(parsed.document, parsed.text, Context(version, product))


# Every release at which what the installer accepts changed: a range is checked once
# for each stretch between two of them.
CHANGES = tuple(sorted(set(Gates.all()) | SCHEMA.changes()))


def lint_range(
    answer: bytes | ParsedAnswer, versions: VersionRange, product: str | None = None
) -> list[Finding]:
    """
    The findings for every installer in C{versions}, checked at each release inside the
    range where what the installer accepts changed: a problem every one of them rejects
    is an error; one only some reject is a warning saying which, unless each of them
    rejects the file for some reason, when those are errors.

    @param answer: The file's bytes, parsed once for every release; or the file already
        parsed (which is not parsed again).
    """
    parsed = _parse(answer)
    if isinstance(parsed, Finding):
        return [parsed]
    key = (parsed.text, versions, product)
    return list(_recent.get(key, lambda _: tuple(_lint_parsed(parsed, versions, product))))


CheckKey = tuple[str, VersionRange, str | None]


def remembered_checks() -> Recent[CheckKey, tuple[Finding, ...]]:
    """
    An empty memory of findings, by the file's text, the versions and the product.
    """
    return Recent(_RECENT_CHECKS, _RECENT_TEXT, lambda key: len(key[0]))


# The findings depend only on the file's text, the versions and the product, and a wide
# range is checked at a score of releases, milliseconds of the reactor's time: a rack of
# installers asking for one default.toml, or each for its own host file, pays for each
# file once, not once per request. Bounded in entries and in the text they hold.
_RECENT_CHECKS = 1024
_RECENT_TEXT = 16 << 20
_recent = remembered_checks()


def _lint_parsed(
    parsed: ParsedAnswer, versions: VersionRange, product: str | None
) -> list[Finding]:
    lines = key_lines(parsed.text)
    points = release_points(versions, CHANGES)
    checked = [_findings(parsed.document, lines, Context(p, product)) for p in points]
    if len(checked) == 1:
        return checked[0]
    # An error is the same problem at two releases when it is about the same key on the
    # same line, however each words it; the oldest release's wording and fix are kept
    # (snake_case spellings, which it suggests, work in all of 8.2 to 9.x).
    rejecting: dict[tuple[str, int | None], tuple[Finding, list[int]]] = {}
    merged: list[Finding] = []
    for index, findings in enumerate(checked):
        for finding in findings:
            if finding.severity == "error":
                where = rejecting.setdefault((finding.key, finding.line), (finding, []))[1]
                if not where or where[-1] != index:
                    where.append(index)
            elif all(_problem(f) != _problem(finding) for f in merged):
                merged.append(finding)
    common = [f for f, where in rejecting.values() if len(where) == len(points)]
    everywhere = all(errors(findings) for findings in checked)
    severity: Severity = "error" if everywhere and not common else "warning"
    merged += common
    for finding, where in rejecting.values():
        if len(where) == len(points):
            continue
        for low, high in _stretches(where, points, versions.high):
            merged.append(
                Finding(
                    severity,
                    finding.key,
                    f"installer {span_text(low, high)} would reject it: {finding.message}",
                    finding.fix,
                    finding.line,
                )
            )
    return sorted(merged, key=lambda f: (f.line or 0, f.severity != "error", f.key))


def _stretches(
    where: list[int], points: list[InstallerVersion], high: InstallerVersion
) -> list[tuple[InstallerVersion, InstallerVersion]]:
    """
    The installers the releases C{points[i]} for i in C{where} stand for, joined into
    stretches: each runs to the last installer before the next release checked.
    """
    found: list[tuple[InstallerVersion, InstallerVersion]] = []
    for index in where:
        end = previous(points[index + 1]) if index + 1 < len(points) else high
        if found and found[-1][1] == previous(points[index]):
            found[-1] = (found[-1][0], end)
        else:
            found.append((points[index], end))
    return found


def _problem(finding: Finding) -> tuple[str, str, str, int | None]:
    """
    What a finding says is wrong, and where, without what to do about it.
    """
    return finding.severity, finding.key, finding.message, finding.line


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
