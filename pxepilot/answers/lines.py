"""
Where keys are in an answer file's text, so that a finding can name its line.

C{tomllib} keeps no positions; this is a line-by-line reading of the TOML that is good
enough to point at a key, not a parser.
"""

from __future__ import annotations

import re
import tomllib

_BASIC_STRING = r'"(?:[^"\\]|\\.)*"'
_LITERAL_STRING = r"'[^']*'"
_KEY_PART = rf"{_BASIC_STRING}|{_LITERAL_STRING}|[A-Za-z0-9_-]+"
_DOTTED_KEY = rf"(?:{_KEY_PART})(?:\s*\.\s*(?:{_KEY_PART}))*"
_HEADER = re.compile(rf"\[\[?\s*({_DOTTED_KEY})\s*\]")
_ASSIGNMENT = re.compile(rf"({_DOTTED_KEY})\s*=\s*(.*)")


def key_lines(text: str) -> dict[str, int]:
    """
    The line of every key and table header in a TOML document, by dotted path (first
    occurrence). Good enough for pointing at a line: quoted keys are unquoted, and
    lines inside multi-line strings and arrays are skipped.
    """
    lines: dict[str, int] = {}
    table: list[str] = []
    in_string: str | None = None
    depth = 0
    # TOML ends lines at "\n" only; str.splitlines() would also split at characters
    # such as U+2028 that strings and quoted keys may hold.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if in_string is not None:
            if in_string in line:
                in_string = None
            continue
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            # [a.b.c] defines a and a.b too, when no earlier line did.
            for end in range(1, len(table) + 1):
                lines.setdefault(".".join(table[:end]), number)
            continue
        assignment = _ASSIGNMENT.match(line)
        if not assignment:
            continue
        path = [*table, *_split_key(assignment.group(1))]
        for end in range(len(table) + 1, len(path) + 1):
            lines.setdefault(".".join(path[:end]), number)
        value = assignment.group(2)
        for quote in ('"""', "'''"):
            if value.startswith(quote) and value.count(quote) == 1:
                in_string = quote
        if value.startswith("["):
            depth = _bracket_balance(value)
    return lines


def _split_key(text: str) -> list[str]:
    return [_unquote(part) for part in re.findall(_KEY_PART, text)]


def _unquote(part: str) -> str:
    if part.startswith("'"):
        return part[1:-1]
    if part.startswith('"'):
        # Escapes as TOML reads them (\", \\, \t, \u00e9, ...).
        try:
            return str(tomllib.loads(f"k = {part}")["k"])
        except tomllib.TOMLDecodeError:
            return part[1:-1]
    return part


def _bracket_balance(text: str) -> int:
    # Strings first: a '#' or a bracket in a string is neither a comment nor a bracket.
    without_strings = re.sub(rf"{_BASIC_STRING}|{_LITERAL_STRING}", "", text).split("#")[0]
    return without_strings.count("[") - without_strings.count("]")
