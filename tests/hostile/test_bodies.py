"""
Huge bodies, and bodies listing more interfaces than any machine has, sent to the
routes anyone may call: each is refused with a clear error, logs a bounded line,
records no host, and the next real installer is served as before.
"""

from __future__ import annotations

import json

import pytest
from twisted.logger import LogEvent, formatEvent

from pxepilot.answers.request import MAX_INTERFACES
from tests.conftest import fixture_bytes
from tests.test_http import Client

WEBHOOK = "http://pxe.test/webhook"
# The most distinct MACs that fit the 1 MiB a body may have.
MANY = 45_000


def interfaces(count: int, key: str) -> bytes:
    listed = [{"mac": f"{0xB07B25000000 + n:012x}"} for n in range(count)]
    return json.dumps({key: listed}, separators=(",", ":")).encode()


def longest_line(events: list[LogEvent]) -> int:
    return max(len(formatEvent(event)) for event in events)


def served_as_before(client: Client) -> None:
    code, _, body = client.answer(fixture_bytes("installer-post-8.3-to-9.1.json"))
    assert code == 200, body
    assert b"[global]" in body


def test_an_answer_request_with_every_mac_that_fits(
    client: Client, events: list[LogEvent]
) -> None:
    body = interfaces(MANY, "network_interfaces")
    assert len(body) < 1 << 20
    code, _, reply = client.answer(body)
    assert code == 400
    assert f"at most {MAX_INTERFACES}" in json.loads(reply)["error"]
    assert client.pilot.ledger.hosts == {}
    assert longest_line(events) < 2000
    served_as_before(client)


def test_an_answer_request_at_the_limit_is_read(client: Client, events: list[LogEvent]) -> None:
    """
    A request listing as many interfaces as accepted is answered (no file names any of
    them: the default), and its log line names a few MACs and how many more.
    """
    code, _, _ = client.answer(interfaces(MAX_INTERFACES, "network_interfaces"))
    assert code == 200
    assert longest_line(events) < 2000
    assert any(f"and {MAX_INTERFACES - 8:,} more" in formatEvent(e) for e in events)


def test_a_webhook_with_every_mac_that_fits(client: Client, events: list[LogEvent]) -> None:
    code, _, reply = client.request("POST", WEBHOOK, data=interfaces(MANY, "network-interfaces"))
    assert code == 400
    assert f"at most {MAX_INTERFACES}" in json.loads(reply)["error"]
    assert client.pilot.ledger.hosts == {}
    assert longest_line(events) < 2000


@pytest.mark.parametrize("url", ["http://pxe.test/answer", WEBHOOK])
def test_a_body_over_a_mebibyte_is_refused_unread(client: Client, url: str) -> None:
    body = b'{"network_interfaces": [' + b" " * (1 << 20) + b"]}"
    code, _, _ = client.request("POST", url, data=body)
    assert code == 413
    assert client.pilot.ledger.hosts == {}
    served_as_before(client)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
        pytest.param(
            b'{"network_interfaces": [{"mac": "' + b"a" * 500_000 + b'"}]}', id="long-mac"
        ),
        pytest.param(b'{"network_interfaces": "' + b"\\u0000" * 100_000 + b'"}', id="escapes"),
    ],
)
def test_bodies_made_to_hurt_the_parser(
    client: Client, events: list[LogEvent], body: bytes
) -> None:
    code, _, reply = client.answer(body)
    assert code == 400
    assert len(reply) < 2000
    assert longest_line(events) < 2000
    served_as_before(client)
