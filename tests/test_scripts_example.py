"""
The README's first steps, as a new user takes them: C{scripts/run-example} in a fresh
copy of the checkout (its own virtualenv, installed from a wheel), its log ending with
where to point a browser and what to try next, and those steps working: the status
page, the example host's timeline, and re-arming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.docs_snippets import ROOT, snippets

MAC = "b0:7b:25:c1:0a:10"
# Where the guide's commands start: four spaces, as the script prints them.
COMMAND = re.compile(r"^    (\S.*)$")


def checkout_copy(destination: Path) -> Path:
    """
    The files a clone would hold (tracked, or new and not ignored), copied: the script
    runs there as it would in a fresh clone, without touching this one's .venv-run.
    """
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, names):
        source = ROOT / os.fsdecode(name)
        if not source.is_file():
            continue  # deleted in the working tree
        target = destination / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return destination


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@attrs.define
class Example:
    """
    C{scripts/run-example} running in C{root}; C{lines} is its standard output so far.
    """

    root: Path
    process: subprocess.Popen[str]
    port: int
    errors: Path
    lines: list[str] = attrs.field(factory=list)
    reader: threading.Thread | None = None

    def start_reading(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in self.lines):
            ended = self.reader is None or not self.reader.is_alive()
            if ended or time.monotonic() > deadline:
                raise AssertionError(
                    f"no {pattern!r} in the output:\n"
                    + "\n".join(self.lines)
                    + "\n"
                    + self.errors.read_text()
                )
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def environment() -> dict[str, str]:
    """
    A user's environment: nothing of this test run's pxe-pilot settings or proxies.
    """
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PXE_PILOT_") and "proxy" not in key.lower()
    }


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    root = checkout_copy(tmp_path_factory.mktemp("clone"))
    port = free_port(socket.SOCK_STREAM)
    errors = tmp_path_factory.mktemp("stderr") / "run-example.err"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [
                "sh",
                "scripts/run-example",
                "--port",
                str(port),
                "--https-port",
                str(free_port(socket.SOCK_STREAM)),
                "--tftp-port",
                str(free_port(socket.SOCK_DGRAM)),
            ],
            cwd=root,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    running = Example(root, process, port, errors)
    running.start_reading()
    try:
        # The first run creates the virtualenv and installs every dependency.
        running.wait_for(r"^    pxe-pilot reinstall ", timeout=600)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def guide(example: Example) -> list[str]:
    """
    What the log says after pxe-pilot's own start-up lines.
    """
    start = next(i for i, line in enumerate(example.lines) if line.startswith("run-example: "))
    return example.lines[start:]


def commands(lines: list[str]) -> list[str]:
    return [found.group(1) for line in lines if (found := COMMAND.match(line))]


def test_log_ends_with_the_browser_address_and_the_next_steps(example: Example) -> None:
    """
    Once pxe-pilot listens, the log's last lines say where to point a browser and give
    the next steps, to be pasted into another terminal.
    """
    told = guide(example)
    listening = [i for i, line in enumerate(example.lines) if " listening on " in line]
    assert len(listening) == 3  # HTTP, HTTPS and TFTP
    assert max(listening) < example.lines.index(told[0])
    assert f"run-example: point a browser at the status page: {example.url}/" in told
    assert commands(told) == [
        f"cd {example.root}",
        'export PATH="$PWD/.venv-run/bin:$PATH"',
        f"export PXE_PILOT_URL={example.url}/",
        f"curl --data @examples/installer/system-info.json {example.url}/answer",
        f"curl --data @examples/installer/report.json {example.url}/webhook",
        f"pxe-pilot status {MAC}",
        f"pxe-pilot reinstall {MAC}",
    ]


def test_readme_gives_the_same_steps(example: Example) -> None:
    """
    The README's steps are the ones the log gives on the default port, where the
    commands need no PXE_PILOT_URL, run from the clone.
    """
    [block] = [
        s
        for s in snippets((ROOT / "README.md",))
        if s.kind == "not-run" and "tests/test_scripts_example.py" in s.argument
    ]
    told = [
        line.replace(example.url, "http://127.0.0.1:8080")
        for line in commands(guide(example))
        if not line.startswith(("cd ", "export PXE_PILOT_URL="))
    ]
    assert block.text.strip().splitlines() == told


def test_the_steps_work(example: Example) -> None:
    """
    The steps, run as the log gives them: the example host is served its answer with
    the webhook section pxe-pilot adds, reports its installation, has a timeline, and
    is re-armed; the status page lists it. What pxe-pilot learnt is kept under the
    virtualenv, not in the clone's root.
    """
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(commands(guide(example)))],
        cwd="/",
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert 'fqdn = "pve01.example.com"' in out
    assert "\n[post-installation-webhook]\n" in out
    assert re.search(r'"state": "installed"', out)
    assert re.search(rf"^{MAC}: installed since ", out, re.MULTILINE)
    assert re.search(r"answer-served +answer hosts/b0-7b-25-c1-0a-10.toml served", out)
    assert re.search(r"installed +installed pve 9.1.1 as pve01.example.com", out)
    assert f"{MAC} re-armed: its next network boot installs" in out

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(f"{example.url}/", timeout=10) as page:
        assert page.status == 200
        assert MAC in page.read().decode()
    with direct.open(f"{example.url}/hosts/{MAC}/status", timeout=10) as status:
        host = json.load(status)
    assert host["state"] == "new"
    kinds = [event["kind"] for event in host["timeline"]]
    assert {"answer-served", "installed", "rearmed"} <= set(kinds), kinds

    assert (example.root / ".venv-run" / "state" / "pxe-pilot.sqlite3").is_file()
    assert not (example.root / "state").exists()


def test_ctrl_c_stops_pxe_pilot(example: Example) -> None:
    """
    Ctrl-C stops the script and pxe-pilot with it: the port is free again.
    """
    example.process.send_signal(signal.SIGINT)
    example.process.wait(timeout=30)
    example.wait_for(r"Server Shut Down\.$", timeout=10)
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", example.port), timeout=5),
    ):
        pass
