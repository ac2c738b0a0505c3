"""
Choosing and reading answers: first MAC with a host file, then the default; an edit in
progress is waited out, never served.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, LogLevel

from pxepilot.answers.check import AnswerProblem
from pxepilot.answers.files import DirectoryAnswerFiles
from pxepilot.answers.service import (
    AnswerService,
    Changing,
    Invalid,
    NoAnswer,
    Resolution,
    Served,
)
from pxepilot.macs import MacAddress
from tests.conftest import (
    MINIMAL_ANSWER,
    AnswersDir,
    clock_at_now,
    has_result,
    marker,
    result_of,
)

A, B, C = (MacAddress.parse(f"b0:7b:25:c1:0a:1{i}") for i in range(3))


def resolve(service: AnswerService, macs: Sequence[MacAddress]) -> Deferred[Resolution]:
    return Deferred.fromCoroutine(service.resolve(macs))


@pytest.fixture
def service(answers_dir: AnswersDir) -> AnswerService:
    return AnswerService(DirectoryAnswerFiles(answers_dir.root), clock_at_now())


def test_first_mac_in_payload_order_wins(answers_dir: AnswersDir, service: AnswerService) -> None:
    """
    The host file of the first MAC (in the order the installer lists them) that has one
    is served, not the first file by name; no merging with the default.
    """
    answers_dir.write("default.toml")
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    answers_dir.host("b0-7b-25-c1-0a-12.toml")
    resolution = result_of(resolve(service, [B, C, A]))
    assert resolution == Served(
        "hosts/b0-7b-25-c1-0a-12.toml", marker("b0-7b-25-c1-0a-12.toml"), C
    )


def test_default_when_no_host_file(answers_dir: AnswersDir, service: AnswerService) -> None:
    """
    Without a host file, C{default.toml} is served.
    """
    answers_dir.write("default.toml", b"[global]\nkeyboard = 'de'\n")
    assert result_of(resolve(service, [A])) == Served(
        "default.toml", b"[global]\nkeyboard = 'de'\n", None
    )


def test_no_answer(service: AnswerService) -> None:
    """
    Without host file and default there is no answer.
    """
    assert result_of(resolve(service, [A, B])) == NoAnswer()


def test_invalid_host_file_is_not_replaced_by_default(
    answers_dir: AnswersDir, service: AnswerService
) -> None:
    """
    A broken host file is reported, never silently swapped for the default.
    """
    answers_dir.write("default.toml")
    answers_dir.host("b0-7b-25-c1-0a-10.toml", b"[global\n")
    resolution = result_of(resolve(service, [A]))
    assert isinstance(resolution, Invalid)
    assert resolution.source == "hosts/b0-7b-25-c1-0a-10.toml"
    assert resolution.problem.line == 1


def test_changes_apply_on_the_next_request(
    answers_dir: AnswersDir, service: AnswerService
) -> None:
    """
    Additions, edits and removals are seen by the next request without a restart.
    """
    answers_dir.write("default.toml", MINIMAL_ANSWER)
    assert result_of(resolve(service, [A])).source == "default.toml"  # type: ignore[union-attr]
    answers_dir.host("B07B25C10A10.toml", b"[global]\nv = 1\n")
    assert result_of(resolve(service, [A])) == Served(
        "hosts/B07B25C10A10.toml", b"[global]\nv = 1\n", A
    )
    answers_dir.host("B07B25C10A10.toml", b"[global]\nv = 2\n")
    assert result_of(resolve(service, [A])).data == b"[global]\nv = 2\n"  # type: ignore[union-attr]
    os.remove(answers_dir.root / "hosts" / "B07B25C10A10.toml")
    assert result_of(resolve(service, [A])).source == "default.toml"  # type: ignore[union-attr]
    os.remove(answers_dir.root / "default.toml")
    assert result_of(resolve(service, [A])) == NoAnswer()


def test_a_file_being_written_is_waited_for(answers_dir: AnswersDir) -> None:
    """
    A file modified less than a second ago may be half-written: the answer waits until
    it has been still for a second and then serves what is there.
    """
    clock = clock_at_now()
    service = AnswerService(DirectoryAnswerFiles(answers_dir.root), clock)
    path = answers_dir.write("default.toml", MINIMAL_ANSWER[:40], age=0)
    os.utime(path, (clock.seconds(), clock.seconds()))
    d = resolve(service, [A])
    assert not has_result(d)
    clock.advance(0.5)
    # The writer finishes half a second later.
    path.write_bytes(MINIMAL_ANSWER)
    os.utime(path, (clock.seconds(), clock.seconds()))
    clock.advance(0.6)
    assert not has_result(d)
    clock.advance(0.5)
    assert result_of(d) == Served("default.toml", MINIMAL_ANSWER, None)


def test_a_file_that_never_settles(answers_dir: AnswersDir) -> None:
    """
    The wait is bounded: a file still changing after five seconds is not served, not
    even judged (what was read may be half of it): the installer is told to ask again.
    """
    clock = clock_at_now()
    service = AnswerService(DirectoryAnswerFiles(answers_dir.root), clock)
    path = answers_dir.write("default.toml", MINIMAL_ANSWER[:60], age=0)
    os.utime(path, (clock.seconds(), clock.seconds()))
    d = resolve(service, [A])
    for _ in range(10):
        assert not has_result(d)
        os.utime(path, (clock.seconds(), clock.seconds()))
        clock.advance(0.5)
    assert result_of(d) == Changing("default.toml", 1)


def test_a_young_empty_file_is_changing_not_empty(answers_dir: AnswersDir) -> None:
    """
    An empty file written a moment ago is a truncate before the write: it is waited
    for, and served once the content has arrived and settled.
    """
    clock = clock_at_now()
    service = AnswerService(DirectoryAnswerFiles(answers_dir.root), clock)
    path = answers_dir.write("default.toml", b"", age=0)
    os.utime(path, (clock.seconds(), clock.seconds()))
    d = resolve(service, [A])
    clock.advance(0.3)
    path.write_bytes(MINIMAL_ANSWER)
    os.utime(path, (clock.seconds(), clock.seconds()))
    clock.advance(0.8)
    assert not has_result(d)
    clock.advance(0.3)
    assert result_of(d) == Served("default.toml", MINIMAL_ANSWER, None)


def test_future_modification_time_is_not_waited_for(
    answers_dir: AnswersDir, service: AnswerService
) -> None:
    """
    A file stamped in the future (clock skew, copies keeping times) is served at once.
    """
    path = answers_dir.write("default.toml")
    future = time.time() + 3600
    os.utime(path, (future, future))
    assert isinstance(result_of(resolve(service, [A])), Served)


def test_empty_file_is_invalid(answers_dir: AnswersDir, service: AnswerService) -> None:
    """
    An empty file (as left by an editor that truncated it) is never an answer.
    """
    answers_dir.write("default.toml", b"")
    assert result_of(resolve(service, [A])) == Invalid(
        "default.toml", AnswerProblem("the answer file is empty")
    )


def test_conflicts_are_logged_once(
    answers_dir: AnswersDir, service: AnswerService, events: list[LogEvent]
) -> None:
    """
    Two files for one MAC: the canonical one is served, and the conflict is logged as a
    warning once, not on every request.
    """
    answers_dir.host("B0-7B-25-C1-0A-10.toml")
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    for _ in range(3):
        resolution = result_of(resolve(service, [A]))
        assert resolution.source == "hosts/b0-7b-25-c1-0a-10.toml"  # type: ignore[union-attr]
    warnings = [e for e in events if e.get("names")]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == LogLevel.warn
    assert warnings[0]["used"] == "hosts/b0-7b-25-c1-0a-10.toml"


def test_inspect(answers_dir: AnswersDir, service: AnswerService) -> None:
    """
    The inspection report lists every file, its validity, and which one is used.
    """
    answers_dir.write("default.toml", b"[global\n")
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    answers_dir.host("B0:7B:25:C1:0A:10.toml", b"\xff")
    answers_dir.host("rack1.toml")
    report = service.inspect()
    assert report["default"] == {
        "file": "default.toml",
        "present": True,
        "valid": False,
        "error": {
            "message": "not valid TOML: Expected ']' at the end of a table declaration",
            "line": 1,
            "column": 8,
        },
    }
    assert report["hosts"] == [
        {
            "mac": "b0:7b:25:c1:0a:10",
            "file": "hosts/B0:7B:25:C1:0A:10.toml",
            "valid": False,
            "error": {"message": "not valid UTF-8", "line": 1, "column": 1},
            "used": False,
            "conflicts_with": ["hosts/b0-7b-25-c1-0a-10.toml"],
        },
        {
            "mac": "b0:7b:25:c1:0a:10",
            "file": "hosts/b0-7b-25-c1-0a-10.toml",
            "valid": True,
            "error": None,
            "used": True,
            "conflicts_with": ["hosts/B0:7B:25:C1:0A:10.toml"],
        },
    ]
    assert report["unrecognised_files"] == [
        {"file": "hosts/rack1.toml", "error": "the file name is not a MAC address"}
    ]


def test_menu_and_answer_parse_a_file_once(
    answers_dir: AnswersDir, service: AnswerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A machine's menu reads its host file to decide the default, and its installer asks
    for the same file moments later: the file is parsed once, for both; a changed file
    is parsed anew.
    """
    import pxepilot.answers.service as answer_service
    from pxepilot.answers.check import read_answer

    parsed: list[bytes] = []
    real = read_answer

    def counting(data: bytes) -> Any:
        parsed.append(data)
        return real(data)

    monkeypatch.setattr(answer_service, "read_answer", counting)
    path = answers_dir.host("b0-7b-25-c1-0a-10.toml")
    now = service.clock.seconds()
    for_menu = service.read_settled("hosts/b0-7b-25-c1-0a-10.toml", now)
    served = result_of(resolve(service, [A]))
    assert isinstance(served, Served)
    assert served.parsed is for_menu
    assert parsed == [marker("b0-7b-25-c1-0a-10.toml")]
    path.write_bytes(MINIMAL_ANSWER + b"# changed\n")
    os.utime(path, (now - 3600, now - 3600))
    again = service.read_settled("hosts/b0-7b-25-c1-0a-10.toml", now)
    assert again is not for_menu
    assert len(parsed) == 2
