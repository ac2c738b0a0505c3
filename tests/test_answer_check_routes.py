"""
The answer check over HTTP: the installer asking is recognised from its request, a file
it would reject is refused with every finding (or served with --answer-check warn), and
C{/hosts} and C{/hosts/{mac}} say what each file would meet.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from twisted.logger import LogEvent, LogLevel

from tests.conftest import MINIMAL_ANSWER, AnswersDir, fixture_bytes
from tests.test_http import Client

KEBAB = MINIMAL_ANSWER
SNAKE = MINIMAL_ANSWER.replace(b"root-password", b"root_password").replace(
    b"disk-list", b"disk_list"
)
# What 8.2 and 8.3 installers read; 9.2 needs [network] source, which this has.
NO_SOURCE = KEBAB.replace(b'source = "from-dhcp"\n', b"")
PXE_PILOT = Path(sys.executable).parent / "pxe-pilot"


@pytest.fixture
def refusing(answers_dir: AnswersDir, tmp_path: Path) -> Client:
    (tmp_path / "assets").mkdir()
    return Client(answers_dir, tmp_path / "assets", answer_check="refuse")


@pytest.mark.parametrize(
    ("fixture", "headers", "answer", "code"),
    [
        # 8.2: no $schema, snake_case only.
        ("installer-post-8.2.json", {}, SNAKE, 200),
        ("installer-post-8.2.json", {}, KEBAB, 422),
        # 9.1 (from its ISO release): kebab-case canonical, snake_case still accepted.
        ("installer-post-8.3-to-9.1.json", {}, KEBAB, 200),
        ("installer-post-8.3-to-9.1.json", {}, SNAKE, 200),
        ("installer-post-8.3-to-9.1.json", {}, NO_SOURCE, 200),
        # 9.2: [network] source is required.
        ("installer-post-9.2.json", {"Accept": "application/json"}, KEBAB, 200),
        ("installer-post-9.2.json", {"Accept": "application/json"}, NO_SOURCE, 422),
    ],
)
def test_each_installer_gets_what_it_accepts(
    refusing: Client,
    answers_dir: AnswersDir,
    fixture: str,
    headers: dict[str, str],
    answer: bytes,
    code: int,
) -> None:
    """
    The same file is served to the installers that accept it and refused, before the
    machine tries it, to those that would not.
    """
    answers_dir.write("default.toml", answer)
    got, _, _ = refusing.answer(fixture_bytes(fixture), headers=headers)
    assert got == code


def test_refusal_explains_every_finding(refusing: Client, answers_dir: AnswersDir) -> None:
    """
    The 422 body names the installer, the file, each line and key, and what to write:
    the installer prints it on the machine's console.
    """
    answers_dir.write("default.toml", KEBAB.replace(b'keyboard = "en-us"', b'keyboard = "en-US"'))
    code, body = refusing.json(
        "POST", "http://pxe.test/answer", data=fixture_bytes("installer-post-8.2.json")
    )
    assert code == 422
    assert body["file"] == "default.toml"
    assert body["installer_version"] == "8.2.x"
    assert body["error"].startswith("installer 8.2.x would reject default.toml: ")
    assert "default.toml:2: error: [global.keyboard] 'en-US' is not one of" in body["error"]
    assert "write 'root_password'" in body["error"]
    keys = {f["key"] for f in body["findings"] if f["severity"] == "error"}
    assert {"global.keyboard", "global.root-password", "disk-setup.disk-list"} <= keys
    # The refusal is on the host's timeline, with its reason.
    [host] = refusing.pilot.ledger.hosts.values()
    assert (host.last_event.kind.value, host.last_event.detail["code"]) == ("answer-refused", 422)


def test_warn_serves_and_logs(
    answers_dir: AnswersDir, tmp_path: Path, events: list[LogEvent]
) -> None:
    """
    With --answer-check warn the file is served, and the one log line of the request
    says what the installer would reject.
    """
    (tmp_path / "assets").mkdir()
    client = Client(answers_dir, tmp_path / "assets", answer_check="warn")
    answers_dir.write("default.toml", KEBAB)
    code, _, body = client.answer(fixture_bytes("installer-post-8.2.json"))
    assert (code, body) == (200, KEBAB)
    [event] = [e for e in events if "outcome" in e]
    assert (event["outcome"], event["log_level"]) == ("served", LogLevel.warn)
    assert "which installer 8.2.x would reject" in event["log_format"].format(**event)


def test_hosts_report_findings(refusing: Client, answers_dir: AnswersDir) -> None:
    """
    C{/hosts} checks every file for the newest installer, or the one asked for;
    C{/hosts/{mac}} gives the findings as headers on the TOML, or as JSON.
    """
    answers_dir.write("default.toml", SNAKE)
    answers_dir.host("b0-7b-25-c1-0a-10.toml", NO_SOURCE)
    code, report = refusing.json("GET", "http://pxe.test/hosts")
    assert code == 200
    assert report["default"]["installer_version"] == "9.2.x"
    assert report["default"]["accepted"] is True
    assert {f["severity"] for f in report["default"]["findings"]} == {"warning"}
    [host] = report["hosts"]
    assert host["accepted"] is False
    assert [f["key"] for f in host["findings"]] == ["network.source"]

    code, report = refusing.json("GET", "http://pxe.test/hosts?installer-version=9.1")
    assert report["hosts"][0]["accepted"] is True
    code, report = refusing.json("GET", "http://pxe.test/hosts?installer-version=8.3")
    assert report["default"]["accepted"] is True
    assert report["hosts"][0]["accepted"] is False
    code, error = refusing.json("GET", "http://pxe.test/hosts?installer-version=nine")
    assert code == 400
    assert "installer version" in error["error"]

    code, headers, body = refusing.request("GET", "http://pxe.test/hosts/b0:7b:25:c1:0a:10")
    assert (code, body) == (200, NO_SOURCE)
    assert (headers["x-pxe-pilot-errors"], headers["x-pxe-pilot-warnings"]) == ("1", "0")
    assert headers["x-pxe-pilot-installer-version"] == "9.2.x"
    code, found = refusing.json(
        "GET",
        "http://pxe.test/hosts/b0:7b:25:c1:0a:10?installer-version=9.1",
        headers={"Accept": "application/json"},
    )
    assert (code, found["accepted"], found["findings"]) == (200, True, [])
    assert found["answer"] == NO_SOURCE.decode()


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PXE_PILOT), "check", *args], capture_output=True, text=True, timeout=30
    )


def test_check_command(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    C{pxe-pilot check} prints each finding with file, line and key, exits 1 when an
    installer would reject a file and 0 otherwise; a directory without answers, a bad
    version and a broken file are each one clear line.
    """
    answers_dir.write("default.toml", SNAKE)
    answers_dir.host("b0-7b-25-c1-0a-10.toml", NO_SOURCE)
    newest = check(str(answers_dir.root))
    assert newest.returncode == 1
    lines = newest.stdout.splitlines()
    assert any(
        line.startswith("hosts/b0-7b-25-c1-0a-10.toml:9: error: [network.source] is required")
        for line in lines
    ), lines
    assert any(
        line.startswith("default.toml:7: warning: [global.root-password]") for line in lines
    )
    assert lines[-1] == "2 files checked for installer 9.2.x: 1 of 2 would be rejected, 2 warnings"

    older = check(str(answers_dir.root), "--installer-version", "8.3")
    assert older.returncode == 1
    assert older.stdout.splitlines()[-1].startswith("2 files checked for installer 8.3.x: 1 of 2")

    single = check(str(answers_dir.root / "default.toml"), "--installer-version", "9.1")
    assert (single.returncode, single.stdout.splitlines()[-1]) == (
        0,
        "1 file checked for installer 9.1.x: all accepted, 2 warnings",
    )
    answers_dir.write("default.toml", b"[global\n")
    broken = check(str(answers_dir.root / "default.toml"))
    assert broken.returncode == 1
    assert broken.stdout.startswith("default.toml:1: error: not valid TOML")

    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = check(str(empty))
    assert (nothing.returncode, nothing.stderr) == (
        1,
        f"pxe-pilot: error: {empty}: no default.toml and no hosts/*.toml\n",
    )
    missing = check(str(tmp_path / "missing"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("pxe-pilot: error: ")
    bad = check(str(answers_dir.root), "--installer-version", "nine")
    assert bad.returncode == 2
    assert "is not an installer version" in bad.stderr


def test_check_warns_of_a_plain_root_password(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    A root password in plain text is accepted by the installer, so the file passes, but
    C{pxe-pilot check} warns with the line and how to write C{root-password-hashed}; a
    hashed password gets no such warning.
    """
    answers_dir.write("default.toml")
    plain = check(str(answers_dir.root), "--assets", str(tmp_path / "none"))
    assert plain.returncode == 0
    [warning] = [line for line in plain.stdout.splitlines() if "security warning" in line]
    assert warning.startswith("default.toml:7: security warning: [global.root-password]")
    assert "openssl passwd -6" in warning
    hashed = MINIMAL_ANSWER.replace(
        b'root-password = "changeme123"', b'root-password-hashed = "$6$salt$abcdefgh"'
    )
    answers_dir.write("default.toml", hashed)
    quiet = check(str(answers_dir.root), "--assets", str(tmp_path / "none"))
    assert "security warning" not in quiet.stdout


def test_check_names_assets_pinned_to_another_certificate(
    answers_dir: AnswersDir, tmp_path: Path
) -> None:
    """
    With the assets and the state directory at hand, an asset whose installers pin
    another certificate than pxe-pilot's is an error (exit 1), naming it; one pinned to
    pxe-pilot's own certificate is fine.
    """
    import json
    from datetime import UTC, datetime

    from pxepilot.tls import load_or_create
    from tests.test_boot_routes import publish

    answers_dir.write("default.toml")
    state, assets = tmp_path / "state", tmp_path / "assets"
    served = load_or_create(state, ["localhost"], datetime.now(UTC)).fingerprint
    for version, pinned in (("9.1-1", served), ("9.0-1", "CD" * 32)):
        target = publish(assets, version)
        metadata = json.loads((target / "asset.json").read_text())
        metadata["answer"] = {"url": "https://192.0.2.10:8443/answer", "cert_fingerprint": pinned}
        (target / "asset.json").write_text(json.dumps(metadata))
    result = check(str(answers_dir.root), "--assets", str(assets), "--state", str(state))
    assert result.returncode == 1
    [error] = [line for line in result.stdout.splitlines() if "pin another" in line]
    assert error.startswith(f"{assets / 'proxmox-ve' / '9.0-1'}: error:")
    assert served in error
    (assets / "proxmox-ve" / "9.0-1" / "asset.json").unlink()
    fine = check(str(answers_dir.root), "--assets", str(assets), "--state", str(state))
    assert fine.returncode == 0
