"""
Re-arming refuses what a browser sends on behalf of another site (cross-site request
forgery), and accepts what the operator's own clients send: the pxe-pilot command, curl,
and a browser on pxe-pilot's own page.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pxepilot.hosts.model import EventKind, HostState
from pxepilot.http.operator import forged_because, origin_of
from pxepilot.macs import MacAddress
from tests.conftest import AnswersDir
from tests.test_boot_routes import publish
from tests.test_http import Client

MAC = MacAddress.parse("b0:7b:25:c1:0a:10")
REARM = f"http://pxe.test/hosts/{MAC}/reinstall"
TOKEN = "admin-0123456789abcdef"
BASIC = "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()
BEARER = f"Bearer {TOKEN}"


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    path = tmp_path / "assets"
    path.mkdir()
    publish(path, "9.1-1")
    return path


def installed_client(answers_dir: AnswersDir, assets: Path, **config: object) -> Client:
    answers_dir.write("default.toml")
    client = Client(answers_dir, assets, **config)
    client.pilot.ledger.note(MAC, EventKind.INSTALLED, "installed")
    return client


def state(client: Client) -> HostState:
    host = client.pilot.ledger.host(MAC)
    assert host is not None
    return host.state


FORGED = [
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="cross-site"),
    pytest.param({"Sec-Fetch-Site": "same-site"}, id="same-site-other-host"),
    pytest.param({"Origin": "https://evil.example"}, id="foreign-origin"),
    pytest.param({"Origin": "null"}, id="null-origin"),
    pytest.param({"Origin": "http://pxe.test:8080"}, id="other-port"),
    pytest.param({"Origin": "https://pxe.test"}, id="other-scheme"),
    pytest.param(
        {"Origin": "https://evil.example", "X-PXE-Pilot-Request": "1"},
        id="foreign-origin-with-header",
    ),
    pytest.param(
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
        id="cross-site-json",
    ),
]


@pytest.mark.parametrize("headers", FORGED)
@pytest.mark.parametrize("authorization", [None, BASIC, BEARER], ids=["open", "basic", "bearer"])
def test_a_request_from_another_site_changes_nothing(
    answers_dir: AnswersDir, assets: Path, headers: dict[str, str], authorization: str | None
) -> None:
    """
    Whatever credentials it carries, a re-arm a browser sends for another site's page
    is refused with 403 and the host stays installed.
    """
    token = None if authorization is None else TOKEN
    client = installed_client(answers_dir, assets, admin_token=token)
    sent = dict(headers)
    if authorization is not None:
        sent["Authorization"] = authorization
    code, report = client.json("POST", REARM, headers=sent)
    assert code == 403
    assert "another" in report["error"] or "browser" in report["error"]
    assert state(client) is HostState.INSTALLED


@pytest.mark.parametrize(
    "content_type", [None, "application/x-www-form-urlencoded", "text/plain; charset=utf-8"]
)
def test_a_form_with_basic_credentials_and_no_browser_headers_is_refused(
    answers_dir: AnswersDir, assets: Path, content_type: str | None
) -> None:
    """
    An older browser sends neither Sec-Fetch-Site nor Origin but still adds the Basic
    credentials it keeps: without the intent header, such a form post is refused, and
    the error says what to send.
    """
    client = installed_client(answers_dir, assets, admin_token=TOKEN)
    headers = {"Authorization": BASIC}
    if content_type is not None:
        headers["Content-Type"] = content_type
    code, report = client.json("POST", REARM, headers=headers, data=b"x=1")
    assert code == 403
    assert "X-PXE-Pilot-Request" in report["error"]
    assert state(client) is HostState.INSTALLED


ACCEPTED = [
    pytest.param({"Authorization": BEARER}, id="bearer-program"),
    pytest.param({"Authorization": BASIC, "X-PXE-Pilot-Request": "1"}, id="basic-with-header"),
    pytest.param(
        {"Authorization": BASIC, "Content-Type": "application/json"}, id="basic-with-json"
    ),
    pytest.param(
        {
            "Authorization": BASIC,
            "Sec-Fetch-Site": "same-origin",
            "Origin": "http://pxe.test",
            "X-PXE-Pilot-Request": "1",
        },
        id="own-page",
    ),
    pytest.param({"Authorization": BEARER, "Sec-Fetch-Site": "none"}, id="typed-address-bearer"),
    pytest.param(
        {"Authorization": BEARER, "Origin": "HTTP://PXE.TEST:80"}, id="own-origin-spelled-out"
    ),
]


@pytest.mark.parametrize("headers", ACCEPTED)
def test_the_operators_own_clients_rearm(
    answers_dir: AnswersDir, assets: Path, headers: dict[str, str]
) -> None:
    client = installed_client(answers_dir, assets, admin_token=TOKEN)
    code, report = client.json("POST", REARM, headers=headers)
    assert code == 200, report
    assert state(client) is HostState.NEW


def test_the_public_url_is_an_own_origin(answers_dir: AnswersDir, assets: Path) -> None:
    """
    Behind a proxy, the page is served from C{--public-url}: a request from it passes.
    """
    client = installed_client(
        answers_dir, assets, admin_token=TOKEN, public_url="https://pxe.example.com/"
    )
    headers = {
        "Authorization": BASIC,
        "Origin": "https://pxe.example.com",
        "X-PXE-Pilot-Request": "1",
    }
    code, _ = client.json("POST", REARM, headers=headers)
    assert code == 200
    assert state(client) is HostState.NEW


def test_an_open_pxe_pilot_still_takes_a_plain_post(answers_dir: AnswersDir, assets: Path) -> None:
    """
    Without an admin token and without a browser's headers (curl), re-arming works as
    documented: nothing says the request came from another site.
    """
    client = installed_client(answers_dir, assets)
    code, _ = client.json("POST", REARM)
    assert code == 200
    assert state(client) is HostState.NEW


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://pxe.test", "http://pxe.test"),
        ("http://PXE.test:80/", "http://pxe.test"),
        ("https://pxe.test:443/x", "https://pxe.test"),
        ("https://pxe.test:8443", "https://pxe.test:8443"),
        ("http://[fd00::1]:8080/", "http://[fd00::1]:8080"),
        ("ftp://pxe.test", None),
        ("null", None),
        ("http://pxe.test:99999", None),
        ("", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


def test_nothing_refuses_a_program() -> None:
    """
    A request with none of a browser's headers and no Basic credentials is never
    called forged, whatever its content type.
    """
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        assert (
            forged_because(
                fetch_site=None,
                origin=None,
                own_origins={"http://pxe.test"},
                basic=False,
                content_type=content_type,
                intent=False,
            )
            is None
        )
