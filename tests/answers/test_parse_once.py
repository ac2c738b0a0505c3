"""
An answer file is parsed once per request: the checker takes the file as
L{read_answer} parsed it, and a version range's two ends share one parse and one
reading of key lines; the findings are the same as for the file's bytes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from pxepilot.answers import lint as lint_module
from pxepilot.answers.check import ParsedAnswer, read_answer
from pxepilot.answers.lines import key_lines
from pxepilot.answers.lint import lint, lint_range
from pxepilot.answers.versions import InstallerVersion, VersionRange
from tests.answers.strategies import answer_documents
from tests.answers.test_lint import BTRFS, EXT4, MINIMAL, SNAKE, STATIC_NETWORK, with_section
from tests.conftest import MINIMAL_ANSWER

V = InstallerVersion.parse

# From 8.2 to 9.2: the two ends disagree on spellings, [network] source and more, so
# both ends are checked in full.
WIDE = VersionRange(V("8.2"), V("9.2.99"))

EXAMPLES = Path(__file__).parents[2] / "examples" / "answers"

# The answers of the checker's tests and the shipped examples, as bytes.
ANSWERS = {
    "minimal": MINIMAL.encode(),
    "snake": SNAKE.encode(),
    "static-network": with_section(MINIMAL, STATIC_NETWORK).encode(),
    "ext4": with_section(MINIMAL, EXT4).encode(),
    "btrfs": with_section(MINIMAL, BTRFS).encode(),
    "conftest-minimal": MINIMAL_ANSWER,
    **{
        str(path.relative_to(EXAMPLES)): path.read_bytes()
        for path in sorted(EXAMPLES.rglob("*.toml"))
    },
}

RANGES = [
    WIDE,
    VersionRange(V("8.3"), V("9.1.99")),
    VersionRange(V("9.2"), V("9.2.99")),
    VersionRange(V("8.4.3"), V("8.4.3")),
]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """
    The text of every C{tomllib.loads} call from now on, whichever module makes it.
    """
    calls: list[str] = []
    loads = tomllib.loads

    def counting(text: str, **kwargs: Any) -> dict[str, Any]:
        calls.append(text)
        return loads(text, **kwargs)

    monkeypatch.setattr(tomllib, "loads", counting)
    return calls


def parsed(data: bytes) -> ParsedAnswer:
    found = read_answer(data)
    assert isinstance(found, ParsedAnswer), found
    return found


def test_read_answer_keeps_the_bytes_the_text_and_the_document() -> None:
    """
    A servable file is read into its bytes, its text and its TOML document.
    """
    assert parsed(MINIMAL.encode()) == ParsedAnswer(
        MINIMAL.encode(), MINIMAL, tomllib.loads(MINIMAL)
    )


def test_parsed_answer_is_not_parsed_again(parses: list[str]) -> None:
    """
    A range of a parsed file parses nothing, at either end; nor does one version.
    """
    answer = parsed(MINIMAL.encode())
    del parses[:]
    lint_range(answer, WIDE)
    lint(answer, V("9.2"))
    assert parses == []


def test_bytes_are_parsed_once_for_a_range(parses: list[str]) -> None:
    """
    A range of a file's bytes parses them once, not once for each end.
    """
    lint_range(MINIMAL.encode(), WIDE)
    assert parses == [MINIMAL]


def test_key_lines_are_read_once_for_a_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Both ends of a range point at the lines of one reading of the text.
    """
    calls: list[str] = []

    def counting(text: str) -> dict[str, int]:
        calls.append(text)
        return key_lines(text)

    monkeypatch.setattr(lint_module, "key_lines", counting)
    lint_range(parsed(MINIMAL.encode()), WIDE)
    assert calls == [MINIMAL]


@pytest.mark.parametrize("versions", RANGES, ids=str)
@pytest.mark.parametrize("name", list(ANSWERS))
def test_same_findings_for_bytes_and_parsed(name: str, versions: VersionRange) -> None:
    """
    A file checked as bytes or as parsed has the same findings, at each end and over
    the range.
    """
    data = ANSWERS[name]
    answer = parsed(data)
    assert lint_range(answer, versions) == lint_range(data, versions)
    for end in (versions.low, versions.high):
        for product in (None, "pbs"):
            assert lint(answer, end, product) == lint(data, end, product)


def test_empty_parsed_answer_is_checked_like_empty_bytes() -> None:
    """
    An empty document (which L{read_answer} refuses, but the checker takes) has the
    findings of its missing sections either way.
    """
    empty = ParsedAnswer(b"", "", {})
    assert lint_range(empty, WIDE) == lint_range(b"", WIDE)
    assert lint(empty, V("8.2")) == lint(b"", V("8.2"))


@settings(derandomize=True, database=None, max_examples=200)
@given(answer_documents(), st.sampled_from(RANGES), st.sampled_from([None, "pve", "pmg"]))
def test_any_document_same_findings_for_bytes_and_parsed(
    drawn: tuple[InstallerVersion, dict[str, Any]],
    versions: VersionRange,
    product: str | None,
) -> None:
    """
    Whatever the document, parsing it first changes none of the findings.
    """
    version, document = drawn
    text = tomli_w.dumps(document)
    answer = ParsedAnswer(text.encode(), text, tomllib.loads(text))
    assert lint(answer, version, product) == lint(text.encode(), version, product)
    assert lint_range(answer, versions, product) == lint_range(text.encode(), versions, product)
