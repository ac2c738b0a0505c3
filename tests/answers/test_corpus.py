"""
The conformance corpus: answer files whose verdict by each installer release was read
off the installer's source, each file checked at every release where an answer-format
rule changed (and the one before), with the verdict its header records.

A corpus file starts with comment lines, one field each:

    # rule: disk-selection                 the folder it is in
    # about: filter = {} beside a disk list
    # versions: 8.2-9.0.3 reject; 9.0.4- accept
    # key: disk-setup.filter               an error is about this key (or one in it)
    # product: pbs                         the product installed, when it matters
    # warns: the installer accepts this    where accepted, a warning says this
    # source: <path>:<line> @ <release> (<commit>): the fact that decides it

A span of C{versions} is C{LOW-HIGH}, C{LOW-} (to the newest release) or one release;
C{8.3} as the high end is 8.3.x, as the low end 8.3.0. Its verdict is C{accept} (no
error), C{reject} (an error), or C{unknown}: the installer's verdict could not be read
from its published source, so the checker must not refuse the file, and must warn.
"""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

from pxepilot.answers.lint import CHANGES, Finding, errors, lint
from pxepilot.answers.schema import SCHEMA, Key
from pxepilot.answers.versions import (
    LAST_PATCH,
    NEWEST,
    OLDEST,
    InstallerVersion,
    previous,
)

V = InstallerVersion.parse
CORPUS = Path(__file__).parent / "corpus"
VERDICTS = ("accept", "reject", "unknown")
NEWEST_RELEASE = V("9.2.7")


@frozen
class Span:
    low: InstallerVersion
    high: InstallerVersion
    verdict: str


@frozen
class Case:
    path: Path
    fields: dict[str, list[str]]
    spans: tuple[Span, ...]
    data: bytes

    @property
    def name(self) -> str:
        return str(self.path.relative_to(CORPUS))

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def verdict(self, version: InstallerVersion) -> str:
        [verdict] = [s.verdict for s in self.spans if s.low <= version <= s.high]
        return verdict


def _end(text: str, high: bool) -> InstallerVersion:
    version = V(text)
    if high and text.count(".") == 1:
        return InstallerVersion(version.major, version.minor, LAST_PATCH)
    return version


def parse_spans(text: str) -> tuple[Span, ...]:
    spans = []
    for part in text.split(";"):
        versions, verdict = part.split()
        assert verdict in VERDICTS, part
        low, dash, high = versions.partition("-")
        spans.append(
            Span(
                _end(low, False),
                NEWEST if dash and not high else _end(high or low, True),
                verdict,
            )
        )
    return tuple(spans)


def read_case(path: Path) -> Case:
    data = path.read_bytes()
    fields: dict[str, list[str]] = {}
    for line in data.decode().split("\n"):
        if not line.startswith("# "):
            break
        name, _, value = line[2:].partition(": ")
        fields.setdefault(name, []).append(value)
    return Case(path, fields, parse_spans(fields["versions"][0]), data)


CASES = [read_case(path) for path in sorted(CORPUS.rglob("*.toml"))]

# Every release where a rule changed, the one before it, and the newest release.
CHECKED = sorted(
    {OLDEST, NEWEST_RELEASE, NEWEST}
    | set(CHANGES)
    | {previous(change) for change in CHANGES if change > OLDEST}
    | {end for case in CASES for span in case.spans for end in (span.low, span.high)}
)


def test_the_corpus_is_read() -> None:
    assert len(CASES) > 100


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_header(case: Case) -> None:
    """
    Each file names its rule (its folder), what it shows, at least one source line, and
    a verdict for every installer from the oldest to the newest, once.
    """
    assert case.field("rule") == case.path.parent.name
    assert case.field("about")
    assert case.fields.get("source"), "no source line"
    assert all(" @ " in source and ": " in source for source in case.fields["source"])
    spans = case.spans
    assert spans[0].low == OLDEST and spans[-1].high == NEWEST
    for before, after in itertools.pairwise(spans):
        assert previous(after.low) == before.high, (before, after)
    if any(s.verdict == "reject" for s in spans):
        assert case.field("key") is not None, "a rejected file says which key is wrong"


def about_key(finding: Finding, key: str) -> bool:
    return finding.key == key or finding.key.startswith(f"{key}.")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verdict_at_every_release(case: Case) -> None:
    """
    At every release checked, the checker's verdict is the installer's.
    """
    product = case.field("product")
    key = case.field("key")
    warns = case.field("warns")
    wrong = []
    for version in CHECKED:
        verdict = case.verdict(version)
        found = lint(case.data, version, product)
        refused = errors(found)
        if verdict == "reject":
            ok = any(about_key(f, key or "") for f in refused)
        elif verdict == "unknown":
            ok = not refused and any(f.severity == "warning" for f in found)
        else:
            ok = not refused and (warns is None or any(warns in f.message for f in found))
        if not ok:
            wrong.append(f"{version}: expected {verdict}, got {found}")
    assert wrong == []


def rule_changes(rule: str) -> set[InstallerVersion]:
    """
    The releases at which a file of C{rule} changes verdict, from the first that accepts
    a file of it (a rule of keys 9.1 brought is no rule before 9.1).
    """
    cases = [c for c in CASES if c.path.parent.name == rule]
    lows = {s.low for c in cases for s in c.spans}
    first = min(s.low for c in cases for s in c.spans if s.verdict == "accept")
    return {first} | {low for low in lows if low > first}


@pytest.mark.parametrize("rule", sorted({c.path.parent.name for c in CASES}))
def test_every_rule_has_both_verdicts_at_each_change(rule: str) -> None:
    """
    Wherever a rule's verdicts change, and where it begins, the rule has a file the
    installer accepts and one it rejects.
    """
    cases = [c for c in CASES if c.path.parent.name == rule]
    for version in sorted(rule_changes(rule)):
        verdicts = {c.verdict(version) for c in cases}
        assert {"accept", "reject"} <= verdicts, (rule, str(version), verdicts)


def spelled_paths(table: dict[str, Any], spec: Key, path: str = "") -> set[str]:
    """
    The kebab-case paths of the schema's keys a document holds.
    """
    found = set()
    for name, value in table.items():
        key = spec.child(name)
        if key is None:
            continue
        where = f"{path}.{key.name}" if path else key.name
        found.add(where)
        if key.kind == "section" and isinstance(value, dict):
            found |= spelled_paths(value, key, where)
    return found


def newest_keys(spec: Key, path: str = "") -> set[str]:
    found = set()
    for key in spec.keys:
        if not key.spellings(NEWEST):
            continue
        where = f"{path}.{key.name}" if path else key.name
        found.add(where)
        found |= newest_keys(key, where)
    return found


def test_the_corpus_holds_every_key_of_the_newest_release() -> None:
    """
    Every key the newest installer knows is in at least one corpus file.
    """
    held: set[str] = set()
    for case in CASES:
        held |= spelled_paths(tomllib.loads(case.data.decode()), SCHEMA)
    assert newest_keys(SCHEMA) - held == set()
