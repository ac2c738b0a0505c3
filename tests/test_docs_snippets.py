"""
The documentation's code blocks: each shell and iPXE block is marked with how it is
tested, runnable blocks run, answer files pass the checker of their installer, and
every block the end-to-end recipes read exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pxepilot.answers.lint import errors, lint
from pxepilot.answers.versions import InstallerVersion
from tests.docs_snippets import CHECKED_LANGUAGES, ROOT, Snippet, snippets
from tests.e2e.recipes import LAB_BLOCKS

KINDS = frozenset({"run", "lab", "answer", "not-run"})
ALL = snippets()


def ids(chosen: list[Snippet]) -> list[str]:
    return [s.where for s in chosen]


def test_every_shell_and_ipxe_block_says_how_it_is_tested() -> None:
    """
    No shell or iPXE block goes untested by accident: each is marked run, lab, answer,
    or not-run with a reason.
    """
    unmarked = [s.where for s in ALL if s.language in CHECKED_LANGUAGES and s.kind is None]
    assert unmarked == []
    unknown = [s.where for s in ALL if s.kind is not None and s.kind not in KINDS]
    assert unknown == []
    reasonless = [s.where for s in ALL if s.kind == "not-run" and len(s.argument) < 8]
    assert reasonless == []


RUNNABLE = [s for s in ALL if s.kind == "run"]


@pytest.mark.parametrize("snippet", RUNNABLE, ids=ids(RUNNABLE))
def test_runnable_blocks_run(snippet: Snippet, tmp_path: Path) -> None:
    """
    A block marked run succeeds with bash from the repository's root, with the
    project's commands on the path.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PXE_PILOT_")}
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    environ["HOME"] = str(tmp_path)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", snippet.text],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{snippet.where}\n{done.stdout}\n{done.stderr}"


ANSWERS = [s for s in ALL if s.kind == "answer"]


@pytest.mark.parametrize("snippet", ANSWERS, ids=ids(ANSWERS))
def test_answer_files_in_the_docs_are_accepted(snippet: Snippet) -> None:
    """
    Every answer file the documentation shows is one its installer version accepts.
    """
    version = InstallerVersion.parse(snippet.argument)
    found = errors(lint(snippet.text.encode(), version))
    assert found == [], "\n".join(f.describe(snippet.where) for f in found)


def test_lab_blocks_are_the_ones_the_recipes_read() -> None:
    """
    The end-to-end recipes read exactly the blocks marked for them: a renamed or
    removed block fails here, before any machine boots.
    """
    marked = {s.argument for s in ALL if s.kind == "lab"}
    assert marked == set(LAB_BLOCKS)


def test_links_between_documents_lead_somewhere() -> None:
    """
    Every relative link in the documentation names a file that exists.
    """
    broken = []
    for document in (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))):
        text = document.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (document.parent / target).exists():
                broken.append(f"{document.relative_to(ROOT)}: {target}")
    assert broken == []
