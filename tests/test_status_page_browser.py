"""
The status page as a person sees it: real C{twistd pxe-pilot}, real headless Chromium,
on a desk and on a phone.

Set C{PXE_PILOT_SCREENSHOTS} to a directory to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from pxepilot.application import STATE_DATABASE
from pxepilot.hosts.ledger import HostLedger, run_here
from pxepilot.hosts.model import EventKind, Installation
from pxepilot.hosts.page import POLL_SECONDS, REFRESH_SECONDS
from pxepilot.hosts.store import SQLiteHostStore
from pxepilot.macs import MacAddress
from tests.browser import CHROMIUM, Browser
from tests.conftest import AnswersDir, result_of
from tests.twistd_process import TwistdProcess

pytestmark = pytest.mark.e2e

INSTALLED = MacAddress.parse("52:54:00:00:00:01")
INSTALLING = MacAddress.parse("52:54:00:00:00:02")
FAILED = MacAddress.parse("52:54:00:00:00:03")
BOOTING = MacAddress.parse("52:54:00:00:00:04")
HOSTILE = MacAddress.parse("52:54:00:00:00:05")
STATES = {
    INSTALLED: "installed",
    INSTALLING: "installing",
    FAILED: "failed",
    BOOTING: "booting",
    HOSTILE: "installed",
}

# Markup a machine could send: the page must show it as text and never run it.
SCRIPT_IN_SUMMARY = "<script>alert(1)</script>"
SCRIPT_IN_FQDN = '<script>window.__xss = "fqdn"</script>.example.com'
IMAGE_IN_ANSWER = "<img src=x onerror=\"window.__xss = 'answer'\">"
# An executed alert() would block the page behind a dialog; this makes it a mark instead.
CATCH_ALERTS = "window.alert = () => { window.__xss = 'alert'; };"

# Every element the page itself puts in its body: anything else was injected.
PAGE_ELEMENTS = {
    "header", "h1", "ul", "li", "span", "table", "thead", "tbody", "tr", "th", "td", "footer",
    "p", "div", "a", "code", "wbr", "script",
}  # fmt: skip

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Screen:
    name: str
    width: int
    height: int
    mobile: bool


DESKTOP = Screen("desktop", 1280, 800, mobile=False)
PHONE = Screen("phone", 390, 844, mobile=True)


def record_hosts(state_dir: Path) -> None:
    """
    Save hosts in every state worth seeing into the state database, as the running
    service would have.
    """
    store = SQLiteHostStore(state_dir / STATE_DATABASE)
    ledger = HostLedger(store, Clock(), run_here)

    def record(mac: MacAddress, kind: EventKind, summary: str, **detail: Any) -> None:
        result_of(ledger.record(mac, kind, summary, **detail))

    try:
        record(INSTALLED, EventKind.SCRIPT, "boot.ipxe fetched", script="boot.ipxe")
        record(
            INSTALLED,
            EventKind.ANSWER_SERVED,
            "answer hosts/52-54-00-00-00-01.toml served",
            file="hosts/52-54-00-00-00-01.toml",
            product="pve",
        )
        installation = Installation(
            fqdn="pve01.example.com", address="192.0.2.11", product="pve", version="9.1.1"
        )
        record(
            INSTALLED,
            EventKind.INSTALLED,
            "installation reported",
            installation=installation.as_json(),
        )
        record(
            INSTALLING,
            EventKind.ANSWER_SERVED,
            "answer default.toml served",
            file="default.toml",
            product="pve",
        )
        record(FAILED, EventKind.ANSWER_SERVED, "answer default.toml served", file="default.toml")
        record(
            FAILED,
            EventKind.FAILED,
            "no installation report within 60 min of the answer",
            reason="timeout",
        )
        record(BOOTING, EventKind.TFTP, "ipxe.efi sent", file="ipxe.efi", outcome="complete")
        record(HOSTILE, EventKind.ANSWER_SERVED, "answer served", file=IMAGE_IN_ANSWER)
        record(
            HOSTILE,
            EventKind.INSTALLED,
            SCRIPT_IN_SUMMARY,
            installation=Installation(fqdn=SCRIPT_IN_FQDN, address="192.0.2.66").as_json(),
        )
    finally:
        store.close()


@contextmanager
def pxe_pilot(root: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """
    C{twistd pxe-pilot} on 127.0.0.1 with its directories under C{root}; its HTTP port.
    """
    answers = AnswersDir(root / "answers")
    answers.write("default.toml")
    (root / "assets").mkdir()
    process = TwistdProcess(
        [
            *("--answers", str(answers.root)),
            *("--assets", str(root / "assets")),
            *("--port", "0", "--interface", "127.0.0.1"),
            *args,
        ],
        env=env,
    )
    try:
        yield process.http_port()
    finally:
        # twistd ends by re-raising the signal that stopped it.
        assert process.stop() in (0, -15), process.text


@pytest.fixture(scope="module")
def status_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("pxe-pilot")
    record_hosts(root / "state")
    with pxe_pilot(root, "--state", str(root / "state")) as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} comes with Debian's chromium package (.ci/run installs it)")
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as started:
        yield started


@dataclass(frozen=True)
class Sight:
    """
    What the page shows, measured in the browser.
    """

    title: str
    text: str
    refresh: str | None
    poll: str | None
    scripts: list[str]
    elements: list[str]
    xss: str | None
    viewport_width: int
    page_width: int
    header_display: str | None
    row_texts: dict[str, str]
    row_displays: list[str]
    row_widths: list[float]
    broken_labels: list[str]


LOOK = """(() => {
  const thead = document.querySelector("thead");
  const rows = [...document.querySelectorAll("tbody tr")];
  // The lines an element's text takes: the rows its text's boxes sit on (a link's own
  // box around its text sits on the same row).
  const lines = (element) => {
    const tops = new Set();
    const texts = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    while (texts.nextNode()) {
      const range = document.createRange();
      range.selectNodeContents(texts.currentNode);
      for (const rect of range.getClientRects()) tops.add(Math.round(rect.top));
    }
    return tops.size;
  };
  const labels = document.querySelectorAll('th, td.mac, td[data-label="Address"]');
  return {
    title: document.title,
    text: document.body.innerText,
    // With JavaScript on, a <noscript> in the head is text, not a meta element.
    refresh: document.querySelector('meta[http-equiv="refresh"]')?.content ??
      document.querySelector("noscript")?.textContent.match(/content="(\\d+)"/)?.[1] ?? null,
    poll: document.body.dataset.poll ?? null,
    scripts: [...document.scripts].map(script => script.nonce ? "nonced" : "bare"),
    elements: [...new Set([...document.body.querySelectorAll("*")].map(e => e.localName))],
    xss: window.__xss ?? null,
    viewport_width: window.innerWidth,
    page_width: document.documentElement.scrollWidth,
    header_display: thead ? getComputedStyle(thead).display : null,
    row_texts: Object.fromEntries(rows.map(row => [row.id, row.innerText])),
    row_displays: rows.map(row => getComputedStyle(row).display),
    row_widths: rows.map(row => row.getBoundingClientRect().width),
    broken_labels: [...labels].filter(label => lines(label) > 1).map(label => label.innerText),
  };
})()"""


def look(browser: Browser, url: str, screen: Screen, screenshot: Path | None = None) -> Sight:
    """
    Open C{url} on C{screen} and measure what it shows; photograph it to C{screenshot}
    (copied to C{$PXE_PILOT_SCREENSHOTS} as well when that is set).
    """
    page = browser.open(url, screen.width, screen.height, screen.mobile, before_load=CATCH_ALERTS)
    try:
        sight = Sight(**page.evaluate(LOOK))
        if screenshot is not None:
            page.screenshot(screenshot)
    finally:
        page.close()
    keep = os.environ.get("PXE_PILOT_SCREENSHOTS")
    if keep and screenshot is not None:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / screenshot.name)
    return sight


def png_size(path: Path) -> tuple[int, int]:
    """
    The width and height of a PNG image, from its header chunk.
    """
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG image"
    assert data[12:16] == b"IHDR", f"{path} does not start with its header chunk"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("screen", [DESKTOP, PHONE], ids=lambda screen: screen.name)
def test_every_host_is_shown(
    browser: Browser, status_url: str, screen: Screen, tmp_path: Path
) -> None:
    """
    On any screen, a person reads every host with its state, and where an installed
    one is now; the page refreshes itself; the screenshot is the screen's size.
    """
    screenshot = tmp_path / f"status-{screen.name}.png"
    sight = look(browser, status_url, screen, screenshot)

    assert sight.title == f"pxe-pilot: {len(STATES)} hosts"
    assert len(sight.row_texts) == len(STATES)
    for mac, state in STATES.items():
        row = sight.row_texts[f"host-{mac.canonical}"]
        assert str(mac) in row
        assert state in row.split(), row
    installed = sight.row_texts[f"host-{INSTALLED.canonical}"]
    for shown in ("pve01.example.com", "192.0.2.11", "pve 9.1.1"):
        assert shown in installed
    assert sight.refresh == str(REFRESH_SECONDS)
    assert sight.poll == str(POLL_SECONDS)
    assert sight.viewport_width == screen.width
    assert sight.page_width <= screen.width, "the page scrolls sideways"
    assert png_size(screenshot) == (screen.width, screen.height)


@pytest.mark.parametrize("screen", [DESKTOP, PHONE], ids=lambda screen: screen.name)
def test_markup_from_machines_is_shown_as_text(
    browser: Browser, status_url: str, screen: Screen
) -> None:
    """
    Summaries, answer file names and FQDNs come from machines: they appear as written,
    and no script or element of theirs reaches the page.
    """
    sight = look(browser, status_url, screen)

    assert SCRIPT_IN_SUMMARY in sight.text
    assert SCRIPT_IN_FQDN in sight.text
    assert IMAGE_IN_ANSWER in sight.text
    assert sight.xss is None
    assert sight.scripts == ["nonced"]
    assert set(sight.elements) <= PAGE_ELEMENTS


def test_desktop_shows_a_table(browser: Browser, status_url: str) -> None:
    sight = look(browser, status_url, DESKTOP)

    assert sight.header_display == "table-header-group"
    assert sight.row_displays == ["table-row"] * len(STATES)
    assert "LAST EVENT" in sight.text
    # Long values from machines must not squeeze the columns until headers, MACs and
    # addresses break mid-word.
    assert sight.broken_labels == []


def test_phone_shows_a_card_for_each_host(browser: Browser, status_url: str) -> None:
    sight = look(browser, status_url, PHONE)

    assert sight.header_display == "none"
    assert "LAST EVENT" not in sight.text
    assert sight.row_displays == ["block"] * len(STATES)
    assert all(width <= PHONE.width for width in sight.row_widths)


def test_admin_token_guards_the_page(tmp_path: Path) -> None:
    token = "status-page-admin-token"
    with pxe_pilot(tmp_path, env={"PXE_PILOT_ADMIN_TOKEN": token}) as port:
        url = f"http://127.0.0.1:{port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        assert "Bearer" in refused.value.headers["www-authenticate"]

        with_token = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(with_token, timeout=10) as response:  # noqa: S310 - http only
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/html")
