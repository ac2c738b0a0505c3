"""
The code blocks of the Markdown documentation, and what each is for.

Every shell and iPXE block carries a marker on the line above it, so that none is left
untested by accident:

    <!-- snippet: run -->             run with bash from the repository's root
    <!-- snippet: lab NAME -->        run by the end-to-end test that reads NAME
    <!-- snippet: answer X.Y -->      an answer file installer X.Y must accept
    <!-- snippet: not-run REASON -->  cannot run here (a live network, Docker, systemd)
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))
# Blocks that must carry a marker.
CHECKED_LANGUAGES = frozenset({"sh", "bash", "shell", "console", "ipxe"})

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<kind>[a-z-]+)\s*(?P<argument>.*?)\s*-->\s*$")


@attrs.frozen
class Snippet:
    """
    One fenced code block.

    @ivar document: The Markdown file.
    @ivar line: The 1-based line of its opening fence.
    @ivar language: The fence's first word, such as C{sh}.
    @ivar kind: Its marker's kind (C{run}, C{lab}, C{answer}, C{not-run}), or L{None}.
    @ivar argument: What follows the kind in the marker.
    @ivar text: Its content.
    """

    document: Path
    line: int
    language: str
    kind: str | None
    argument: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def snippets(documents: tuple[Path, ...] = DOCUMENTS) -> list[Snippet]:
    found: list[Snippet] = []
    for document in documents:
        lines = document.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            opening = _FENCE.match(lines[index])
            if opening is None:
                index += 1
                continue
            fence, indent = opening["fence"], len(opening["indent"])
            body: list[str] = []
            end = index + 1
            while end < len(lines) and not lines[end].strip().startswith(fence):
                body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
                end += 1
            previous = lines[index - 1] if index > 0 else ""
            marker = _MARKER.match(previous)
            found.append(
                Snippet(
                    document=document,
                    line=index + 1,
                    language=(opening["info"].split() or [""])[0],
                    kind=marker["kind"] if marker else None,
                    argument=marker["argument"] if marker else "",
                    text="\n".join(body) + "\n",
                )
            )
            index = end + 1
    return found


def lab(name: str) -> list[Snippet]:
    """
    The blocks marked C{lab NAME}, in document order.
    """
    chosen = [s for s in snippets() if s.kind == "lab" and s.argument == name]
    assert chosen, f"no documentation block is marked 'lab {name}'"
    return chosen
