"""
An answer file is servable when it is non-empty UTF-8 TOML; problems name a line. Reading
it keeps what was parsed, for the checks that follow.
"""

from __future__ import annotations

import tomllib

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from pxepilot.answers.check import AnswerProblem, ParsedAnswer, check_answer, read_answer
from tests.conftest import MINIMAL_ANSWER


def test_valid() -> None:
    """
    The minimal answer of the installer's own tests is servable.
    """
    assert check_answer(MINIMAL_ANSWER) is None


def test_toml_syntax_error_has_line_and_column() -> None:
    """
    A TOML error is located.
    """
    problem = check_answer(b'[global]\nkeyboard = "en-us"\ncountry = us\n')
    assert problem is not None
    assert (problem.line, problem.column) == (3, 11)
    assert problem.message.startswith("not valid TOML: ")
    assert problem.describe("hosts/x.toml").startswith("hosts/x.toml, line 3, column 11: ")


def test_invalid_utf8_has_line_and_column() -> None:
    """
    A byte that is not UTF-8 (a Latin-1 umlaut, say) is located.
    """
    problem = check_answer(b'[global]\nfqdn = "m\xfcller.example.com"\n')
    assert problem == AnswerProblem("not valid UTF-8", 2, 10)


def test_empty_and_comment_only_files() -> None:
    """
    An empty file, or one with only comments, is valid TOML but no answer.
    """
    assert check_answer(b"") == AnswerProblem("the answer file is empty")
    assert check_answer(b"# nothing yet\n\n") == AnswerProblem("the answer file is empty")


def test_byte_order_mark() -> None:
    """
    A UTF-8 byte-order mark is reported as such.
    """
    problem = check_answer(b"\xef\xbb\xbf" + MINIMAL_ANSWER)
    assert problem is not None
    assert "byte-order mark" in problem.message


def test_truncated_file() -> None:
    """
    A file cut in the middle of a value (as when read during a write) is invalid.
    """
    problem = check_answer(MINIMAL_ANSWER[: MINIMAL_ANSWER.index(b"en-us") + 2])
    assert problem is not None
    assert problem.line == 2


@pytest.mark.parametrize(
    "data",
    [b"n = " + b"9" * 5000 + b"\n", b"n = " + b"[" * 5000 + b"]" * 5000 + b"\n"],
    ids=["integer-too-long", "nested-too-deeply"],
)
def test_parser_limits_are_problems_not_crashes(data: bytes) -> None:
    """
    Input the TOML parser gives up on in other ways than a syntax error (an integer
    too long to convert, nesting too deep) is reported like any invalid file.
    """
    problem = check_answer(data)
    assert problem is not None
    assert problem.message.startswith("not valid TOML")


toml_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=12)
toml_values = st.recursive(
    st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(toml_keys, children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(toml_keys, toml_values, min_size=1, max_size=5))
def test_tomli_w_output_is_servable_and_round_trips(document: dict[str, object]) -> None:
    """
    Any non-empty document written with tomli-w is servable and parses back equal.
    """
    data = tomli_w.dumps(document).encode()
    assert check_answer(data) is None
    assert tomllib.loads(data.decode()) == document


def test_read_answer_keeps_what_it_parsed() -> None:
    """
    A servable file is read into its bytes, its text and its TOML document.
    """
    found = read_answer(MINIMAL_ANSWER)
    assert found == ParsedAnswer(
        MINIMAL_ANSWER, MINIMAL_ANSWER.decode(), tomllib.loads(MINIMAL_ANSWER.decode())
    )


@pytest.mark.parametrize(
    "data",
    [
        b'[global]\nkeyboard = "en-us"\ncountry = us\n',
        b'[global]\nfqdn = "m\xfcller.example.com"\n',
        b"",
        b"# nothing yet\n\n",
        b"\xef\xbb\xbf" + MINIMAL_ANSWER,
        MINIMAL_ANSWER[: MINIMAL_ANSWER.index(b"en-us") + 2],
        b"n = " + b"9" * 5000 + b"\n",
        b"n = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    ],
    ids=[
        "syntax",
        "latin-1",
        "empty",
        "comments-only",
        "byte-order-mark",
        "truncated",
        "integer-too-long",
        "nested-too-deeply",
    ],
)
def test_read_answer_has_the_problems_of_check_answer(data: bytes) -> None:
    """
    A file that cannot be served is refused by L{read_answer} with the problem
    L{check_answer} names.
    """
    problem = read_answer(data)
    assert isinstance(problem, AnswerProblem)
    assert problem == check_answer(data)
