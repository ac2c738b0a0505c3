"""
The HTTP routes, in memory: what the installer and an operator get for every request.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.logger import LogEvent, LogLevel

from pxepilot import Config, PxePilot
from pxepilot.hosts.ledger import run_here
from tests.conftest import (
    MINIMAL_ANSWER,
    AnswersDir,
    clock_at_now,
    events_with,
    fixture_bytes,
    marker,
    result_of,
)

ANSWER = "http://pxe-pilot.test/answer"
R650_SECOND_NIC = "b0-7b-25-c1-0a-11.toml"


class Client:
    """
    An in-memory client of one pxe-pilot instance.
    """

    def __init__(self, answers: AnswersDir, assets: Path, **config: Any) -> None:
        self.pilot = PxePilot(
            Config(
                answers_dir=answers.root,
                assets_dir=assets,
                state_dir=config.pop("state_dir", assets.parent / "state"),
                # These tests are about which file is served; the answer check has its own.
                answer_check=config.pop("answer_check", "warn"),
                **config,
            ),
            clock_at_now(),
            run_blocking=run_here,
        )
        # StubTreq's methods are made at run time; mypy cannot see them.
        self.treq: Any = StubTreq(self.pilot.resource)

    def request(self, method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        response = result_of(self.treq.request(method, url, **kwargs))
        body = result_of(self.treq.content(response))
        headers = {
            k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()
        }
        return response.code, headers, body

    def answer(self, body: bytes, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        return self.request("POST", ANSWER, data=body, **kwargs)

    def json(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        code, headers, body = self.request(method, url, **kwargs)
        assert headers["content-type"] == "application/json"
        return code, json.loads(body)


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    path = tmp_path / "assets"
    path.mkdir()
    return path


@pytest.fixture
def client(answers_dir: AnswersDir, assets: Path) -> Client:
    return Client(answers_dir, assets)


FIXTURE_HEADERS = {
    "installer-post-8.2.json": {"Content-type": "application/json; charset=utf-"},
    "installer-post-8.3-to-9.1.json": {"Content-Type": "application/json; charset=utf-8"},
    "installer-post-9.2.json": {
        "Content-Type": "application/json; charset=utf-8",
        "Accept": "application/json, application/toml;q=0.5",
    },
}


@pytest.mark.parametrize("fixture", sorted(FIXTURE_HEADERS))
def test_every_installer_gets_its_host_file(
    client: Client, answers_dir: AnswersDir, fixture: str
) -> None:
    """
    Each installer generation (8.2's truncated charset, 9.2's upper-case MACs) gets the
    file of its first MAC that has one, byte for byte, as TOML.
    """
    answers_dir.write("default.toml")
    answers_dir.host("B0:7B:25:C1:0A:11.toml")
    answers_dir.host("04-3f-72-a8-1e-20.toml")
    code, headers, body = client.answer(fixture_bytes(fixture), headers=FIXTURE_HEADERS[fixture])
    assert code == 200
    assert body == marker("B0:7B:25:C1:0A:11.toml")
    assert headers["content-type"] == "application/toml; charset=utf-8"
    assert headers["x-pxe-pilot-source"] == "hosts/B0:7B:25:C1:0A:11.toml"
    assert headers["cache-control"] == "no-store"


def test_backup_server_gets_the_default(client: Client, answers_dir: AnswersDir) -> None:
    """
    A machine without a host file gets C{default.toml}.
    """
    answers_dir.write("default.toml", b"[global]\nkeyboard = 'de'\n")
    answers_dir.host(R650_SECOND_NIC)
    code, headers, body = client.answer(fixture_bytes("installer-post-pbs-vm-9.2.json"))
    assert (code, body) == (200, b"[global]\nkeyboard = 'de'\n")
    assert headers["x-pxe-pilot-source"] == "default.toml"


def test_no_answer_is_404(client: Client) -> None:
    """
    Without host file and default: 404 with a JSON error naming the MACs.
    """
    code, error = client.json("POST", ANSWER, data=fixture_bytes("installer-post-9.2.json"))
    assert code == 404
    assert "b0:7b:25:c1:0a:10" in error["error"]
    assert "no default.toml" in error["error"]


def test_invalid_toml_is_422_naming_file_and_line(client: Client, answers_dir: AnswersDir) -> None:
    """
    A host file that is not valid TOML is never served: 422 naming the file and line.
    """
    answers_dir.host(R650_SECOND_NIC, b'[global]\nkeyboard = "en-us\n')
    code, error = client.json("POST", ANSWER, data=fixture_bytes("installer-post-9.2.json"))
    assert code == 422
    assert error["file"] == f"hosts/{R650_SECOND_NIC}"
    assert error["line"] == 2
    assert error["error"].startswith(f"hosts/{R650_SECOND_NIC}, line 2, column ")


def test_invalid_utf8_is_422(client: Client, answers_dir: AnswersDir) -> None:
    """
    An answer file in Latin-1 is refused with its line.
    """
    answers_dir.write("default.toml", b'[global]\nfqdn = "h\xf6st.example.com"\n')
    code, error = client.json("POST", ANSWER, data=fixture_bytes("installer-post-9.2.json"))
    assert code == 422
    assert error["error"] == "default.toml, line 2, column 10: not valid UTF-8"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "has no network_interfaces"),
        (b'{"network_interfaces": "eth0"}', "must be a list"),
        (b'{"network_interfaces": [{"mac": "zz:zz"}]}', "is not a MAC address"),
        (b'{"network_interfaces": [{"mac": "../../../etc/passwd"}]}', "is not a MAC address"),
        (b'{"network_interfaces": [{"link": "eth0"}]}', "has no mac"),
        (b'{"network_interfaces": [null]}', "must be an object"),
    ],
)
def test_bad_input_is_400(
    client: Client, answers_dir: AnswersDir, body: bytes, fragment: str
) -> None:
    """
    Bad bodies get 400 with a JSON error, never a 500, even when a default exists.
    """
    answers_dir.write("default.toml")
    code, error = client.json("POST", ANSWER, data=body)
    assert code == 400
    assert fragment in error["error"]


def test_oversized_body_is_413_when_mounted_elsewhere(client: Client) -> None:
    """
    The resource refuses a body over 1 MiB itself, for hosts whose site does not bound
    bodies.
    """
    code, error = client.json("POST", ANSWER, data=b" " * (1 << 20) + b"{}")
    assert code == 413
    assert "larger than" in error["error"]


def test_answer_request_logged_once(
    client: Client, answers_dir: AnswersDir, events: list[LogEvent]
) -> None:
    """
    Each answer request is one structured event: client, product, release, MACs and
    the file that answered.
    """
    # As 8.2 installers spell it: snake_case keys.
    answer = MINIMAL_ANSWER.replace(b"root-password", b"root_password")
    answers_dir.host(R650_SECOND_NIC, answer.replace(b"disk-list", b"disk_list"))
    client.answer(fixture_bytes("installer-post-8.2.json"))
    [event] = [e for e in events if "outcome" in e]
    assert event["outcome"] == "served"
    assert event["log_level"] == LogLevel.info
    assert event["client"] == "127.0.0.1"
    assert (event["product"], event["release"]) == ("pve", "8.2-2")
    assert event["macs"] == ["b0:7b:25:c1:0a:10", "b0:7b:25:c1:0a:11", "04:3f:72:a8:1e:20"]
    assert event["source"] == f"hosts/{R650_SECOND_NIC}"


@pytest.mark.parametrize(
    ("setup", "outcome", "level"),
    [
        ("none", "no-answer", LogLevel.warn),
        ("invalid", "invalid-answer", LogLevel.error),
        ("bad", "bad-request", LogLevel.warn),
    ],
)
def test_refusals_are_logged_with_reason(
    client: Client,
    answers_dir: AnswersDir,
    events: list[LogEvent],
    setup: str,
    outcome: str,
    level: LogLevel,
) -> None:
    """
    A refused answer request is logged once, saying why.
    """
    if setup == "invalid":
        answers_dir.write("default.toml", b"x")
    body = b"[]" if setup == "bad" else fixture_bytes("installer-post-9.2.json")
    client.answer(body)
    [event] = [e for e in events if "outcome" in e]
    assert (event["outcome"], event["log_level"]) == (outcome, level)
    assert event["reason"]


def test_forwarded_for_only_from_trusted_proxies(
    answers_dir: AnswersDir, assets: Path, events: list[LogEvent]
) -> None:
    """
    C{X-Forwarded-For} names the client only when the peer is a trusted proxy.
    """
    answers_dir.write("default.toml")
    headers = {"X-Forwarded-For": "198.51.100.7"}
    Client(answers_dir, assets).answer(fixture_bytes("installer-post-9.2.json"), headers=headers)
    trusting = Client(
        answers_dir, assets, trusted_proxies=(__import__("ipaddress").ip_network("127.0.0.0/8"),)
    )
    trusting.answer(fixture_bytes("installer-post-9.2.json"), headers=headers)
    assert [e["client"] for e in events if "outcome" in e] == ["127.0.0.1", "198.51.100.7"]


def test_hosts_tells_the_truth_after_changes(client: Client, answers_dir: AnswersDir) -> None:
    """
    C{/hosts} reflects additions, breakage and removals on disk at once.
    """
    code, report = client.json("GET", "http://x/hosts")
    assert code == 200
    assert report == {
        "default": {"file": "default.toml", "present": False},
        "hosts": [],
        "identity_files": [],
        "unrecognised_files": [],
        "boot_settings": [],
        "known_hosts": [],
        "states": {
            "new": 0,
            "booting": 0,
            "installing": 0,
            "installed": 0,
            "local-boot": 0,
            "failed": 0,
        },
    }
    answers_dir.write("default.toml")
    answers_dir.host("AABBCCDDEEFF.toml", b"[oops\n")
    _, report = client.json("GET", "http://x/hosts")
    assert report["default"]["valid"] is True
    assert [(h["mac"], h["valid"]) for h in report["hosts"]] == [("aa:bb:cc:dd:ee:ff", False)]
    answers_dir.host("AABBCCDDEEFF.toml")
    os.remove(answers_dir.root / "default.toml")
    _, report = client.json("GET", "http://x/hosts")
    assert report["default"] == {"file": "default.toml", "present": False}
    assert [(h["mac"], h["valid"]) for h in report["hosts"]] == [("aa:bb:cc:dd:ee:ff", True)]


@pytest.mark.parametrize(
    "spelling", ["b0:7b:25:c1:0a:11", "B0-7B-25-C1-0A-11", "b07b.25c1.0a11", "B07B25C10A11"]
)
def test_host_lookup_in_any_spelling(
    client: Client, answers_dir: AnswersDir, spelling: str
) -> None:
    """
    C{/hosts/{mac}} accepts any spelling and returns what that machine would receive.
    """
    answers_dir.host(R650_SECOND_NIC)
    code, headers, body = client.request("GET", f"http://x/hosts/{spelling}")
    assert (code, body) == (200, marker(R650_SECOND_NIC))
    assert headers["x-pxe-pilot-source"] == f"hosts/{R650_SECOND_NIC}"
    assert headers["content-type"] == "application/toml; charset=utf-8"


def test_host_lookup_falls_back_and_refuses(client: Client, answers_dir: AnswersDir) -> None:
    """
    Default with its source header; 404 without one; 400 for a malformed MAC; 422 for a
    file that cannot be served.
    """
    assert client.json("GET", "http://x/hosts/aa:bb:cc:dd:ee:ff")[0] == 404
    code, error = client.json("GET", "http://x/hosts/not-a-mac")
    assert (code, error["error"]) == (400, "'not-a-mac' is not a MAC address")
    assert client.json("GET", "http://x/hosts/..%2F..%2Fetc%2Fpasswd")[0] == 404
    assert client.json("GET", "http://x/hosts/aa:bb:cc:dd:ee")[0] == 400
    answers_dir.write("default.toml")
    code, headers, body = client.request("GET", "http://x/hosts/aa:bb:cc:dd:ee:ff")
    assert (code, body, headers["x-pxe-pilot-source"]) == (200, MINIMAL_ANSWER, "default.toml")
    answers_dir.host("aa-bb-cc-dd-ee-ff.toml", b"")
    assert client.json("GET", "http://x/hosts/aa:bb:cc:dd:ee:ff")[0] == 422


def test_health(client: Client, answers_dir: AnswersDir, assets: Path) -> None:
    """
    C{/health} is 200 and says what is present; degraded when a file is broken; 503
    when the answers or assets directory is gone.
    """
    answers_dir.write("default.toml")
    answers_dir.host(R650_SECOND_NIC)
    code, health = client.json("GET", "http://x/health")
    assert code == 200
    # Degraded by the empty assets directory alone.
    assert health["status"] == "degraded"
    assert health["version"]
    assert health["answers"] == {
        "status": "ok",
        "directory": "readable",
        "default_present": True,
        "default_valid": True,
        "host_count": 1,
        "invalid_files": [],
        "conflicting_macs": [],
    }
    assert health["assets"] == {
        "status": "degraded",
        "directory": "readable",
        "versions": [],
        "invalid_versions": [],
        "reasons": ["no boot assets: run pxe-pilot-builder"],
    }
    assert health["tftp"] == {"status": "disabled"}
    assert health["hosts"] == {"status": "ok", "hosts": 0}
    assert str(answers_dir.root) not in json.dumps(health)

    answers_dir.host("B0:7B:25:C1:0A:11.toml", b"[x")
    code, health = client.json("GET", "http://x/health")
    assert (code, health["status"]) == (200, "degraded")
    assert health["answers"]["invalid_files"] == ["hosts/B0:7B:25:C1:0A:11.toml"]
    assert health["answers"]["conflicting_macs"] == ["b0:7b:25:c1:0a:11"]

    shutil.rmtree(assets)
    code, health = client.json("GET", "http://x/health")
    assert (code, health["status"], health["assets"]["status"]) == (
        503,
        "unavailable",
        "unavailable",
    )
    assets.mkdir()
    shutil.rmtree(answers_dir.root)
    code, health = client.json("GET", "http://x/health")
    assert (code, health["answers"]["status"]) == (503, "unavailable")


def test_answers_directory_gone(client: Client, answers_dir: AnswersDir) -> None:
    """
    With the answers directory gone, answers and inspection say so with 503.
    """
    shutil.rmtree(answers_dir.root)
    code, error = client.json("POST", ANSWER, data=fixture_bytes("installer-post-9.2.json"))
    assert code == 503
    assert "answers directory" in error["error"]
    assert client.json("GET", "http://x/hosts")[0] == 503
    assert client.json("GET", "http://x/hosts/aa:bb:cc:dd:ee:ff")[0] == 503


def test_unknown_routes_and_methods(client: Client) -> None:
    """
    Unknown paths are a JSON 404; wrong methods a JSON 405 with C{Allow}.
    """
    assert client.json("GET", "http://x/nothing")[0] == 404
    code, headers, _ = client.request("GET", ANSWER)
    assert (code, headers["allow"]) == (405, "POST")
    assert client.json("DELETE", "http://x/hosts")[0] == 405


def test_events_helper_filters(events: list[LogEvent]) -> None:
    """
    The events helper finds events by field.
    """
    events.append({"a": 1, "b": 2})
    assert events_with(events, a=1) == [{"a": 1, "b": 2}]
    assert events_with(events, a=2) == []
