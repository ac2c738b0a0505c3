"""
C{--log-level} filters pxe-pilot's events and only pxe-pilot's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.logger import LogEvent, Logger, LogLevel

from pxepilot.logs import logger, set_log_level


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


def test_class_attribute_takes_the_class_namespace(events: list[LogEvent]) -> None:
    """
    As a class attribute, the logger is named after the class.
    """

    class Component:
        log = logger("unused")

    Component().log.info("hello")
    assert [e for e in events if e.get("log_namespace", "").endswith("Component")]
