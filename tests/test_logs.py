"""
C{--log-level} filters pxe-pilot's events and only pxe-pilot's; what a request puts in
a log line is bounded however much it sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.logger import LogEvent, Logger, LogLevel, formatEvent

from pxepilot import Config, PxePilot
from pxepilot.hosts.ledger import run_here
from pxepilot.logs import clip, logger, set_log_level, shorten
from tests.conftest import AnswersDir, clock_at_now, result_of


@pytest.fixture
def restore_level() -> Iterator[None]:
    yield
    set_log_level(LogLevel.info)


@pytest.mark.usefixtures("restore_level")
@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (LogLevel.debug, ["debug", "info", "warn", "error"]),
        (LogLevel.info, ["info", "warn", "error"]),
        (LogLevel.warn, ["warn", "error"]),
        (LogLevel.error, ["error"]),
    ],
)
def test_level_filter(events: list[LogEvent], level: LogLevel, expected: list[str]) -> None:
    """
    Events below the configured level are dropped; the rest arrive with their fields.
    """
    set_log_level(level)
    log = logger("pxepilot.test")
    for name in ["debug", "info", "warn", "error"]:
        getattr(log, name)("{what} event", what=name)
    mine = [e for e in events if e.get("log_namespace") == "pxepilot.test"]
    assert [e["what"] for e in mine] == expected


@pytest.mark.usefixtures("restore_level")
def test_other_loggers_are_not_filtered(events: list[LogEvent]) -> None:
    """
    An application embedding pxe-pilot keeps its own logging.
    """
    set_log_level(LogLevel.error)
    Logger(namespace="host.app").info("host event")
    assert [e for e in events if e.get("log_namespace") == "host.app"]


@pytest.mark.parametrize(
    ("format", "fields", "ahead"),
    [
        ("host {mac}: {summary} ({state})", {"mac": "b0:7b:25:c1:0a:10"}, True),
        ("{count:,} hosts, {share:.1%} of them, {name!r} twice: {name!r}", {}, True),
        ("{name!s:>8}|{count:x}|{{literal}}", {}, True),
        ("{thing.real} through an attribute, {items[1]} by index", {}, False),
        ("{missing} is not a field", {}, False),
        ("{count:q} is a bad spec", {}, False),
    ],
)
def test_lines_read_as_twisted_formats_them(
    events: list[LogEvent], format: str, fields: dict[str, Any], ahead: bool
) -> None:
    """
    Each event is formatted once as it is made, and reads as Twisted's own formatting
    of the same format and fields would, format specs and conversions included; what
    it cannot format ahead is left to Twisted.
    """
    values = {
        "mac": "?",
        "summary": "?",
        "state": "installing",
        "count": 12345,
        "share": 0.25,
        "name": "a'b",
        "thing": 3,
        "items": ["a", "b"],
        **fields,
    }
    logger("pxepilot.test").info(format, **values)
    [event] = [e for e in events if e.get("log_namespace") == "pxepilot.test"]
    assert ("log_flattened" in event) is ahead
    unformatted = {key: value for key, value in event.items() if key != "log_flattened"}
    assert formatEvent(event) == formatEvent(unformatted)
    # What JSON observers write: the formatted fields are plain text.
    json.dumps(event.get("log_flattened"))


@pytest.mark.usefixtures("restore_level")
def test_events_below_the_level_are_never_made(events: list[LogEvent]) -> None:
    """
    A debug line at info level costs no formatting: its fields are never looked at.
    """

    class Exploding:
        def __format__(self, spec: str) -> str:
            raise AssertionError("formatted")

        __str__ = __repr__ = lambda self: self.__format__("")

    set_log_level(LogLevel.info)
    logger("pxepilot.test").debug("{value}", value=Exploding())
    assert [e for e in events if e.get("log_namespace") == "pxepilot.test"] == []


def test_class_attribute_takes_the_class_namespace(events: list[LogEvent]) -> None:
    """
    As a class attribute, the logger is named after the class.
    """

    class Component:
        log = logger("unused")

    Component().log.info("hello")
    assert [e for e in events if e.get("log_namespace", "").endswith("Component")]


@pytest.mark.parametrize(
    ("items", "text"),
    [
        ([], ""),
        (["a"], "a"),
        (list("abcdefgh"), "a, b, c, d, e, f, g, h"),
        (list("abcdefghi"), "a, b, c, d, e, f, g, h, ... and 1 more"),
        ([f"m{n}" for n in range(45_000)], "m0, m1, m2, m3, m4, m5, m6, m7, ... and 44,992 more"),
        (["x" * 100, 42], f"{'x' * 77}..., 42"),
    ],
)
def test_shorten(items: list[object], text: str) -> None:
    """
    A list in a log line shows its first eight items, each cut short, then how many
    more there are.
    """
    assert shorten(items) == text


@pytest.mark.parametrize(
    ("text", "width", "clipped"),
    [("pve", 40, "pve"), ("x" * 40, 40, "x" * 40), ("x" * 41, 40, "x" * 37 + "...")],
)
def test_clip(text: str, width: int, clipped: str) -> None:
    """
    A field longer than its width is cut to it, and says so.
    """
    assert clip(text, width) == clipped


def test_an_answer_request_with_many_macs_logs_a_short_line(
    tmp_path: Path, events: list[LogEvent]
) -> None:
    """
    An answer request with 200 MACs is logged in one line under 2 KB that names the
    first few and says how many more there are; the 404 body is bounded alike.
    """
    pilot = PxePilot(
        Config(
            answers_dir=AnswersDir(tmp_path / "answers").root,
            assets_dir=tmp_path,
            state_dir=tmp_path / "state",
        ),
        clock_at_now(),
        run_blocking=run_here,
    )
    # StubTreq's methods are made at run time; mypy cannot see them.
    client: Any = StubTreq(pilot.resource)
    macs = [f"b0:7b:25:c1:{n >> 8:02x}:{n & 255:02x}" for n in range(200)]
    body = json.dumps({"network_interfaces": [{"mac": mac} for mac in macs]}).encode()
    response = result_of(client.post("http://pxe-pilot.test/answer", data=body))
    error = json.loads(result_of(client.content(response)))["error"]
    [event] = [e for e in events if e.get("outcome") == "no-answer"]
    line = formatEvent(event)
    assert response.code == 404
    assert len(line) < 2048
    assert f"MACs {', '.join(macs[:8])}, ... and 192 more" in line
    assert event["macs"] == macs
    assert len(error) < 512
    assert f"{macs[7]}, ... and 192 more" in error
