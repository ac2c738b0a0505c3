"""
Whether an answer file can be handed to the installer at all: UTF-8, TOML, not empty.

(What the installer of a given version accepts inside the TOML is a deeper check; it
takes the file as read here, so that a request parses it once.)
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from attrs import frozen

_POSITION = re.compile(r"^(?P<message>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")
_AT_END = " (at end of document)"


@frozen
class AnswerProblem:
    """
    Why a file cannot be served.

    @ivar message: What is wrong, without the file's name.
    @ivar line: 1-based line of the problem, if it has one.
    @ivar column: 1-based column of the problem, if it has one.
    """

    message: str
    line: int | None = None
    column: int | None = None

    def describe(self, name: str) -> str:
        """
        One line naming the file and the position, as printed on the installer's console.
        """
        where = name if self.line is None else f"{name}, line {self.line}"
        if self.line is not None and self.column is not None:
            where += f", column {self.column}"
        return f"{where}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {"message": self.message, "line": self.line, "column": self.column}


@frozen
class ParsedAnswer:
    """
    An answer file the installer can read, parsed once for every check that follows.

    @ivar data: Its bytes, exactly as read.
    @ivar text: C{data} decoded; key lines are found in it.
    @ivar document: C{text} parsed as TOML; shared by the checks, which only read it.
    """

    data: bytes
    text: str
    document: dict[str, Any]


def read_answer(data: bytes) -> ParsedAnswer | AnswerProblem:
    """
    Parse C{data} as an answer file, or find the first reason the installer could not
    read it.

    @return: The parsed file when it is non-empty UTF-8 TOML, otherwise the problem.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return AnswerProblem("not valid UTF-8", line, column)
    if text.startswith("\ufeff"):
        return AnswerProblem("starts with a byte-order mark; save it as UTF-8 without BOM", 1, 1)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        if message.endswith(_AT_END):
            lines = text.split("\n")
            return AnswerProblem(
                f"not valid TOML: {message[: -len(_AT_END)]} at the end of the file",
                len(lines),
                len(lines[-1]) + 1,
            )
        found = _POSITION.match(message)
        if found is None:
            return AnswerProblem(f"not valid TOML: {message}")
        return AnswerProblem(
            f"not valid TOML: {found['message']}", int(found["line"]), int(found["column"])
        )
    except ValueError as e:
        # An integer too long to convert: the parser raises a plain ValueError.
        return AnswerProblem(f"not valid TOML: {e}")
    except RecursionError:
        return AnswerProblem("not valid TOML: arrays or tables nested too deeply")
    if not document:
        return AnswerProblem("the answer file is empty")
    return ParsedAnswer(data, text, document)


def check_answer(data: bytes) -> AnswerProblem | None:
    """
    Find the first reason the installer could not read C{data} as an answer file.

    @return: L{None} when it is non-empty UTF-8 TOML, otherwise the problem.
    """
    found = read_answer(data)
    return found if isinstance(found, AnswerProblem) else None
