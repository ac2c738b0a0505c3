"""
Shared fixtures: answer directories, captured log events, the real reactor.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider

from pxepilot.logs import set_log_level

# Property tests assert behaviour, never speed: a loaded CI machine must not fail them.
# Hypothesis's own timing checks (a per-example deadline, slow input generation) are
# off for every test.
settings.register_profile("pxe-pilot", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pxe-pilot")

T = TypeVar("T")

FIXTURES = Path(__file__).parent / "fixtures"

MINIMAL_ANSWER = b"""\
[global]
keyboard = "en-us"
country = "us"
fqdn = "pve01.example.com"
mailto = "ops@example.com"
timezone = "UTC"
root-password = "changeme123"

[network]
source = "from-dhcp"

[disk-setup]
filesystem = "ext4"
disk-list = ["sda"]
"""


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class AnswersDir:
    """
    A temporary answers directory whose files are old enough to be served at once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "hosts").mkdir(parents=True, exist_ok=True)

    def write(self, name: str, data: bytes = MINIMAL_ANSWER, age: float = 3600) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
        return path

    def host(self, name: str, data: bytes | None = None) -> Path:
        return self.write(f"hosts/{name}", data if data is not None else marker(name))


def marker(name: str) -> bytes:
    """
    A valid answer that says which file it came from.
    """
    return (
        MINIMAL_ANSWER + f'\n[first-boot]\nsource = "from-url"\nurl = "http://x/{name}"\n'.encode()
    )


@pytest.fixture
def answers_dir(tmp_path: Path) -> AnswersDir:
    return AnswersDir(tmp_path / "answers")


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    """
    Every log event emitted during the test.
    """
    captured: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        captured.append(event)

    globalLogPublisher.addObserver(observe)
    yield captured
    globalLogPublisher.removeObserver(observe)


def events_with(events: list[LogEvent], **fields: Any) -> list[LogEvent]:
    return [e for e in events if all(e.get(k) == v for k, v in fields.items())]


def result_of(d: Deferred[T]) -> T:
    """
    The result a L{Deferred} has already fired with; its failure is raised.
    """
    results: list[T | Failure] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def has_result(d: Deferred[Any]) -> bool:
    fired: list[object] = []

    def record(result: object) -> object:
        fired.append(result)
        return result

    d.addBoth(record)
    return bool(fired)


def clock_at_now() -> Clock:
    """
    A L{Clock} that starts at the current wall time, so file modification times and
    the clock agree.
    """
    clock = Clock()
    clock.advance(time.time())
    return clock


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """
    pxe-pilot logs at debug level during the test.
    """
    set_log_level(LogLevel.debug)
    yield
    set_log_level(LogLevel.info)


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """
    The byte counts of every C{os.sendfile} call during the test.
    """
    calls: list[int] = []
    real = os.sendfile

    def recording(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", recording)
    return calls
