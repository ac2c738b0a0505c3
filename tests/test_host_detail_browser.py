"""
A host's page and the pages' actions as a person uses them: real C{twistd pxe-pilot}
with an admin token, real headless Chromium holding it as Basic credentials, with
JavaScript and without, on a desk and on a phone.

Set C{PXE_PILOT_SCREENSHOTS} to a directory to keep the screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pxepilot.application import STATE_DATABASE
from pxepilot.hosts.ledger import HostLedger, run_here
from pxepilot.hosts.model import EventKind, Installation
from pxepilot.hosts.page import POLL_SECONDS
from pxepilot.hosts.store import SQLiteHostStore
from pxepilot.macs import MacAddress
from tests.browser import CHROMIUM, Browser, Page
from tests.conftest import MINIMAL_ANSWER, AnswersDir, fixture_bytes, result_of
from tests.test_status_page_browser import DESKTOP, PHONE, Screen, png_size, pxe_pilot

pytestmark = pytest.mark.e2e

TOKEN = "browser-admin-0123456789abcdef"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"operator:{TOKEN}".encode()).decode()}

# Hosts recorded before pxe-pilot starts, each for one test that changes it.
SHOWN = MacAddress.parse("52:54:00:00:01:01")
REARMED_WITH_SCRIPT = MacAddress.parse("52:54:00:00:01:02")
REARMED_WITH_FORM = MacAddress.parse("52:54:00:00:01:03")
FORGOTTEN = MacAddress.parse("52:54:00:00:01:04")
REFUSED = MacAddress.parse("52:54:00:00:01:05")
# The machine of the installer request fixture, which boots while a page is open.
BOOTING = MacAddress.parse("b0:7b:25:c1:0a:10")

LONG_FQDN = "pve-node-042.rack-17.frankfurt-datacenter-2.infrastructure.example.com"
SERIAL = "CZ-7XK2LM3"

# The host file of SHOWN: a time zone the installer rejects, on line 6.
FINDING = MINIMAL_ANSWER.replace(b'"UTC"', b'"Mars/Base"')


def record_hosts(state_dir: Path) -> None:
    """
    Save hosts into the state database as the running service would have: installed
    ones with a whole timeline, and one whose answer was refused.
    """
    store = SQLiteHostStore(state_dir / STATE_DATABASE)
    ledger = HostLedger(store, Clock(), run_here)

    def record(mac: MacAddress, kind: EventKind, summary: str, **detail: Any) -> None:
        result_of(ledger.record(mac, kind, summary, **detail))

    try:
        for mac in (SHOWN, REARMED_WITH_SCRIPT, REARMED_WITH_FORM, FORGOTTEN):
            record(mac, EventKind.TFTP, "TFTP snponly.efi: complete", file="snponly.efi")
            record(mac, EventKind.SCRIPT, "menu: proxmox-ve/9.1-1", script="menu.ipxe")
            record(
                mac,
                EventKind.DOWNLOAD_ENDED,
                "download of proxmox-ve/9.1-1/vmlinuz completed",
                file="proxmox-ve/9.1-1/vmlinuz",
                complete=True,
            )
            record(
                mac,
                EventKind.ANSWER_SERVED,
                f"answer hosts/{mac.canonical}.toml served",
                file=f"hosts/{mac.canonical}.toml",
                serial=SERIAL,
                product="pve",
            )
            installation = Installation(
                fqdn=LONG_FQDN, address="192.0.2.11/24", product="pve", version="9.1.1"
            )
            record(mac, EventKind.INSTALLED, "installed", installation=installation.as_json())
        record(REFUSED, EventKind.SCRIPT, "menu: proxmox-ve/9.1-1", script="menu.ipxe")
        record(
            REFUSED,
            EventKind.ANSWER_REFUSED,
            "no answer file",
            code=404,
            reason="no host file for these MAC addresses and no default.toml",
        )
    finally:
        store.close()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("pxe-pilot")
    record_hosts(root / "state")
    AnswersDir(root / "answers").host(f"{SHOWN.canonical}.toml", FINDING)
    with pxe_pilot(
        root, "--state", str(root / "state"), env={"PXE_PILOT_ADMIN_TOKEN": TOKEN}
    ) as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} comes with Debian's chromium package (.ci/run installs it)")
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as started:
        yield started


def host_url(base_url: str, mac: MacAddress) -> str:
    return f"{base_url}hosts/{mac.canonical}/page"


def server_state(base_url: str, mac: MacAddress) -> str | None:
    """
    The host's state as pxe-pilot's JSON says it; L{None} for a host it does not know.
    """
    request = urllib.request.Request(  # noqa: S310 - http only
        f"{base_url}hosts/{mac}/status", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
            state: str = json.load(response)["state"]
            return state
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def machine_request(url: str, body: bytes | None = None) -> None:
    """
    What a booting machine sends: no token, as machines have none.
    """
    request = urllib.request.Request(url, data=body)  # noqa: S310 - http only
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
        assert response.status == 200


def open_page(
    browser: Browser, url: str, screen: Screen = DESKTOP, javascript: bool = True
) -> Page:
    """
    A tab showing C{url} with the admin token as the Basic credentials a person typed.
    """
    return browser.open(
        url, screen.width, screen.height, screen.mobile, javascript=javascript, headers=BASIC
    )


def keep(screenshot: Path) -> None:
    directory = os.environ.get("PXE_PILOT_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(directory) / screenshot.name)


# Where a host name's lines break: the character before each break.
WRAPS = """((selector) => {
  const breaks = [];
  let top = null;
  let previous = "";
  for (const element of document.querySelectorAll(selector)) {
    const texts = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    while (texts.nextNode()) {
      const node = texts.currentNode;
      for (let i = 0; i < node.length; i++) {
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const rect = range.getClientRects()[0];
        if (!rect) continue;
        if (top !== null && rect.top > top + 2) breaks.push(previous);
        top = rect.top;
        previous = node.data[i];
      }
    }
    top = null;
  }
  return breaks;
})"""


def wraps(page: Page, selector: str) -> list[str]:
    breaks: list[str] = page.evaluate(f"{WRAPS}({json.dumps(selector)})")
    return breaks


@pytest.mark.parametrize("screen", [DESKTOP, PHONE], ids=lambda screen: screen.name)
def test_the_host_page_shows_its_timeline_and_findings(
    browser: Browser, base_url: str, screen: Screen, tmp_path: Path
) -> None:
    """
    On any screen: the host's facts, every event with its time and source, the
    findings of its answer file; nothing scrolls sideways, the FQDN wraps only after
    its dots and hyphens; the screenshot is the screen's size.
    """
    page = open_page(browser, host_url(base_url, SHOWN), screen)
    try:
        text: str = page.evaluate("document.body.innerText")
        timeline = text[text.index("Timeline") :]
        for source in ("TFTP", "boot script", "download", "answer served", "webhook"):
            assert source in timeline, source
        assert page.evaluate("document.querySelectorAll('ol.timeline time').length") == 5
        for fact in (SERIAL, "proxmox-ve/9.1-1", "192.0.2.11/24", "pve 9.1.1"):
            assert fact in text, fact
        findings = text[text.index("Answer file") : text.index("Timeline")]
        assert f"hosts/{SHOWN.canonical}.toml" in findings
        assert "error line 6 global.timezone: 'Mars/Base' is not a time zone" in findings
        assert page.evaluate("document.documentElement.scrollWidth") <= screen.width
        assert all(character in ".-" for character in wraps(page, ".fqdn"))
        screenshot = page.screenshot(tmp_path / f"host-{screen.name}.png")
    finally:
        page.close()
    keep(screenshot)
    assert png_size(screenshot) == (screen.width, screen.height)
    assert screenshot.stat().st_size > 10_000


@pytest.mark.parametrize("screen", [DESKTOP, PHONE], ids=lambda screen: screen.name)
def test_the_status_page_with_a_refused_answer_and_a_long_fqdn(
    browser: Browser, base_url: str, screen: Screen, tmp_path: Path
) -> None:
    """
    A refused answer reads as an error with its reason, not as "new"; the summary line
    names the answers and assets directories, TFTP and proxyDHCP; long FQDNs wrap at
    their dots, and on a phone they must.
    """
    page = open_page(browser, base_url, screen)
    try:
        row: str = page.evaluate(f"document.getElementById('host-{REFUSED.canonical}').innerText")
        assert "answer refused" in row
        assert "no answer file" in row
        assert "new" not in row.split()
        summary: str = page.evaluate("document.querySelector('.overview').innerText")
        for part in ("Health", "Answers", "Assets", "TFTP disabled", "proxyDHCP disabled"):
            assert part in summary, (part, summary)
        assert page.evaluate("document.documentElement.scrollWidth") <= screen.width
        breaks = wraps(page, f"#host-{SHOWN.canonical} .fqdn")
        assert all(character in ".-" for character in breaks), breaks
        if screen is PHONE:
            assert breaks, "the FQDN fits on one line of a phone: make it longer"
        screenshot = page.screenshot(tmp_path / f"status-{screen.name}.png")
    finally:
        page.close()
    keep(screenshot)
    assert png_size(screenshot) == (screen.width, screen.height)


def test_rearm_with_javascript(browser: Browser, base_url: str) -> None:
    """
    The re-arm link asks first; on OK the page's script re-arms the host with a
    request of its own and shows it, without loading the page again. Cancel does
    nothing.
    """
    page = open_page(browser, host_url(base_url, REARMED_WITH_SCRIPT))
    try:
        page.evaluate("window.__same_page = true")
        page.evaluate("void setTimeout(() => document.getElementById('reinstall').click(), 0)")
        assert "wipes the disks" in page.answer_dialog(accept=False)
        assert server_state(base_url, REARMED_WITH_SCRIPT) == "installed"

        page.evaluate("void setTimeout(() => document.getElementById('reinstall').click(), 0)")
        question = page.answer_dialog(accept=True)
        assert question.startswith(f"Re-arm {REARMED_WITH_SCRIPT}?")
        page.wait_until(
            f"document.getElementById('notice').innerText === 'Re-armed {REARMED_WITH_SCRIPT}.'"
        )
        page.wait_until("document.querySelector('header .state').innerText === 'new'")
        assert page.evaluate("window.__same_page") is True
    finally:
        page.close()
    assert server_state(base_url, REARMED_WITH_SCRIPT) == "new"


def test_rearm_without_javascript(browser: Browser, base_url: str) -> None:
    """
    With JavaScript off, the re-arm link leads to a confirmation page whose form does
    it (with its token, the browser holding Basic credentials), and back to the host's
    page, which says so. The page reloads itself with a meta refresh instead.
    """
    page = open_page(browser, host_url(base_url, REARMED_WITH_FORM), javascript=False)
    try:
        refresh = page.evaluate("document.querySelector('meta[http-equiv=refresh]')?.content")
        assert refresh == "10"
        page.forget_loads()
        page.evaluate("document.getElementById('reinstall').click(), 1")
        page.wait_for_load()
        assert page.evaluate("location.pathname").endswith("/reinstall")
        assert "wipes the disks" in page.evaluate("document.body.innerText")
        assert server_state(base_url, REARMED_WITH_FORM) == "installed"
        page.forget_loads()
        page.evaluate("document.getElementById('confirm').click(), 1")
        page.wait_for_load()
        assert page.evaluate("location.pathname").endswith("/page")
        assert page.evaluate("document.getElementById('notice').innerText") == (
            f"Re-armed {REARMED_WITH_FORM}."
        )
        assert page.evaluate("document.querySelector('header .state').innerText") == "new"
    finally:
        page.close()
    assert server_state(base_url, REARMED_WITH_FORM) == "new"


def test_forget_with_javascript(browser: Browser, base_url: str) -> None:
    """
    Forgetting asks first, then leads to the status page, which says it is done and no
    longer lists the host.
    """
    page = open_page(browser, host_url(base_url, FORGOTTEN))
    try:
        page.forget_loads()
        page.evaluate("void setTimeout(() => document.getElementById('forget').click(), 0)")
        assert page.answer_dialog(accept=True).startswith(f"Forget {FORGOTTEN}?")
        page.wait_for_load()
        assert page.evaluate("location.pathname") == "/"
        assert page.evaluate("document.getElementById('notice').innerText") == (
            f"Forgot {FORGOTTEN}."
        )
        assert page.evaluate(f"document.getElementById('host-{FORGOTTEN.canonical}')") is None
    finally:
        page.close()
    assert server_state(base_url, FORGOTTEN) is None


def test_the_pages_follow_an_installation_without_a_reload(
    browser: Browser, base_url: str
) -> None:
    """
    While a machine boots and installs, the status page and its own page show each
    step within a few seconds, without loading the page again.
    """
    status = open_page(browser, base_url)
    try:
        status.evaluate("window.__same_page = true")
        row = f"document.getElementById('host-{BOOTING.canonical}')"
        machine_request(f"{base_url}menu.ipxe?mac={BOOTING}")
        # No assets here: its menu boots the local disk, and the row says so.
        status.wait_until(f"{row}?.querySelector('.state').innerText === 'local-boot'")
        machine_request(f"{base_url}answer", fixture_bytes("installer-post-8.3-to-9.1.json"))
        status.wait_until(
            f"{row}.querySelector('.state').innerText === 'installing'", POLL_SECONDS * 3
        )
        assert status.evaluate("window.__same_page") is True
    finally:
        status.close()
    detail = open_page(browser, host_url(base_url, BOOTING))
    try:
        detail.evaluate("window.__same_page = true")
        machine_request(f"{base_url}webhook", fixture_bytes("post-install-webhook-9.1.json"))
        detail.wait_until(
            "document.querySelector('header .state').innerText === 'installed'", POLL_SECONDS * 3
        )
        assert "webhook" in detail.evaluate("document.querySelector('ol.timeline li').innerText")
        assert detail.evaluate("window.__same_page") is True
    finally:
        detail.close()
