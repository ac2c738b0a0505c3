"""
Hostile and careless writers of answer files: a file that is being written is never
served, however long the writing takes; the installer is told to ask again.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest_twisted
from twisted.application.service import IServiceCollection, MultiService
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import LogEvent

from pxepilot import Config, make_service
from tests.conftest import MINIMAL_ANSWER, AnswersDir, events_with, fixture_bytes
from tests.test_http import Client

REQUEST = fixture_bytes("installer-post-9.2.json")
HOST_FILE = "hosts/b0-7b-25-c1-0a-10.toml"


def test_a_file_still_being_written_gets_503_and_retry_after(
    answers_dir: AnswersDir, tmp_path: Path, events: list[LogEvent]
) -> None:
    """
    A host file touched every half second for longer than the wait is not served: 503,
    C{Retry-After}, a body naming the file (the installer prints it), a log line, the
    host's timeline says so, and the metrics count it.
    """
    client = Client(answers_dir, tmp_path / "assets", answer_check="refuse")
    clock = cast(Clock, client.pilot.reactor)
    path = answers_dir.write(HOST_FILE, MINIMAL_ANSWER, age=0)
    os.utime(path, (clock.seconds(), clock.seconds()))
    pending = client.treq.post("http://pxe.test/answer", data=REQUEST)
    for _ in range(12):
        os.utime(path, (clock.seconds(), clock.seconds()))
        clock.advance(0.5)
    client.treq.flush()
    response = pending.result
    body = json.loads(client.treq.content(response).result)
    assert response.code == 503
    assert response.headers.getRawHeaders(b"retry-after") == [b"1"]
    assert body["file"] == HOST_FILE
    assert HOST_FILE in body["error"]
    [logged] = events_with(events, outcome="changing")
    assert logged["code"] == 503
    exposition = client.pilot.metrics.exposition().decode()
    assert 'pxepilot_answers_total{outcome="changing"} 1.0' in exposition


def _post_answer(port: int) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", "/answer", body=REQUEST, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _write_slowly(path: Path, data: bytes, piece: int, pause: float) -> None:
    """
    Truncate, then write C{data} C{piece} bytes at a time, as an upload or a slow
    editor does.
    """
    with open(path, "wb") as f:
        for start in range(0, len(data), piece):
            f.write(data[start : start + piece])
            f.flush()
            time.sleep(pause)


@pytest_twisted.ensureDeferred
async def test_no_answer_is_served_half_written(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    Over real sockets: while a host file is rewritten in 64-byte pieces again and
    again, installers asking all the while get either the whole file or 503, never a
    part of it; once the writing stops, they get the whole file.
    """
    content = MINIMAL_ANSWER + b"".join(b"# padding line %d\n" % n for n in range(120))
    path = answers_dir.write(HOST_FILE, content)
    config = Config(
        answers_dir=answers_dir.root,
        assets_dir=tmp_path,
        state_dir=tmp_path / "state",
        port=0,
        interface="127.0.0.1",
        https_port=0,
        answer_check="warn",
    )
    top = cast(MultiService, make_service(config))
    top.startService()
    listener: Any = cast(IServiceCollection, top).getServiceNamed("http")
    port = listener.address().port
    writing = threading.Event()
    writing.set()

    def writer() -> None:
        # About 2.5 s for each rewrite, for 6 s: longer than the 5 s the answer waits.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            _write_slowly(path, content, 64, 2.5 / (len(content) / 64))
        writing.clear()

    def installers() -> list[tuple[int, bytes]]:
        seen = []
        while writing.is_set():
            seen.append(_post_answer(port))
        return seen

    try:
        thread = threading.Thread(target=writer)
        thread.start()
        during = await deferToThread(installers)
        thread.join()
        time.sleep(1.1)  # the file settles
        after = await deferToThread(_post_answer, port)
    finally:
        await top.stopService()
    assert during
    assert {code for code, _ in during} <= {200, 503}
    assert [body for code, body in during if code == 200 and body != content] == []
    assert after == (200, content)
