"""
The C{pxe-pilot} command line against a real C{twistd pxe-pilot}: listing hosts, one
host's timeline, re-arming, the admin token, and its errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AnswersDir, fixture_bytes
from tests.test_twistd import request
from tests.twistd_process import TwistdProcess

PXE_PILOT = Path(sys.executable).parent / "pxe-pilot"
TOKEN = "admin-0123456789abcdef"
MAC = "b0:7b:25:c1:0a:10"


@pytest.fixture
def server(answers_dir: AnswersDir, tmp_path: Path) -> Iterator[tuple[TwistdProcess, int]]:
    answers_dir.write("default.toml")
    (tmp_path / "assets").mkdir()
    process = TwistdProcess(
        ["--interface", "127.0.0.1", "--port", "0", "--state", str(tmp_path / "state")],
        env={
            "PXE_PILOT_ANSWERS_DIR": str(answers_dir.root),
            "PXE_PILOT_ASSETS_DIR": str(tmp_path / "assets"),
            "PXE_PILOT_ADMIN_TOKEN": TOKEN,
        },
    )
    try:
        yield process, process.http_port()
    finally:
        assert process.stop() in (0, -15), process.text


def cli(port: int, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PXE_PILOT_")}
    environ["PXE_PILOT_URL"] = f"http://127.0.0.1:{port}"
    if token is not None:
        environ["PXE_PILOT_ADMIN_TOKEN"] = token
    return subprocess.run(
        [str(PXE_PILOT), *args], env=environ, capture_output=True, text=True, timeout=30
    )


def install(port: int) -> None:
    code, _, _ = request(port, "POST", "/answer", fixture_bytes("installer-post-9.2.json"))
    assert code == 200
    code, _, _ = request(port, "POST", "/webhook", fixture_bytes("post-install-webhook-9.1.json"))
    assert code == 200


def test_hosts_status_and_reinstall(server: tuple[TwistdProcess, int]) -> None:
    """
    C{hosts} lists the installed host with its FQDN; C{status} shows its timeline;
    C{reinstall} re-arms it, and the server serves it an answer again.
    """
    _, port = server
    empty = cli(port, "hosts")
    assert (empty.returncode, empty.stdout) == (0, "no host has network-booted yet\n")
    install(port)
    listing = cli(port, "hosts")
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split()[:3] == ["MAC", "STATE", "SINCE"]
    assert row.split()[:2] == [MAC, "installed"]
    assert "pve01.example.com" in row and "192.0.2.21/24" in row
    status = cli(port, "status", "B0-7B-25-C1-0A-10")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{MAC}: installed since ")
    assert "answer-served" in status.stdout and "installed pve 9.1.1" in status.stdout

    assert request(port, "POST", "/answer", fixture_bytes("installer-post-9.2.json"))[0] == 409
    rearmed = cli(port, "reinstall", MAC)
    assert rearmed.returncode == 0, rearmed.stderr
    assert rearmed.stdout == f"{MAC} re-armed: its next network boot installs (state new)\n"
    assert request(port, "POST", "/answer", fixture_bytes("installer-post-9.2.json"))[0] == 200


def test_hosts_and_status_over_ipv6(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    Against a pxe-pilot bound to C{::}, the command reaches it at an IPv6 URL and shows
    a host installed with an IPv6 address; the installer asked over IPv4 of the same
    dual-stack port.
    """
    answers_dir.write("default.toml")
    (tmp_path / "assets").mkdir()
    process = TwistdProcess(
        ["--interface", "::", "--port", "0", "--state", str(tmp_path / "state")],
        env={
            "PXE_PILOT_ANSWERS_DIR": str(answers_dir.root),
            "PXE_PILOT_ASSETS_DIR": str(tmp_path / "assets"),
            "PXE_PILOT_ADMIN_TOKEN": TOKEN,
            "PXE_PILOT_HTTPS_PORT": "0",
        },
    )
    try:
        port = process.http_port()
        webhook = fixture_bytes("post-install-webhook-9.1.json").replace(
            b'"192.0.2.21/24"', b'"fd00:77::1f2/64"'
        )
        code, _, _ = request(port, "POST", "/answer", fixture_bytes("installer-post-9.2.json"))
        assert code == 200
        assert request(port, "POST", "/webhook", webhook)[0] == 200

        url = f"http://[::1]:{port}"
        listing = cli(port, "--url", url, "hosts")
        assert listing.returncode == 0, listing.stderr
        _, row = listing.stdout.splitlines()
        assert row.split()[:2] == [MAC, "installed"]
        assert "fd00:77::1f2/64" in row.split()
        status = cli(port, "--url", url, "status", MAC)
        assert status.returncode == 0, status.stderr
        assert "  address: fd00:77::1f2/64" in status.stdout.splitlines()
    finally:
        assert process.stop() in (0, -15), process.text


def test_errors_are_one_line(server: tuple[TwistdProcess, int], tmp_path: Path) -> None:
    """
    A missing or wrong token, an unknown host, a bad MAC and an unreachable server
    each end with one clear line and a non-zero exit.
    """
    _, port = server
    for token in (None, "wrong-0123456789abcdef"):
        denied = cli(port, "hosts", token=token)
        assert denied.returncode == 1
        assert denied.stderr == (
            "pxe-pilot: error: the server needs its admin token: --admin-token or "
            "PXE_PILOT_ADMIN_TOKEN\n"
        )
    unknown = cli(port, "reinstall", "00:11:22:33:44:55")
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "pxe-pilot: error: pxe-pilot has never seen 00:11:22:33:44:55 (404)\n",
    )
    bad = cli(port, "status", "zz")
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1] == (
        "pxe-pilot: error: 'zz' is not a MAC address, serial number, UUID or model"
    )
    unreachable = cli(1, "hosts")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("pxe-pilot: error: cannot reach pxe-pilot at ")
    assert len(unreachable.stderr.splitlines()) == 1
    assert cli(port, "frobnicate").returncode == 2


def test_an_acknowledged_installation_survives_kill_9(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    Once the webhook got its 200, the host is installed for good: a pxe-pilot killed
    with SIGKILL right after, and started again on the same state, refuses it an answer.
    """
    answers_dir.write("default.toml")
    (tmp_path / "assets").mkdir()
    args = ["--interface", "127.0.0.1", "--port", "0", "--state", str(tmp_path / "state")]
    env = {
        "PXE_PILOT_ANSWERS_DIR": str(answers_dir.root),
        "PXE_PILOT_ASSETS_DIR": str(tmp_path / "assets"),
    }
    first = TwistdProcess(args, env=env)
    try:
        install(first.http_port())
    finally:
        first.process.kill()
        first.process.wait(10)
    second = TwistdProcess(args, env=env)
    try:
        port = second.http_port()
        code, _, body = request(port, "GET", "/hosts")
        hosts = {h["mac"]: h["state"] for h in json.loads(body)["known_hosts"]}
        assert (code, hosts) == (200, {MAC: "installed"})
        assert request(port, "POST", "/answer", fixture_bytes("installer-post-9.2.json"))[0] == 409
    finally:
        assert second.stop() in (0, -15), second.text
