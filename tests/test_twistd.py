"""
The real C{twistd pxe-pilot} process over real sockets: every installer fixture, bad
input, and start-up errors.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import AnswersDir, fixture_bytes, marker
from tests.twistd_process import TwistdProcess, child_log

FIXTURES = {
    # file: (raw headers exactly as that installer sends them, expected source)
    "installer-post-8.2.json": (
        [("Content-type", "application/json; charset=utf-")],
        "hosts/B0-7B-25-C1-0A-11.toml",
    ),
    "installer-post-8.3-to-9.1.json": (
        [("Content-Type", "application/json; charset=utf-8")],
        "hosts/B0-7B-25-C1-0A-11.toml",
    ),
    "installer-post-9.2.json": (
        [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Accept", "application/json, application/toml;q=0.5"),
        ],
        "hosts/B0-7B-25-C1-0A-11.toml",
    ),
    "installer-post-pbs-vm-9.2.json": (
        [("Content-Type", "application/json; charset=utf-8")],
        "default.toml",
    ),
}


@pytest.fixture
def server(answers_dir: AnswersDir, tmp_path: Path) -> Iterator[tuple[TwistdProcess, int]]:
    answers_dir.write("default.toml")
    answers_dir.host("B0-7B-25-C1-0A-11.toml", marker("b0-7b-25-c1-0a-11.toml"))
    (tmp_path / "assets").mkdir()
    process = TwistdProcess(
        ["--interface", "127.0.0.1"],
        env={
            "PXE_PILOT_ANSWERS_DIR": str(answers_dir.root),
            "PXE_PILOT_PORT": "0",
            "PXE_PILOT_ASSETS_DIR": str(tmp_path / "assets"),
            # Which file each installer gets; the answer check has tests of its own.
            "PXE_PILOT_ANSWER_CHECK": "warn",
        },
    )
    try:
        yield process, process.http_port()
    finally:
        # twistd ends by re-raising the signal that stopped it.
        assert process.stop() in (0, -15), process.text
        assert "Server Shut Down." in process.text


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest(method, path)
    for name, value in headers:
        connection.putheader(name, value)
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def test_every_fixture_over_real_sockets(server: tuple[TwistdProcess, int]) -> None:
    """
    Each installer shape, with its exact headers, gets the right file from the running
    process; the process logs one line per answer and stops cleanly on SIGTERM.
    """
    process, port = server
    for name, (headers, source) in FIXTURES.items():
        code, response_headers, body = request(
            port, "POST", "/answer", fixture_bytes(name), headers
        )
        assert code == 200, body
        assert response_headers["x-pxe-pilot-source"] == source
        assert response_headers["content-type"] == "application/toml; charset=utf-8"
        if source.startswith("hosts/"):
            assert body == marker("b0-7b-25-c1-0a-11.toml")
    process.read_until(re.compile(r"\(pbs 4\.1-1; MACs bc:24:11:5e:7a:01\): served default"))
    assert process.text.count("answer request from 127.0.0.1") == len(FIXTURES)


def test_bad_input_over_real_sockets(server: tuple[TwistdProcess, int]) -> None:
    """
    Bad bodies get their 4xx from the running process and it keeps serving.
    """
    _, port = server
    for body, expected in [
        (b"{", 400),
        (b"[]", 400),
        (b'{"network_interfaces": 1}', 400),
        (b'{"network_interfaces": [{"mac": "../x"}]}', 400),
    ]:
        code, headers, data = request(port, "POST", "/answer", body)
        assert code == expected
        assert headers["content-type"] == "application/json"
        assert json.loads(data)["error"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n")
        reply = b""
        while chunk := connection.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413 ")
    code, _, data = request(port, "GET", "/health")
    # Serving, degraded only by its empty assets directory.
    health = json.loads(data)
    assert (code, health["status"], health["assets"]["status"]) == (200, "degraded", "degraded")
    code, _, data = request(port, "GET", "/hosts/B0:7B:25:C1:0A:11")
    assert (code, data) == (200, marker("b0-7b-25-c1-0a-11.toml"))


def test_invalid_configuration_stops_start_up(tmp_path: Path) -> None:
    """
    A missing directory, a bad port or an unknown log level: one clear line, a non-zero
    exit, and nothing listening.
    """
    (tmp_path / "answers").mkdir()
    (tmp_path / "assets").mkdir()
    cases = [
        (
            ["--answers", str(tmp_path / "nope")],
            {},
            f"pxe-pilot: error: --answers: {tmp_path / 'nope'} does not exist",
        ),
        (
            [],
            {"PXE_PILOT_PORT": "eighty"},
            "pxe-pilot: error: PXE_PILOT_PORT: 'eighty' is not a port number",
        ),
        (
            ["--log-level", "chatty"],
            {},
            "pxe-pilot: error: --log-level: 'chatty' is not one of debug, info, warning, error",
        ),
    ]
    for args, env, message in cases:
        process = TwistdProcess(args, env=env, cwd=tmp_path)
        assert process.finish() != 0
        assert process.text.strip() == message


def test_unusable_tls_files_stop_start_up_with_one_line(tmp_path: Path) -> None:
    """
    A certificate that is not one, a key of another certificate, a key without its
    certificate, or a damaged generated pair: one line naming the file, a non-zero
    exit, before anything listens.
    """
    from datetime import UTC, datetime

    from pxepilot.tls import new_self_signed

    (tmp_path / "answers").mkdir()
    (tmp_path / "assets").mkdir()
    certificate, _ = new_self_signed(["localhost"], datetime.now(UTC))
    _, other_key = new_self_signed(["localhost"], datetime.now(UTC))
    (tmp_path / "cert.pem").write_bytes(certificate)
    (tmp_path / "other.key").write_bytes(other_key)
    (tmp_path / "garbage.pem").write_bytes(b"garbage")
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True)
    (state / "tls" / "server.crt").write_bytes(certificate)
    https = ["--https-port", "18443"]
    cases = [
        (["--tls-cert", "garbage.pem", "--tls-key", "other.key"], "garbage.pem"),
        (["--tls-cert", "cert.pem", "--tls-key", "other.key"], "other.key"),
        (["--tls-key", "other.key"], "--tls-key: needs --tls-cert as well"),
        (["--state", str(state)], "server.key"),
    ]
    for args, named in cases:
        process = TwistdProcess([*https, *args], cwd=tmp_path)
        assert process.finish() != 0
        [line] = process.text.strip().splitlines()
        assert line.startswith("pxe-pilot: error: ") and named in line, process.text
    assert (state / "tls" / "server.crt").read_bytes() == certificate
    assert not (state / "tls" / "server.key").exists()


def test_port_in_use_stops_start_up(tmp_path: Path) -> None:
    """
    When the HTTP port is taken, twistd exits non-zero instead of running deaf.
    """
    (tmp_path / "answers").mkdir()
    (tmp_path / "assets").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = TwistdProcess(["--interface", "127.0.0.1", "--port", str(port)], cwd=tmp_path)
        assert process.finish() != 0
    assert "Address already in use" in process.text


def test_a_log_read_while_the_server_writes_loses_nothing() -> None:
    """
    The tests read a server's log while it runs: each read must leave what the child
    writes meanwhile where it belongs, at the end, not over the start of the log.
    """
    log = child_log()
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfor i in range(5000): print(f'line {i}', flush=True)"],
        stdout=log,
    )
    try:
        while writer.poll() is None:
            log.seek(0)
            log.read()
        writer.wait()
        log.seek(0)
        assert log.read().decode().splitlines() == [f"line {i}" for i in range(5000)]
    finally:
        log.close()
