"""
A host's page and the pages' actions, in memory: the timeline and the answer file's
findings, re-arming and forgetting through a confirmation page's form with its token,
what refuses a forged form, the status page's summary line and its refused state.
"""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogEvent

from pxepilot.events import TransferFinished
from pxepilot.hosts.ledger import HostLedger, run_here
from pxepilot.hosts.model import EventKind, HostState
from pxepilot.hosts.store import SQLiteHostStore
from pxepilot.http.forms import FormTokens
from pxepilot.http.operator import forged_because
from pxepilot.macs import MacAddress
from tests.conftest import MINIMAL_ANSWER, AnswersDir, events_with, fixture_bytes, result_of
from tests.test_boot_routes import publish
from tests.test_http import Client

MAC = MacAddress.parse("b0:7b:25:c1:0a:10")
OTHER = MacAddress.parse("52:54:00:00:00:99")
BASE = "http://pxe.test"
PAGE = f"{BASE}/hosts/{MAC.canonical}/page"
REARM = f"{BASE}/hosts/{MAC}/reinstall"
FORGET = f"{BASE}/hosts/{MAC}/forget"
TOKEN = "admin-0123456789abcdef"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# What a browser adds to a form posted from pxe-pilot's own page.
OWN_PAGE = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    path = tmp_path / "assets"
    path.mkdir()
    publish(path, "9.1-1")
    return path


@pytest.fixture
def client(answers_dir: AnswersDir, assets: Path) -> Client:
    answers_dir.write("default.toml")
    return Client(answers_dir, assets, admin_token=TOKEN)


def webhook(fqdn: str = "pve01.example.com") -> bytes:
    report = json.loads(fixture_bytes("post-install-webhook-9.1.json"))
    report["fqdn"] = fqdn
    return json.dumps(report).encode()


def install(client: Client, fqdn: str = "pve01.example.com") -> None:
    """
    A whole installation of L{MAC}: TFTP, menu, kernel, answer, webhook.
    """
    client.request("GET", f"{BASE}/menu.ipxe?mac={MAC}&platform=efi")
    client.pilot.events.publish(TransferFinished("127.0.0.1", "snponly.efi", "complete", 9, 0.1))
    client.request("GET", f"{BASE}/assets/proxmox-ve/9.1-1/vmlinuz")
    assert client.answer(fixture_bytes("installer-post-8.3-to-9.1.json"))[0] == 200
    assert client.request("POST", f"{BASE}/webhook", data=webhook(fqdn))[0] == 200


