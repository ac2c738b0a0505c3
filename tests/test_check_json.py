"""
C{pxe-pilot check --json}: the findings of every answer file as one JSON document a CI
job reads, with the exit status of C{check} without it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import MINIMAL_ANSWER, AnswersDir
from tests.test_answer_check_routes import NO_SOURCE, SNAKE
from tests.test_cli import PXE_PILOT

HASHED = MINIMAL_ANSWER.replace(
    b'root-password = "changeme123"', b'root-password-hashed = "$6$salt$abcdefgh"'
)


def check_json(*args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [str(PXE_PILOT), "check", "--json", *args], capture_output=True, text=True, timeout=30
    )
    report = json.loads(done.stdout)
    assert isinstance(report, dict)
    return done.returncode, report, done.stderr


def test_findings_per_file(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    Each file has its path, whether it is accepted and its findings, each with line,
    severity, key, message, fix and the installer versions checked; a file the
    installer rejects makes the exit status 1, as without C{--json}.
    """
    answers_dir.write("default.toml", SNAKE)
    answers_dir.host("b0-7b-25-c1-0a-10.toml", NO_SOURCE)
    code, report, _ = check_json(str(answers_dir.root), "--assets", str(tmp_path / "none"))
    assert code == 1
    assert (report["installer_version"], report["accepted"], report["error"]) == (
        "9.2.x",
        False,
        None,
    )
    assert (report["checked"], report["rejected"]) == (2, 1)
    default, host = report["files"]
    assert (default["file"], default["path"], default["accepted"]) == (
        "default.toml",
        str(answers_dir.root / "default.toml"),
        True,
    )
    assert {f["severity"] for f in default["findings"]} == {"warning"}
    security = [f for f in default["findings"] if f.get("security")]
    assert [(f["key"], f["line"]) for f in security] == [("global.root_password", 7)]
    assert (host["file"], host["accepted"]) == ("hosts/b0-7b-25-c1-0a-10.toml", False)
    [error] = [f for f in host["findings"] if f["severity"] == "error"]
    assert set(error) == {"severity", "key", "line", "message", "fix", "versions"}
    assert (error["key"], error["versions"]) == ("network.source", "9.2.x")
    assert isinstance(error["line"], int) and error["message"].startswith("is required")
    assert report["assets"] == []


def test_same_exit_status_as_check(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    Accepted files exit 0; an older installer that rejects them exits 1; a directory
    without answers exits 1 with its error in the document and on stderr; a bad version
    is a usage error (2).
    """
    answers_dir.write("default.toml", HASHED)
    code, report, _ = check_json(str(answers_dir.root), "--assets", str(tmp_path / "none"))
    assert (code, report["accepted"], report["files"][0]["findings"]) == (0, True, [])
    older = check_json(str(answers_dir.root), "--installer-version", "8.3")
    assert (older[0], older[1]["installer_version"], older[1]["accepted"]) == (1, "8.3.x", False)

    answers_dir.write("default.toml", b"[global\n")
    code, report, _ = check_json(str(answers_dir.root / "default.toml"))
    assert code == 1
    [finding] = report["files"][0]["findings"]
    assert (finding["line"], finding["message"].startswith("not valid TOML")) == (1, True)

    empty = tmp_path / "empty"
    empty.mkdir()
    code, report, stderr = check_json(str(empty))
    assert (code, report["files"], report["accepted"]) == (1, [], False)
    assert report["error"] == f"{empty}: no default.toml and no hosts/*.toml"
    assert stderr == f"pxe-pilot: error: {report['error']}\n"

    bad = subprocess.run(
        [str(PXE_PILOT), "check", "--json", str(empty), "--installer-version", "nine"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2


def test_unrecognised_names_are_warnings(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    A file in C{hosts/} whose name is no MAC address is listed, never served, with a
    warning; it does not fail the check.
    """
    answers_dir.write("default.toml", HASHED)
    answers_dir.host("web01.toml", HASHED)
    code, report, _ = check_json(str(answers_dir.root), "--assets", str(tmp_path / "none"))
    assert code == 0
    [unrecognised] = [f for f in report["files"] if not f["served"]]
    assert unrecognised["file"] == "hosts/web01.toml"
    assert [f["severity"] for f in unrecognised["findings"]] == ["warning"]
