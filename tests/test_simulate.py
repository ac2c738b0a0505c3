"""
C{pxe-pilot simulate}: the request each installer version sends, which answer file a
machine would get and why, its findings and install-once; offline from an answers
directory (and the state, read-only) and from a running server, which records nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import ensureDeferred

from pxepilot.answers.files import DirectoryAnswerFiles
from pxepilot.answers.request import parse_installer_request
from pxepilot.answers.service import AnswerService
from pxepilot.answers.versions import InstallerVersion, installer_versions
from pxepilot.hosts.ledger import HostLedger, run_here
from pxepilot.hosts.model import EventKind
from pxepilot.hosts.store import SQLiteHostStore
from pxepilot.macs import MacAddress
from pxepilot.simulate import evaluate, installer_body, read_hosts
from tests.conftest import MINIMAL_ANSWER, AnswersDir, clock_at_now, fixture_bytes
from tests.test_cli import PXE_PILOT, TOKEN, cli, install
from tests.test_http import Client
from tests.test_twistd import request
from tests.twistd_process import TwistdProcess

MAC = "b0:7b:25:c1:0a:10"
SECOND = "b0:7b:25:c1:0a:11"
# Multi-word keys in kebab-case: installers 8.4 and later only.
KEBAB = MINIMAL_ANSWER


def simulate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """
    C{pxe-pilot simulate ARGS} with no server settings from this environment.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PXE_PILOT_")}
    environ.update(env or {})
    return subprocess.run(
        [str(PXE_PILOT), "simulate", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report = json.loads(done.stdout)
    assert isinstance(report, dict)
    return report


# -- the request each installer sends


@pytest.mark.parametrize(
    ("version", "fixture", "judged"),
    [
        ("8.2", "installer-post-8.2.json", "8.2.x"),
        ("9.1", "installer-post-8.3-to-9.1.json", "9.1.x"),
        ("9.2", "installer-post-9.2.json", "9.2.x"),
    ],
)
def test_requests_have_the_shape_of_their_installer(
    version: str, fixture: str, judged: str
) -> None:
    """
    The request made for installer X.Y has the keys and MAC spelling of a real request
    of that installer, and pxe-pilot judges it to come from X.Y.
    """
    macs = [MacAddress.parse(MAC), MacAddress.parse(SECOND)]
    body, accept = installer_body(macs, InstallerVersion.parse(version), serial="7XK2LM3")
    made, real = json.loads(body), json.loads(fixture_bytes(fixture))
    assert set(made) == set(real)
    assert made["iso"]["release"] == real["iso"]["release"]
    assert [i["mac"] for i in made["network_interfaces"]] == [
        i["mac"] for i in real["network_interfaces"][:2]
    ]
    installer = parse_installer_request(body)
    assert installer.macs == tuple(macs)
    assert installer.serial == "7XK2LM3"
    assert str(installer_versions(installer, accept)) == judged


def test_a_backup_server_request_carries_its_own_release() -> None:
    """
    Backup Server X.Y ships installer X+5.Y: its request says so, as the real one does,
    and is judged to come from that installer even when no MAC has a letter in it.
    """
    body, accept = installer_body(
        [MacAddress.parse("00:11:22:33:44:55")], InstallerVersion.parse("9.2"), "pbs"
    )
    real = json.loads(fixture_bytes("installer-post-pbs-vm-9.2.json"))
    made = json.loads(body)
    assert made["product"] == {"fullname": "Proxmox Backup Server", "product": "pbs"}
    assert made["iso"]["release"] == "4.2"
    assert set(made) == set(real)
    assert str(installer_versions(parse_installer_request(body), accept)) == "9.2.x"


def test_the_core_decides_as_the_answer_route(answers_dir: AnswersDir) -> None:
    """
    The host file of the first MAC that has one is chosen over the default, and the
    findings are those of the installer asking.
    """
    answers_dir.write("default.toml")
    answers_dir.host("b0-7b-25-c1-0a-11.toml")
    answers = AnswerService(DirectoryAnswerFiles(answers_dir.root), clock_at_now())
    body, accept = installer_body(
        [MacAddress.parse(m) for m in ("00:11:22:33:44:55", SECOND, MAC)],
        InstallerVersion.parse("9.2"),
    )
    found: list[Any] = []
    ensureDeferred(
        evaluate(answers, parse_installer_request(body), accept, {}, True, "refuse")
    ).addCallback(found.append)
    [simulation] = found
    assert simulation.accepted
    assert simulation.source == "hosts/b0-7b-25-c1-0a-11.toml"
    assert simulation.why() == (
        f"the host file of {SECOND}, its NIC 2 of 3; the NICs listed before it "
        "(00:11:22:33:44:55) have none"
    )


# -- offline


def test_offline_the_host_file_wins_over_the_default(answers_dir: AnswersDir) -> None:
    """
    With C{--answers}, no server is asked: the host file of the machine's second NIC is
    chosen over C{default.toml}, and the machine would accept it (exit 0); install-once
    cannot be known offline without the state.
    """
    answers_dir.write("default.toml")
    answers_dir.host("b0-7b-25-c1-0a-11.toml")
    done = simulate(
        "--mac", "00:11:22:33:44:55", "--mac", SECOND, "--answers", str(answers_dir.root)
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "machine: pve, installer 9.2.x, MACs 00:11:22:33:44:55, " + SECOND
    assert lines[1] == "answer file: hosts/b0-7b-25-c1-0a-11.toml"
    assert lines[2].startswith(f"why: the host file of {SECOND}, its NIC 2 of 2")
    assert "install once: not known offline" in done.stdout
    assert lines[-1].startswith("accepted: ")

    report = as_json(
        simulate("--mac", MAC, "--answers", str(answers_dir.root), "--json", "--serial", "S1")
    )
    assert (report["file"], report["matched_mac"], report["accepted"]) == (
        "default.toml",
        None,
        True,
    )
    assert report["request"]["serial"] == "S1"
    assert report["install_once"] == {
        "known": False,
        "enabled": True,
        "installed": None,
        "refuses": False,
    }


def test_offline_no_file_is_exit_1(answers_dir: AnswersDir) -> None:
    """
    A machine with no host file, and no C{default.toml}, would get 404: exit 1.
    """
    answers_dir.host("04-3f-72-a8-1e-20.toml")
    done = simulate("--mac", MAC, "--answers", str(answers_dir.root))
    assert done.returncode == 1
    assert "answer file: none" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("not accepted: refused (404): no host file")
    report = as_json(simulate("--mac", MAC, "--answers", str(answers_dir.root), "--json"))
    assert (report["status"], report["outcome"], report["file"]) == (404, "no-answer", None)


def test_offline_a_file_the_installer_rejects_is_exit_1(answers_dir: AnswersDir) -> None:
    """
    A kebab-case file is rejected by installer 8.3: every finding is printed with its
    line, the verdict is the 422 the server would answer, and the exit status 1. Under
    C{--answer-check warn} it would be served, and rejected by the installer: still 1.
    """
    answers_dir.write("default.toml", KEBAB)
    root = str(answers_dir.root)
    newest = simulate("--mac", MAC, "--answers", root)
    assert newest.returncode == 0, newest.stdout
    older = simulate("--mac", MAC, "--answers", root, "--installer-version", "8.3")
    assert older.returncode == 1
    assert "  default.toml:7: error: [global.root-password]" in older.stdout
    assert "findings for installer 8.3.x: 2 errors" in older.stdout
    assert older.stdout.splitlines()[-1] == (
        "not accepted: refused (422): installer 8.3.x would reject default.toml"
    )
    report = as_json(
        simulate("--mac", MAC, "--answers", root, "--installer-version", "8.3", "--json")
    )
    assert (report["status"], report["outcome"], report["errors"]) == (422, "rejected-answer", 2)
    assert {f["key"] for f in report["findings"]} == {
        "global.root-password",
        "disk-setup.disk-list",
    }
    warned = simulate(
        "--mac",
        MAC,
        "--answers",
        root,
        "--installer-version",
        "8.3",
        "--json",
        env={"PXE_PILOT_ANSWER_CHECK": "warn"},
    )
    assert warned.returncode == 1
    assert (as_json(warned)["status"], as_json(warned)["accepted"]) == (200, False)


def test_offline_backup_server(answers_dir: AnswersDir) -> None:
    """
    C{--product pbs} is judged as Backup Server: Btrfs, which only the Proxmox VE
    installer offers, is an error for it, not for Proxmox VE.
    """
    btrfs = KEBAB.replace(b'filesystem = "ext4"', b'filesystem = "btrfs"')
    answers_dir.write("default.toml", btrfs + b'btrfs.raid = "raid0"\n')
    root = str(answers_dir.root)
    assert simulate("--mac", MAC, "--answers", root).returncode == 0
    done = simulate("--mac", MAC, "--answers", root, "--product", "pbs", "--json")
    assert done.returncode == 1
    report = as_json(done)
    assert report["request"]["product"] == "pbs"
    assert report["request"]["release"] == "4.2-1"
    assert report["installer_version"] == "9.2.x"
    assert "disk-setup.filesystem" in {
        f["key"] for f in report["findings"] if f["severity"] == "error"
    }


def test_offline_install_once_from_the_state(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    With C{--state}, the hosts' states are read without writing: an installed host would
    be refused (409, exit 1), and the file it would get once re-armed is still named.
    """
    answers_dir.write("default.toml")
    state = tmp_path / "state"
    ledger = HostLedger(SQLiteHostStore(state / "pxe-pilot.sqlite3"), clock_at_now(), run_here)
    mac = MacAddress.parse(MAC)
    ledger.record(mac, EventKind.ANSWER_SERVED, "answer default.toml served", file="default.toml")
    ledger.record(mac, EventKind.INSTALLED, "installed pve 9.1.1")
    ledger.record(MacAddress.parse(SECOND), EventKind.REARMED, "re-armed for installation")
    ledger.stopService()
    before = {p.name: p.stat().st_mtime_ns for p in state.iterdir()}

    root = str(answers_dir.root)
    done = simulate("--mac", SECOND, "--mac", MAC, "--answers", root, "--state", str(state))
    assert done.returncode == 1
    assert "answer file: default.toml" in done.stdout
    assert f"install once: refuses it: {MAC} was installed on " in done.stdout
    assert f"pxe-pilot reinstall {MAC}" in done.stdout.splitlines()[-1]
    assert {p.name: p.stat().st_mtime_ns for p in state.iterdir()} == before
    assert set(read_hosts(state / "pxe-pilot.sqlite3")) == {mac, MacAddress.parse(SECOND)}

    other = simulate("--mac", SECOND, "--answers", root, "--state", str(state), "--json")
    assert other.returncode == 0
    assert as_json(other)["host"] == {"mac": SECOND, "state": "new"}
    off = simulate(
        "--mac", MAC, "--answers", root, "--state", str(state),
        env={"PXE_PILOT_INSTALL_ONCE": "false"},
    )  # fmt: skip
    assert off.returncode == 0
    assert "install once: off" in off.stdout


def test_offline_usage_errors_are_exit_2(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    What cannot be simulated is exit 2, one line: a bad MAC or version, C{--state}
    without C{--answers}, a missing answers directory or state database.
    """
    answers_dir.write("default.toml")
    root = str(answers_dir.root)
    for args, message in [
        (["--mac", "nope", "--answers", root], "'nope' is not a MAC address"),
        (["--mac", MAC, "--installer-version", "7.4", "--answers", root], "first"),
        (["--mac", MAC, "--installer-version", "nine", "--answers", root], "installer version"),
        (["--mac", MAC, "--state", str(tmp_path)], "--state goes with --answers"),
        (["--mac", MAC, "--answers", str(tmp_path / "missing")], "answers directory"),
        (["--mac", MAC, "--answers", root, "--state", str(tmp_path)], "no pxe-pilot state"),
        ([], "--mac"),
    ]:
        done = simulate(*args)
        assert done.returncode == 2, (args, done.stdout)
        assert message in done.stderr.splitlines()[-1], (args, done.stderr)


# -- against a running server


@pytest.fixture
def server(answers_dir: AnswersDir, tmp_path: Path) -> Iterator[tuple[TwistdProcess, int]]:
    answers_dir.write("default.toml")
    answers_dir.host("04-3f-72-a8-1e-20.toml")
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


def hosts_and_answers(port: int) -> tuple[dict[str, str], list[str]]:
    """
    The server's hosts and states, and its answer counters.
    """
    auth = [("Authorization", f"Bearer {TOKEN}")]
    _, _, body = request(port, "GET", "/hosts", headers=auth)
    hosts = {h["mac"]: h["state"] for h in json.loads(body)["known_hosts"]}
    _, _, metrics = request(port, "GET", "/metrics", headers=auth)
    answers = [
        line
        for line in metrics.decode().splitlines()
        if line.startswith("pxepilot_answers_total{")
    ]
    return hosts, answers


def test_online_records_nothing(
    server: tuple[TwistdProcess, int], answers_dir: AnswersDir
) -> None:
    """
    The server decides as for C{POST /answer} (the host file of the third NIC) but
    records no host, no event and no answer; the online and offline verdicts agree.
    """
    _, port = server
    before = hosts_and_answers(port)
    args = ["--mac", MAC, "--mac", SECOND, "--mac", "04:3f:72:a8:1e:20"]
    done = cli(port, "simulate", *args, "--installer-version", "8.3", "--json")
    assert done.returncode == 1, done.stderr
    report = as_json(done)
    assert (report["file"], report["matched_mac"]) == (
        "hosts/04-3f-72-a8-1e-20.toml",
        "04:3f:72:a8:1e:20",
    )
    assert (report["status"], report["installer_version"]) == (422, "8.3.x")
    assert report["install_once"]["known"] is True
    assert hosts_and_answers(port) == before == ({}, before[1])

    offline = simulate(
        *args, "--installer-version", "8.3", "--json", "--answers", str(answers_dir.root)
    )
    expected = {**report, "install_once": {**report["install_once"], "known": False}}
    assert as_json(offline) == expected

    newest = cli(port, "simulate", *args)
    assert newest.returncode == 0, newest.stdout
    assert "install once: not installed (pxe-pilot has never seen it)" in newest.stdout
    assert hosts_and_answers(port) == before


def test_online_install_once_refuses_an_installed_host(
    server: tuple[TwistdProcess, int], answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    An installed host would be refused (409, exit 1), naming the command that re-arms
    it; simulating leaves its state and timeline as they were. Offline, the running
    server's state database is read as it is being used, and says the same.
    """
    _, port = server
    install(port)
    auth = [("Authorization", f"Bearer {TOKEN}")]
    timeline = request(port, "GET", f"/hosts/{MAC}/status", headers=auth)[2]
    done = cli(port, "simulate", "--mac", MAC, "--mac", SECOND)
    assert done.returncode == 1
    assert f"install once: refuses it: {MAC} was installed on " in done.stdout
    assert done.stdout.splitlines()[-1].startswith("not accepted: refused (409): ")
    report = as_json(cli(port, "simulate", "--mac", MAC, "--json"))
    assert (report["status"], report["outcome"], report["file"]) == (
        409,
        "installed",
        "default.toml",
    )
    assert report["host"] == {"mac": MAC, "state": "installed"}
    assert request(port, "GET", f"/hosts/{MAC}/status", headers=auth)[2] == timeline
    assert cli(port, "simulate", "--mac", "00:11:22:33:44:55").returncode == 0
    live = simulate(
        "--mac", MAC, "--answers", str(answers_dir.root), "--state", str(tmp_path / "state")
    )
    assert live.returncode == 1
    assert f"install once: refuses it: {MAC} was installed on " in live.stdout


def test_online_needs_the_admin_token(server: tuple[TwistdProcess, int]) -> None:
    """
    Without the admin token, or with a wrong one, the route answers 401 and the command
    exits 2, one line; an unreachable server is exit 2 too.
    """
    _, port = server
    body = fixture_bytes("installer-post-9.2.json")
    assert request(port, "POST", "/hosts/simulate", body)[0] == 401
    for token in (None, "wrong-0123456789abcdef"):
        denied = cli(port, "simulate", "--mac", MAC, token=token)
        assert denied.returncode == 2
        assert denied.stderr == (
            "pxe-pilot: error: the server needs its admin token: --admin-token or "
            "PXE_PILOT_ADMIN_TOKEN\n"
        )
    unreachable = cli(1, "simulate", "--mac", MAC)
    assert unreachable.returncode == 2
    assert unreachable.stderr.startswith("pxe-pilot: error: cannot reach pxe-pilot at ")
    auth = [("Authorization", f"Bearer {TOKEN}")]
    code, _, found = request(port, "POST", "/hosts/simulate", b"{}", headers=auth)
    assert (code, json.loads(found)["error"]) == (400, "request body has no network_interfaces")


def test_the_route_takes_a_real_installer_request(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    C{POST /hosts/simulate} takes what an installer POSTs, byte for byte (here 8.2's),
    with C{?accept=} for the C{Accept} header 9.2 sends; nothing reaches the ledger.
    """
    (tmp_path / "assets").mkdir()
    client = Client(answers_dir, tmp_path / "assets", answer_check="refuse")
    answers_dir.host("B0:7B:25:C1:0A:11.toml")
    url = "http://pxe.test/hosts/simulate"
    code, report = client.json("POST", url, data=fixture_bytes("installer-post-8.2.json"))
    assert code == 200
    assert (report["file"], report["installer_version"]) == (
        "hosts/B0:7B:25:C1:0A:11.toml",
        "8.2.x",
    )
    assert report["request"]["uuid"] == "4c4c4544-0058-4b10-8032-b7c04f4c4d33"
    assert report["outcome"] == "rejected-answer"
    body, _ = installer_body(
        [MacAddress.parse("00:11:22:33:44:55")], InstallerVersion.parse("9.2")
    )
    _, shaped = client.json("POST", url, data=body)
    _, accepted = client.json("POST", f"{url}?accept=application/json", data=body)
    assert (shaped["installer_version"], accepted["installer_version"]) == (
        "8.3 to 9.1.x",
        "9.2.x",
    )
    assert client.pilot.ledger.hosts == {}