def page(client: Client, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    code, found, body = client.request("GET", url, headers=headers or BASIC)
    if code == 200:
        assert found["content-type"] == "text/html; charset=utf-8"
    return code, body.decode()


def text(html: str) -> str:
    """
    What a person reads of C{html}: its text, tags removed, entities resolved.
    """
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def form_token(html: str) -> str:
    found = re.search(r'<input type="hidden" name="token" value="([^"]+)">', html)
    assert found, "the confirmation page has no form token"
    return unescape(found.group(1))


def confirm(client: Client, url: str, headers: dict[str, str] | None = None) -> str:
    """
    Open the confirmation page at C{url}; the token of its form.
    """
    code, html = page(client, url, headers)
    assert code == 200, html
    assert f'<form method="post" action="{url.rsplit("/", 1)[1]}"' in html
    return form_token(html)


def post_form(
    client: Client, url: str, token: str | None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """
    What a browser sends when its user submits a confirmation page's form.
    """
    sent = {**BASIC, **FORM, **OWN_PAGE, **(headers or {})}
    body = f"token={token}".encode() if token is not None else b""
    return client.request("POST", url, headers=sent, data=body, allow_redirects=False)


def state(client: Client, mac: MacAddress = MAC) -> HostState | None:
    host = client.pilot.ledger.host(mac)
    return None if host is None else host.state


# -- the host's page


def test_the_page_shows_the_timeline_and_what_the_host_reported(client: Client) -> None:
    """
    Every event with its time and its source, the installer it booted, the answer file
    it matches and what it reported: serial, model, FQDN, address.
    """
    install(client)
    code, html = page(client, PAGE)
    assert code == 200
    shown = text(html)
    timeline = shown[shown.index("Timeline") :]
    for source in ("TFTP", "boot script", "download", "answer served", "webhook"):
        assert source in timeline
    assert timeline.index("webhook") < timeline.index("answer served") < timeline.index("TFTP")
    recorded = result_of(client.pilot.ledger.timeline(MAC))
    times = re.findall(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">', html)
    assert len(times) == len(recorded) == 6
    for fact in (
        "Installer proxmox-ve/9.1-1",
        "Serial 7XK2LM3",
        "Model PowerEdge R650",
        "Answer served default.toml",
        "FQDN pve01. example. com",
        "Address 192.0.2.21/24",
        "Matches now: default.toml , checked as installer 9.1.x would",
        "No findings",
    ):
        assert fact in shown.replace(".<wbr>", ". "), fact
    assert 'href="reinstall"' in html
    assert 'href="forget"' in html


def test_the_page_lists_the_findings_of_the_answer_file(
    client: Client, answers_dir: AnswersDir
) -> None:
    """
    What the host's installer would find in the file it matches now, with the line and
    the fix; a file that cannot be read says why.
    """
    install(client)
    answers_dir.host(
        f"{MAC.canonical}.toml",
        MINIMAL_ANSWER.replace(b'"UTC"', b'"Mars/Base"').replace(
            b"root-password", b"root_password"
        ),
    )
    shown = text(page(client, PAGE)[1])
    assert f"Matches now: hosts/{MAC.canonical}.toml" in shown
    assert "error line 6 global.timezone : 'Mars/Base' is not a time zone" in shown
    assert "warning line 7 global.root-password : 'root_password': snake_case" in shown
    answers_dir.host(f"{MAC.canonical}.toml", b"[global\n")
    assert f"hosts/{MAC.canonical}.toml : hosts/{MAC.canonical}.toml, line 1" in text(
        page(client, PAGE)[1]
    )


def test_unknown_hosts_and_bad_addresses(client: Client) -> None:
    """
    404 for a host never seen, 400 for what is not a MAC address; a browser reads them
    as a page with the way back, a program as JSON.
    """
    assert client.json("GET", f"{BASE}/hosts/{OTHER}/page", headers=BASIC)[0] == 404
    assert client.json("GET", f"{BASE}/hosts/nope/page", headers=BASIC)[0] == 400
    code, found, body = client.request(
        "GET",
        f"{BASE}/hosts/{OTHER}/page",
        headers={**BASIC, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )
    assert (code, found["content-type"]) == (404, "text/html; charset=utf-8")
    assert f"pxe-pilot has never seen {OTHER}" in text(body.decode())
    assert 'href="../../"' in body.decode()


def test_the_pages_need_the_admin_token(client: Client) -> None:
    """
    The host's page and the confirmation pages are the operator's: 401, asking a
    browser for the password, without the token.
    """
    install(client)
    for url in (PAGE, REARM, FORGET, f"{BASE}/"):
        code, found, _ = client.request("GET", url, headers={"Accept": "text/html"})
        assert code == 401
        assert found["www-authenticate"] == 'Bearer realm="pxe-pilot"'
        assert page(client, url, BEARER)[0] == 200


def test_pages_run_only_their_own_script(client: Client) -> None:
    """
    Each page names a fresh nonce in its policy and carries it on its one script and
    its one style; it is never shown in another site's frame and never cached.
    """
    install(client)
    nonces = set()
    for url in (f"{BASE}/", PAGE, REARM):
        _, found, body = client.request("GET", url, headers=BASIC)
        html = body.decode()
        policy = found["content-security-policy"]
        nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", policy)
        assert nonce, policy
        assert "frame-ancestors 'none'" in policy
        assert "default-src 'none'" in policy
        assert found["x-frame-options"] == "DENY"
        assert found["cache-control"] == "no-store"
        assert re.findall(r"<script[^>]*>", html) == [f'<script nonce="{nonce[1]}">']
        assert re.findall(r"<style[^>]*>", html) == [f'<style nonce="{nonce[1]}">']
        assert " style=" not in html
        nonces.add(nonce[1])
    assert len(nonces) == 3


# -- re-arming and forgetting through the confirmation pages


def test_a_confirmed_form_rearms(client: Client) -> None:
    """
    Without JavaScript: the re-arm link leads to a page that says what it does, whose
    form posts back with a token; the browser is sent to the host's page, which says
    it is done.
    """
    install(client)
    code, html = page(client, REARM)
    assert "wipes the disks" in text(html)
    code, found, _ = post_form(client, REARM, form_token(html))
    assert (code, found["location"]) == (303, "page?done=reinstall")
    assert state(client) is HostState.NEW
    assert f"Re-armed {MAC}." in text(page(client, f"{PAGE}?done=reinstall")[1])


def test_a_confirmed_form_forgets(client: Client, tmp_path: Path) -> None:
    """
    Forgetting removes the host from the ledger and the store; the browser is sent to
    the status page, which says so.
    """
    install(client)
    code, found, _ = post_form(client, FORGET, confirm(client, FORGET))
    assert (code, found["location"]) == (303, f"../../?forgot={MAC.canonical}")
    assert state(client) is None
    assert result_of(client.pilot.ledger.timeline(MAC)) == []
    store = SQLiteHostStore(tmp_path / "state" / "pxe-pilot.sqlite3")
    try:
        assert [host.mac for host in store.load()] == []
    finally:
        store.close()
    assert f"Forgot {MAC}." in text(page(client, f"{BASE}/?forgot={MAC.canonical}")[1])
    assert client.json("POST", FORGET, headers=BEARER)[0] == 404


def test_forgetting_over_the_api(client: Client, events: list[LogEvent]) -> None:
    """
    C{POST /hosts/{mac}/forget}: JSON for programs, as re-arming; an installing host
    may be forgotten, and the log says who did it and what state it was in.
    """
    client.request("GET", f"{BASE}/menu.ipxe?mac={MAC}")
    client.answer(fixture_bytes("installer-post-8.3-to-9.1.json"))
    assert state(client) is HostState.INSTALLING
    code, report = client.json("POST", FORGET, headers=BEARER)
    assert (code, report) == (200, {"mac": str(MAC), "forgotten": True})
    assert state(client) is None
    [logged] = [e for e in events if "forgotten by" in e.get("log_format", "")]
    assert (logged["mac"], logged["state"]) == (str(MAC), "installing")
    # The installer carries on; its report records the host again.
    assert client.request("POST", f"{BASE}/webhook", data=webhook())[0] == 200
    assert state(client) is HostState.INSTALLED


def test_the_script_rearms_with_its_header(client: Client) -> None:
    """
    With JavaScript the page's own fetch() sends the intent header instead of a token.
    """
    install(client)
    headers = {**BASIC, **OWN_PAGE, "X-PXE-Pilot-Request": "1", "Accept": "application/json"}
    code, report = client.json("POST", REARM, headers=headers)
    assert (code, report["state"]) == (200, "new")
    code, report = client.json("POST", FORGET, headers=headers)
    assert (code, report["forgotten"]) == (200, True)


def test_a_form_needs_its_own_token(client: Client, answers_dir: AnswersDir) -> None:
    """
    A form with Basic credentials and no intent header passes only with the token of
    the page for that action on that host: none, a made-up one, another action's or
    another host's is refused, and the host stays as it was.
    """
    install(client)
    client.request("GET", f"{BASE}/menu.ipxe?mac={OTHER}")
    other_host = confirm(client, f"{BASE}/hosts/{OTHER}/reinstall")
    forget_token = confirm(client, FORGET)
    rearm_token = confirm(client, REARM)
    for token in (None, "", "1.abc", rearm_token + "x", other_host, forget_token):
        code, _, body = post_form(client, REARM, token)
        assert code == 403, token
        assert "X-PXE-Pilot-Request" in json.loads(body)["error"]
    assert state(client) is HostState.INSTALLED
    assert post_form(client, REARM, rearm_token)[0] == 303
    assert state(client) is HostState.NEW


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Origin": "https://evil.example", "Sec-Fetch-Site": ""}, id="origin"),
        pytest.param({"Sec-Fetch-Site": "cross-site", "Origin": ""}, id="cross-site"),
        pytest.param({"Sec-Fetch-Site": "same-site", "Origin": ""}, id="same-site"),
    ],
)
def test_a_token_does_not_let_another_site_through(
    client: Client, headers: dict[str, str]
) -> None:
    """
    Even with a good token (one leaked, say), a form another site's page posts is
    refused on the browser's own word: its Origin or Sec-Fetch-Site.
    """
    install(client)
    token = confirm(client, REARM)
    sent = {name: value for name, value in {**OWN_PAGE, **headers}.items() if value}
    code, _, body = client.request(
        "POST",
        REARM,
        headers={**BASIC, **FORM, **sent},
        data=f"token={token}".encode(),
        allow_redirects=False,
    )
    assert code == 403
    assert "another" in json.loads(body)["error"]
    assert state(client) is HostState.INSTALLED


def test_a_token_is_bound_to_the_credential(answers_dir: AnswersDir, assets: Path) -> None:
    """
    A token issued to a browser that presented one admin token is worth nothing with
    another: a pxe-pilot restarted with a new token voids the forms shown before.
    """
    answers_dir.write("default.toml")
    first = Client(answers_dir, assets, admin_token=TOKEN)
    first.request("GET", f"{BASE}/menu.ipxe?mac={MAC}")
    forms = FormTokens()
    now = first.pilot.ledger.now()
    token = forms.issue("reinstall", MAC, TOKEN, now)
    assert forms.valid(token, "reinstall", MAC, TOKEN, now + 60)
    assert not forms.valid(token, "reinstall", MAC, "another-0123456789abcdef", now)
    assert not forms.valid(token, "reinstall", MAC, None, now)
    assert not forms.valid(token, "reinstall", MAC, TOKEN, now + forms.lifetime + 1)
    assert not forms.valid(token, "reinstall", MAC, TOKEN, now - 3600)
    assert not FormTokens().valid(token, "reinstall", MAC, TOKEN, now)
    for broken in ("", ".", "x.y", f"{int(now)}.", f"{'9' * 40}.abc", f"{int(now)}.é"):
        assert not forms.valid(broken, "reinstall", MAC, TOKEN, now)


def test_forged_because_takes_a_form_token_for_the_intent_header() -> None:
    """
    A valid form token answers rule 3 (a Basic form post), never rules 1 and 2.
    """
    common: dict[str, Any] = {
        "own_origins": {"http://pxe.test"},
        "basic": True,
        "content_type": "application/x-www-form-urlencoded",
        "intent": False,
    }
    assert forged_because(fetch_site=None, origin=None, **common) is not None
    assert forged_because(fetch_site=None, origin=None, form_token=True, **common) is None
    assert forged_because(fetch_site="same-origin", origin=BASE, form_token=True, **common) is None
    assert forged_because(fetch_site="cross-site", origin=None, form_token=True, **common)
    assert forged_because(
        fetch_site=None, origin="https://evil.example", form_token=True, **common
    )


def test_an_open_pxe_pilot_takes_a_confirmed_form(answers_dir: AnswersDir, assets: Path) -> None:
    """
    Without an admin token there are no Basic credentials to abuse: the form works,
    and the browser's headers are still checked.
    """
    answers_dir.write("default.toml")
    client = Client(answers_dir, assets)
    install(client)
    token = confirm(client, REARM, headers={})
    sent = {**FORM, **OWN_PAGE}
    code, _, _ = client.request(
        "POST", REARM, headers=sent, data=f"token={token}".encode(), allow_redirects=False
    )
    assert code == 303
    assert state(client) is HostState.NEW


# -- the status page


def test_a_refused_answer_is_an_error_state(client: Client, answers_dir: AnswersDir) -> None:
    """
    A host whose installer was refused its answer shows that, and why, on the status
    page and its own, rather than the state it was left in.
    """
    (answers_dir.root / "default.toml").unlink()
    client.request("GET", f"{BASE}/menu.ipxe?mac={MAC}")
    assert client.answer(fixture_bytes("installer-post-8.3-to-9.1.json"))[0] == 404
    html = page(client, f"{BASE}/")[1]
    row = re.search(rf'<tr id="host-{MAC.canonical}">.*?</tr>', html)
    assert row, html
    assert "state-refused" in row[0]
    assert "answer refused no answer file" in text(row[0])
    assert "state-new" not in row[0] and "state-local-boot" not in row[0]
    counts = re.search(r'<ul class="counts">.*?</ul>', html)
    assert counts and text(counts[0]) == "answer refused: 1"
    shown = text(page(client, PAGE)[1])
    assert "The last answer request was refused: no answer file." in shown
    assert "no host file for these MAC addresses and no default.toml" in shown


def test_the_status_page_links_each_host(client: Client) -> None:
    install(client)
    html = page(client, f"{BASE}/")[1]
    assert f'<a href="hosts/{MAC.canonical}/page">{MAC}</a>' in html


def test_a_long_fqdn_wraps_after_its_dots(client: Client) -> None:
    """
    The page marks where an FQDN may wrap: after each dot, so that no label is cut.
    """
    fqdn = "pve-node-042.rack-17.frankfurt-datacenter-2.example.com"
    install(client, fqdn)
    for url in (f"{BASE}/", PAGE):
        html = page(client, url)[1]
        assert (
            '<span class="fqdn">pve-node-042.<wbr>rack-17.<wbr>frankfurt-datacenter-2.<wbr>'
            "example.<wbr>com</span>"
        ) in html


def overview(client: Client) -> str:
    """
    The text of the status page's summary line.
    """
    found = re.search(r'<ul class="overview".*?</ul>', page(client, f"{BASE}/")[1])
    assert found, "the status page has no summary line"
    return text(found[0])


def test_the_summary_line_shows_health_and_configuration(
    client: Client, answers_dir: AnswersDir, assets: Path
) -> None:
    """
    The answers and assets directories with how they are, TFTP and proxyDHCP, and the
    HTTPS certificate's fingerprint; a component that is not well says why.
    """
    shown = overview(client)
    fingerprint = client.pilot.fingerprint
    assert fingerprint is not None
    for part in (
        "Health ok",
        f"Answers {answers_dir.root} ok",
        f"Assets {assets} ok proxmox-ve/9.1-1",
        "TFTP disabled",
        "proxyDHCP disabled",
        f"TLS ok SHA-256 {fingerprint}",
    ):
        assert part in shown, (part, shown)
    answers_dir.host("nonsense.toml", b"[x]\n")
    answers_dir.write("default.toml", b"[broken\n")
    shown = overview(client)
    assert "Health degraded" in shown
    assert f"Answers {answers_dir.root} degraded" in shown
    assert "default.toml" in shown[shown.index("Answers") : shown.index("Assets")]


def test_the_summary_line_names_no_tls_without_https(
    answers_dir: AnswersDir, assets: Path
) -> None:
    answers_dir.write("default.toml")
    client = Client(answers_dir, assets, https_port=0)
    shown = text(page(client, f"{BASE}/", {})[1])
    assert "TLS disabled" in shown
    assert "SHA-256" not in shown


def test_rearming_is_logged_and_recorded(client: Client, events: list[LogEvent]) -> None:
    install(client)
    post_form(client, REARM, confirm(client, REARM))
    assert events_with(events, mac=str(MAC), event=EventKind.REARMED.value)


# -- the ledger


def test_the_ledger_forgets_any_host_once_removed(tmp_path: Path) -> None:
    """
    C{HostLedger.forget}: a host only seen or one installed, from memory and from the
    store, firing with the host as it was; a host it does not know fails with KeyError;
    a forgotten sighting is no longer due to expire.
    """
    store = SQLiteHostStore(tmp_path / "hosts.sqlite3")
    now = [1_700_000_000.0]
    ledger = HostLedger(store, Clock(), run_here, wall_clock=lambda: now[0], host_expiry=60)
    try:
        result_of(ledger.record(MAC, EventKind.SCRIPT, "menu"))
        result_of(ledger.record(OTHER, EventKind.INSTALLED, "installed"))
        seen = result_of(ledger.forget(MAC))
        assert (seen.mac, seen.state) == (MAC, HostState.BOOTING)
        installed = result_of(ledger.forget(OTHER))
        assert installed.state is HostState.INSTALLED
        assert ledger.hosts == {}
        assert [host.mac for host in store.load()] == []
        failure = ledger.forget(MAC)
        with pytest.raises(KeyError):
            result_of(failure)
        now[0] += 3600
        ledger.forget_expired()
        assert ledger.forgotten["expired"] == 0
    finally:
        store.close()
