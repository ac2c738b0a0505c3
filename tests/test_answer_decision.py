"""
The answer decision, as a pure function: install-once first, then the file found and
what the asking installer would make of it.
"""

from __future__ import annotations

import pytest

from pxepilot.answers.check import AnswerProblem
from pxepilot.answers.decision import Installed, Refuse, Serve, decide_answer
from pxepilot.answers.request import parse_installer_request
from pxepilot.answers.service import Invalid, NoAnswer, Served
from pxepilot.macs import MacAddress
from tests.conftest import MINIMAL_ANSWER, fixture_bytes

INSTALLER = parse_installer_request(fixture_bytes("installer-post-9.2.json"))
MAC = INSTALLER.macs[0]
# No installer knows this filesystem.
REJECTED = MINIMAL_ANSWER.replace(b'filesystem = "ext4"', b'filesystem = "ntfs"')


def test_an_installed_host_is_refused_whatever_its_file() -> None:
    """
    Install-once wins over any file: 409, naming the host, when, and how to re-arm it;
    a warning, not an error (the operator asked for it).
    """
    installed = Installed(MacAddress.parse("b0:7b:25:c1:0a:10"), 0.0)
    decision = decide_answer(
        INSTALLER, None, installed, Served("default.toml", MINIMAL_ANSWER, None), "refuse"
    )
    assert isinstance(decision, Refuse)
    assert (decision.code, decision.outcome, decision.level) == (409, "installed", "warn")
    assert "installed on 1970-01-01 00:00 UTC" in decision.reason
    assert "pxe-pilot reinstall b0:7b:25:c1:0a:10" in decision.body["error"]


def test_a_clean_file_is_served_with_its_versions() -> None:
    """
    A file the installer accepts is served, with the version range it was checked for.
    """
    served = Served("hosts/x.toml", MINIMAL_ANSWER, MAC)
    decision = decide_answer(INSTALLER, None, None, served, "refuse")
    assert isinstance(decision, Serve)
    assert decision.served == served
    assert decision.rejected == ()
    assert str(decision.versions).startswith("9.2")


def test_a_file_the_installer_would_reject_is_refused_or_served_by_policy() -> None:
    """
    C{refuse}: 422 with every finding and the version; C{warn}: served, the findings it
    would be rejected for kept for the log.
    """
    served = Served("default.toml", REJECTED, None)
    refused = decide_answer(INSTALLER, None, None, served, "refuse")
    assert isinstance(refused, Refuse)
    assert (refused.code, refused.outcome, refused.source) == (
        422,
        "rejected-answer",
        served.source,
    )
    assert refused.body["file"] == "default.toml"
    assert any("filesystem" in f["key"] for f in refused.body["findings"])
    warned = decide_answer(INSTALLER, None, None, served, "warn")
    assert isinstance(warned, Serve)
    assert warned.rejected


def test_an_invalid_file_is_refused_with_its_position() -> None:
    """
    A file that is not TOML: 422 with the file, line and column.
    """
    invalid = Invalid("default.toml", AnswerProblem("not valid TOML: x", 3, 7))
    decision = decide_answer(INSTALLER, None, None, invalid, "warn")
    assert isinstance(decision, Refuse)
    assert (decision.code, decision.outcome, decision.level) == (422, "invalid-answer", "error")
    assert (decision.body["line"], decision.body["column"]) == (3, 7)


def test_no_file_is_a_404_naming_the_macs() -> None:
    """
    Nothing for these MACs and no default: 404, every MAC named.
    """
    decision = decide_answer(INSTALLER, None, None, NoAnswer(), "refuse")
    assert isinstance(decision, Refuse)
    assert (decision.code, decision.outcome, decision.level) == (404, "no-answer", "warn")
    for mac in INSTALLER.macs:
        assert str(mac) in decision.body["error"]


def test_a_request_must_be_resolved_unless_installed() -> None:
    """
    Deciding without a resolution is a programming error, not a refusal.
    """
    with pytest.raises(AssertionError):
        decide_answer(INSTALLER, None, None, None, "refuse")
